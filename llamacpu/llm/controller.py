"""The language-model controller (layer 8 of docs/architecture.md): an HF causal LM plus small heads.

The controller is the machine's CPU in two phases, both on one language model:

- **Plan** (compile). The LM reads ``<bos> prompt <plan>`` and then emits the program's slots
  2..P−1 one at a time (slots 0 and 1 are the IN/OUT ports, which the loader fills). Each
  emitted slot goes back into the LM as ONE continuous input embedding (:class:`SlotEncoder`),
  not as text, and a :class:`SlotHead` on every position predicts the next slot's fields:
  stop-or-slot, kind, op, a mode per address field, an address per field, and the value.
  An address is predicted *as attention*: a query per field is scored against the address
  keys of the candidate slots 0..max_slots−1 (the same keys memory uses), so a pointer is a
  distribution over slots, never a regression onto a key vector.
- **Execute** (sequence). The LM reads ``<bos> prompt <exec>`` once (:class:`PromptCache`);
  at every machine step the current machine state (:class:`StepView`: the fetched
  instruction's op and modes, its operand values, the carry, the ALU's condition flag)
  enters as one continuous embedding appended to the prompt's KV cache at a FIXED position
  id (the prompt length). The step is computed from a copy of the cache, so the cache never
  grows and a step depends only on the prompt and the current state (a Markov controller):
  a program may run far longer than anything seen in training. ``absolute_positions=True``
  (an ablation) gives the state token the position ``prompt length + step index`` instead.
  The step head decides the step: is the jump taken, does the write happen, halt?
  :class:`~llamacpu.llm.sequencer.ControllerSequencer` plugs this into
  ``llamacpu.machine.machine.Machine`` as its ``Sequencer``;
  :func:`~llamacpu.llm.supervision.trace_to_steps` turns reference runs into supervision.

Training: :meth:`Controller.plan_loss` (teacher-forced slots), :meth:`Controller.plan_soft`
(a differentiable program for the answer loss through the soft machine, with scheduled
sampling) and :meth:`Controller.step_loss` (all steps of a batch of runs in one forward).
The tiny default is fastest on one CPU thread (``torch.set_num_threads(1)``).

Any ``AutoModelForCausalLM`` works: the controller only uses ``get_input_embeddings()``,
``inputs_embeds``, ``output_hidden_states=True`` and a ``DynamicCache`` (passed as
``cache`` or ``past_key_values``, whichever the installed transformers names it:
:func:`llamacpu.llm.models.call_lm`), and its heads attach by hidden size
(``config.get_text_config().hidden_size``). Which LM (:func:`llamacpu.llm.models.build_lm`)
and how a prompt reaches it: :mod:`llamacpu.llm.prompts`.

Shape letters::

    B  batch                         S  prompt tokens (left-padded)
    Q  slot embeddings fed to the LM  P  program slots (ports included)
    H  LM hidden size                D  slot width (SlotLayout.width)
    A  address key width (2 L)       N  candidate addresses (max_slots)
    K  slot kinds                    O  opcodes
    M  operand modes                 F  address fields per slot (4)
    V  alphabet size                 Vc carry digits (the alphabet's base)
    T  execution steps               L  LM layers (in PromptCache.kv)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F_nn
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel

from llamacpu.core.isa import EMPTY_SLOT, N_PORTS, Kind, Mode, Op, Program, Slot
from llamacpu.llm.channel import MetaTokens, PromptLookup, WeightHead
from llamacpu.llm.compile_head import CompileHead
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.heads import (
    PlanMetrics,
    PromptCache,
    SlotEncoder,
    SlotHead,
    SlotLogits,
    StateEncoder,
    StepLogits,
    StepMetrics,
    StepView,
)
from llamacpu.llm.models import build_lm, call_lm
from llamacpu.llm.prompts import ChatPrompts, SymbolPrompts
from llamacpu.llm.supervision import PlanTargets, plan_targets, weights_targets
from llamacpu.llm.tokenizer import SymbolTokenizer
from llamacpu.machine.addressing import straight_through
from llamacpu.machine.interfaces import APPLY_SCALE

__all__ = ["Controller"]

_KINDS, _OPS, _MODES = len(Kind), len(Op), len(Mode)


class Controller(nn.Module):
    """An HF causal LM with the plan heads (emit program slots) and the execute head
    (sequence machine steps). See the module docstring for the two phases."""

    def __init__(self, cfg: ControllerConfig = ControllerConfig(),  # noqa: B008 (frozen)
                 lm: PreTrainedModel | None = None,
                 tokenizer=None) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        if not cfg.pretrained:
            self.tokenizer = tokenizer if tokenizer is not None else SymbolTokenizer(cfg.alphabet)
            self.lm = lm if lm is not None else build_lm(cfg, self.tokenizer.vocab_size)[0]
            n_emb = self.lm.get_input_embeddings().num_embeddings
            if n_emb < self.tokenizer.vocab_size:
                raise ValueError(f"the LM has {n_emb} token embeddings, fewer than the "
                                 f"tokenizer's {self.tokenizer.vocab_size} ids")
            self.prompts: nn.Module = SymbolPrompts(self.tokenizer, cfg.view)
        else:
            if (lm is None) != (tokenizer is None):
                raise ValueError("a pretrained controller takes both lm and tokenizer, or "
                                 "neither (then cfg.model is loaded)")
            if lm is None:
                lm, tokenizer = build_lm(cfg, 0)
            self.lm, self.tokenizer = lm, tokenizer
            table = self.lm.get_input_embeddings().weight
            self.prompts = ChatPrompts(tokenizer, self.lm.config.get_text_config().hidden_size,
                                       init_std=float(table.detach().float().std()),
                                       view=cfg.view)
        H = self.lm.config.get_text_config().hidden_size
        self.slot_encoder = SlotEncoder(self.layout, H)
        self.slot_head = SlotHead(H, self.layout, cfg.max_slots)
        self.state_encoder = StateEncoder(cfg.alphabet, H, cfg.state_values)
        self.step_head = nn.Linear(H, 3)                                     # taken, write, halt
        empty = self.layout.encode([EMPTY_SLOT])[0]
        self.register_buffer("empty_slot", empty, persistent=False)         # [D]
        port = self.layout.encode([Slot.data()])[0]
        self.register_buffer("port_slot", port, persistent=False)           # [D]
        # The weight-token channel: a WEIGHTS slot's delta [V, V] is decoded from M
        # metatokens that read the prompt (_decode_weights). Built last, from a fork of the
        # RNG, so every other parameter's init is what it was without it.
        with torch.random.fork_rng(devices=[]):
            V = cfg.alphabet.size
            self.metatokens = MetaTokens(H, cfg.n_meta, markers=False, init_std=1.0)
            self.weight_head = WeightHead(H, {"apply": (V, V)}, cfg.weight_rank, cfg.n_meta,
                                          identity_mix=cfg.weight_rank == cfg.n_meta)
            self.weight_lookup = PromptLookup(H)
        with torch.random.fork_rng(devices=[]):  # the compile phase's head (compile_head.py)
            std = float(self.lm.get_input_embeddings().weight.detach().float().std())
            self.compile_head = CompileHead(H, init_std=std)

    # ------------------------------------------------------------ plumbing

    @property
    def device(self) -> torch.device:
        return self.empty_slot.device

    @property
    def address_keys(self) -> Tensor:
        """``[N, A]`` keys of the candidate addresses 0..max_slots−1."""
        return self.slot_head.keys

    def _run_lm(self, embeds: Tensor, mask: Tensor, positions: Tensor,
                past: DynamicCache | None = None) -> tuple[Tensor, DynamicCache | None]:
        """Final hidden states ``[B, S, H]`` of ``embeds [B, S, H]`` after ``past``."""
        out, cache = call_lm(self.lm, past, inputs_embeds=embeds, attention_mask=mask,
                             position_ids=positions, use_cache=past is not None,
                             output_hidden_states=True, logits_to_keep=1)
        return out.hidden_states[-1], cache

    def _prompt(self, prompts: Sequence[str], marker: str) -> tuple[Tensor, Tensor, Tensor]:
        """The prompts then ``<marker>`` (one of :data:`MARKERS`), left-padded, through the
        prompt encoder (:class:`SymbolPrompts` or :class:`ChatPrompts`): embeddings
        ``[B, S, H]``, mask ``[B, S]``, positions ``[B, S]``."""
        embeds, mask = self.prompts(self.lm, prompts, marker, self.device)  # [B, S, H]
        return embeds, mask, _positions(mask)

    def trainable_state(self) -> dict[str, Tensor]:
        """What a checkpoint must hold of this controller: everything for the tiny model;
        for a pretrained one the heads, encoders and markers but not the base LM's weights
        (nor the LoRA adapter, which :meth:`adapter_files` writes in PEFT format)."""
        sd = self.state_dict()
        if not self.cfg.pretrained:
            return sd
        return {k: v for k, v in sd.items() if not k.startswith("lm.")}

    def _compose(self, kind: Tensor, op: Tensor, modes: Tensor, args: Tensor,
                 val: Tensor) -> Tensor:
        """Slot vectors ``[..., D]`` from field distributions (kind ``[..., K]`` … args
        ``[..., F, N]`` over candidate addresses): args become probability-weighted keys."""
        keys = self.address_keys.to(args.dtype)
        return torch.cat([kind, op, modes.flatten(-2), (args @ keys).flatten(-2), val], -1)

    def _own_keys(self, first: int, n: int) -> Tensor:
        """``[n, A]`` keys of the addresses ``first .. first+n−1`` (emitted slots' own)."""
        return self.address_keys[first:first + n]

    # ------------------------------------------------------------ plan phase

    def _targets(self, programs: Sequence[Program]) -> PlanTargets:
        """Index tensors of the programs' slots 2..P−1 (checks they fit the controller)."""
        return plan_targets(programs, self.cfg.max_slots, self.cfg.alphabet, self.device)

    def _target_slots(self, tg: PlanTargets) -> Tensor:
        """``[B, Q, D]`` exact slot vectors of the targets."""
        V, N = self.cfg.alphabet.size, self.cfg.max_slots
        oh = F_nn.one_hot
        dt = self.empty_slot.dtype
        return self._compose(oh(tg.kind, _KINDS).to(dt), oh(tg.op, _OPS).to(dt),
                             oh(tg.modes, _MODES).to(dt), oh(tg.args, N).to(dt),
                             oh(tg.val, V).to(dt))

    def plan_logits(self, prompts: Sequence[str], slots: Tensor,
                    prefix: PromptCache | None = None) -> SlotLogits:
        """Teacher-forced plan: the LM reads ``<bos> prompt <plan>`` then ``slots [B, Q, D]``
        (slots 2..Q+1); returns the predictions of slots 2..Q+2 (``Q + 1`` positions).

        ``prefix``: the prompts' :meth:`encode_prefix` (row b for prompt b), computed once
        and shared with the execute phase; the LM then reads only ``<plan>`` and the slots
        after it. The same function of the weights (causal attention: a prefix's keys and
        values do not depend on what follows)."""
        Q = slots.shape[1]
        if N_PORTS + Q > self.cfg.max_slots:
            raise ValueError(f"{Q} slots after the ports exceed max_slots = {self.cfg.max_slots}")
        if prefix is not None:
            B = prefix.batch_size
            if slots.shape[0] != B or len(prompts) != B:
                raise ValueError(f"{slots.shape[0]} slot rows and {len(prompts)} prompts for "
                                 f"a prefix of {B} rows")
            x = self.slot_encoder(slots, self._own_keys(N_PORTS, Q))          # [B, Q, H]
            mark = self.prompts.marker(self.lm, "plan", B, self.device)       # [B, 1, H]
            x = torch.cat([mark, x.to(mark.dtype)], 1)                        # [B, 1+Q, H]
            mask = torch.cat([prefix.mask, prefix.mask.new_ones(B, 1 + Q)], 1)
            pos = prefix.lengths[:, None] + torch.arange(1 + Q, device=self.device)
            h, _ = self._run_lm(x, mask, pos, prefix.past())
            return self.slot_head(h)                                           # [B, Q+1, ...]
        embeds, mask, _ = self._prompt(prompts, "plan")     # [B, S, H]
        B, S, _ = embeds.shape
        if slots.shape[0] != B:
            raise ValueError(f"{slots.shape[0]} slot rows for {B} prompts")
        x = self.slot_encoder(slots, self._own_keys(N_PORTS, Q))              # [B, Q, H]
        full = torch.cat([mask, mask.new_ones(B, Q)], 1)                       # [B, S+Q]
        h, _ = self._run_lm(torch.cat([embeds, x], 1), full, _positions(full))
        return self.slot_head(h[:, S - 1:])                                    # [B, Q+1, ...]

    # ------------------------------------------------------------ the weight-token channel

    def _decode_weights(self, embeds: Tensor, mask: Tensor, rows: Sequence[int]) -> Tensor:
        """The deltas ``[n, V, V]`` of WEIGHTS slots in batch rows ``rows`` (one per slot).

        The M metatokens (learned embeddings) read row b's prompt (token embeddings
        ``embeds [B, S, H]``, ``mask [B, S]``) through :class:`~llamacpu.llm.channel.
        PromptLookup`, and the :class:`~llamacpu.llm.channel.WeightHead` decodes the M
        results into ``U, Vf [V, r]``: Δ = U Vfᵀ (``r = M``: metatoken m writes column m).
        """
        idx = torch.as_tensor(list(rows), dtype=torch.long, device=embeds.device)
        q = self.metatokens.embeddings.to(embeds.dtype)                      # [M, H]
        hm = self.weight_lookup(q.expand(len(idx), -1, -1), embeds[idx], mask[idx])
        d = self.weight_head(hm)["apply"]                                      # u, v [n, V, r]
        return torch.einsum("bor,bir->boi", d.u, d.v)                          # Δ = U Vfᵀ

    weights_targets = staticmethod(weights_targets)  # llamacpu.llm.supervision

    def apply_logits(self, delta: Tensor) -> Tensor:
        """``[n, C, V]``: APPLY's logits ``s · Δ e_x`` for every digit x < C (the alphabet's
        base), the domain a WEIGHTS slot is trained on (s = machine.APPLY_SCALE)."""
        C = self.cfg.alphabet.base
        return APPLY_SCALE * delta[..., :C].transpose(-1, -2)

    def weights_loss(self, delta: Tensor, tables: Tensor) -> tuple[Tensor, Tensor]:
        """Σ over slots of the sum over digits x of CE(APPLY's logits at x, table[x]) (each
        digit a field of the slot), and per slot whether all its digits are right (``[n]``
        bool)."""
        logits = self.apply_logits(delta)                                      # [n, C, V]
        target = tables[:, : logits.shape[1]].to(logits.device)                # [n, C]
        ce = F_nn.cross_entropy(logits.movedim(-1, 1), target, reduction="none")  # [n, C]
        return ce.sum(), (logits.argmax(-1) == target).all(-1)

    def plan_weights(self, prompts: Sequence[str], programs: Sequence[Program]
                     ) -> tuple[list[tuple[int, int]], Tensor | None]:
        """Teacher-forced deltas of the programs' WEIGHTS slots: ``[(row, address)]`` and
        ``[n, V, V]`` (None when there are none), differentiable into the LM and the head."""
        where, _ = self.weights_targets(programs)
        if not where:
            return where, None
        embeds, mask, _ = self._prompt(prompts, "plan")
        return where, self._decode_weights(embeds, mask, [b for b, _ in where])

    def plan_loss(self, prompts: Sequence[str], programs: Sequence[Program], *,
                  counts: tuple[float, ...] | None = None,
                  prefix: PromptCache | None = None) -> tuple[Tensor, PlanMetrics]:
        """Teacher-forced cross-entropy of the expert programs' slots 2..P−1 and their stop.

        Per position: the stop BCE; per slot: CE of kind, op, each mode, each address (over
        the candidate addresses) and the value, summed. Averaged over positions: the sums
        are divided by the number of stop positions (Σ slots + 1) and of slots (Σ slots),
        or by ``counts`` = (positions, slots) when given (a data-parallel shard passes the
        whole batch's, see ``llamacpu.learn.distributed``). ``prefix``: see :meth:`plan_logits`.
        WEIGHTS slots add the function they hold, :meth:`weights_loss` (one CE per digit),
        averaged over the batch's WEIGHTS slots (``counts[2]`` when given): a term of its
        own, not diluted by the other slots, whose gradients alone would be a few
        thousandths of the loss.
        """
        if len(prompts) != len(programs):
            raise ValueError(f"{len(prompts)} prompts and {len(programs)} programs")
        tg = self._targets(programs)
        lg = self.plan_logits(prompts, self._target_slots(tg), prefix)       # [B, Q+1, ...]
        B, Q1 = lg.stop.shape
        k = torch.arange(Q1, device=self.device)[None, :]                    # [1, Q+1]
        is_slot = k < tg.n[:, None]                                          # [B, Q+1]
        valid = k <= tg.n[:, None]
        stop_t = (k == tg.n[:, None]).to(lg.stop.dtype)
        stop_loss = F_nn.binary_cross_entropy_with_logits(lg.stop, stop_t, reduction="none")

        def ce(logits: Tensor, target: Tensor) -> Tensor:                    # [B, Q]
            return F_nn.cross_entropy(logits.movedim(-1, 1), target, reduction="none")

        # pad the targets with a dummy row for the stop position (masked out below)
        pad = (0, 1)
        t_kind, t_op, t_val = (F_nn.pad(x, pad) for x in (tg.kind, tg.op, tg.val))
        t_modes = F_nn.pad(tg.modes, (0, 0, 0, 1))
        t_args = F_nn.pad(tg.args, (0, 0, 0, 1))
        field_loss = (ce(lg.kind, t_kind) + ce(lg.op, t_op) + ce(lg.val, t_val)
                      + ce(lg.modes, t_modes).sum(-1)
                      + ce(lg.args, t_args).sum(-1))           # [B, Q+1]
        n_valid = valid.sum().clamp(min=1) if counts is None else max(1.0, counts[0])
        n_slot = is_slot.sum().clamp(min=1) if counts is None else max(1.0, counts[1])
        loss = ((stop_loss * valid).sum() / n_valid
                + (field_loss * is_slot).sum() / n_slot)
        # WEIGHTS slots: one more field, the function APPLY will run (weights_loss)
        where, tables = self.weights_targets(programs)
        w_ok = torch.ones(B, dtype=torch.bool, device=self.device)
        weights_acc = 1.0
        if where:
            embeds, mask, _ = self._prompt(prompts, "plan")  # token embeddings, no LM pass
            delta = self._decode_weights(embeds, mask, [b for b, _ in where])  # [n, V, V]
            w_loss, ok = self.weights_loss(delta, tables)
            n_w = len(where) if counts is None or len(counts) < 3 else max(1.0, counts[2])
            loss = loss + w_loss / n_w
            weights_acc = float(ok.float().mean())
            for (b, _), good in zip(where, ok.tolist()):
                w_ok[b] &= good

        with torch.no_grad():
            ok_stop = (lg.stop > 0) == stop_t.bool()
            ok_kind = lg.kind.argmax(-1) == t_kind
            ok_op = lg.op.argmax(-1) == t_op
            ok_modes = lg.modes.argmax(-1) == t_modes                          # [B, Q+1, F]
            ok_args = lg.args.argmax(-1) == t_args
            ok_val = lg.val.argmax(-1) == t_val
            ok_slot = ok_stop & ok_kind & ok_op & ok_modes.all(-1) & ok_args.all(-1) & ok_val
            ok_pos = torch.where(is_slot, ok_slot, ok_stop)                    # stop position
            ok_prog = (ok_pos | ~valid).all(-1) & w_ok

            def acc(ok: Tensor, where: Tensor) -> float:
                if ok.dim() > where.dim():
                    return float(ok.float().mean(-1)[where].mean()) if where.any() else 1.0
                return float(ok[where].float().mean()) if where.any() else 1.0

            metrics = PlanMetrics(
                loss=float(loss.detach()), stop_acc=acc(ok_stop, valid),
                kind_acc=acc(ok_kind, is_slot),
                op_acc=acc(ok_op, is_slot), mode_acc=acc(ok_modes, is_slot),
                arg_acc=acc(ok_args, is_slot), val_acc=acc(ok_val, is_slot),
                slot_acc=acc(ok_pos, valid), program_acc=float(ok_prog.float().mean()),
                weights_acc=weights_acc)
        return loss, metrics

    def _soft_slot(self, lg: SlotLogits, hard: bool) -> tuple[Tensor, Tensor]:
        """Slot vectors ``[..., D]`` and stop probabilities ``[...]`` from logits; ``hard``:
        one-hot argmax forward, softmax gradient (straight-through)."""

        def dist(logits: Tensor) -> Tensor:
            p = logits.softmax(-1)
            if not hard:
                return p
            return straight_through(F_nn.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype), p)

        p_stop = lg.stop.sigmoid()
        if hard:
            p_stop = straight_through((lg.stop > 0).to(p_stop.dtype), p_stop)
        slots = self._compose(dist(lg.kind), dist(lg.op), dist(lg.modes), dist(lg.args),
                              dist(lg.val))
        return slots, p_stop

    def plan_soft(self, prompts: Sequence[str], teacher: Sequence[Program] | None = None, *,
                  sample_prob: float = 0.0, n_slots: int | None = None, hard: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:
        """A differentiable program: ``[B, P, D]`` slot distributions in SlotLayout form.

        Rows 0 and 1 are the ports (DATA, pointer 0: the loader sets them); row i ≥ 2 is
        ``alive_i · slot_i + (1 − alive_i) · EMPTY`` with ``slot_i`` the predicted fields
        (soft one-hots; addresses as probability-weighted keys) and ``alive_i = Π_{j ≤ i}
        (1 − p_stop_j)`` the probability the program has not stopped before slot i.
        ``P`` is ``n_slots``, else the longest teacher, else ``max_slots``.

        Inputs: with ``teacher`` the expert's previous slot is fed (teacher forcing), except
        that with probability ``sample_prob`` per slot and row the model's own previous slot
        (this function's output, not gated by ``alive``) is fed instead (scheduled
        sampling); beyond a teacher's end, and without a teacher, the model's own.
        ``hard``: straight-through one-hots (an exact program forward, soft gradients).
        """
        if not 0.0 <= sample_prob <= 1.0:
            raise ValueError(f"sample_prob must be in [0, 1], got {sample_prob}")
        B = len(prompts)
        if teacher is not None and len(teacher) != B:
            raise ValueError(f"{len(teacher)} teacher programs for {B} prompts")
        if n_slots is None:
            n_slots = (max(len(p.slots) for p in teacher) if teacher is not None
                       else self.cfg.max_slots)
        if not N_PORTS < n_slots <= self.cfg.max_slots:
            raise ValueError(f"n_slots must be in {N_PORTS + 1}..{self.cfg.max_slots}, "
                             f"got {n_slots}")
        Q = n_slots - N_PORTS                                                # slots to emit
        exp = exp_n = None
        if teacher is not None:
            tg = self._targets(teacher)
            exp = self._target_slots(tg)                                     # [B, Qt, D]
            exp_n = tg.n
            if exp.shape[1] < Q:
                pad = self.empty_slot.expand(B, Q - exp.shape[1], -1)
                exp = torch.cat([exp, pad], 1)
            exp = exp[:, :Q]

        if exp is not None and sample_prob == 0.0:
            lg = self.plan_logits(prompts, exp[:, :Q - 1])                   # [B, Q, ...]
            slots, p_stop = self._soft_slot(lg, hard)                        # [B, Q, D], [B, Q]
        else:
            slots, p_stop = self._plan_sequential(prompts, Q, exp, exp_n, sample_prob, hard,
                                                  generator)
        alive = torch.cumprod(1 - p_stop, 1)[..., None]                      # [B, Q, 1]
        body = alive * slots + (1 - alive) * self.empty_slot                 # [B, Q, D]
        ports = self.port_slot.expand(B, N_PORTS, -1)
        return torch.cat([ports.to(body.dtype), body], 1)                    # [B, P, D]

    def _plan_sequential(self, prompts: Sequence[str], Q: int, exp: Tensor | None,
                         exp_n: Tensor | None, sample_prob: float, hard: bool,
                         generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Autoregressive soft plan with the KV cache: ``[B, Q, D]`` slots, ``[B, Q]`` stops."""
        embeds, mask, pos = self._prompt(prompts, "plan")
        B = embeds.shape[0]
        h, cache = self._run_lm(embeds, mask, pos, DynamicCache())
        last, next_pos = h[:, -1], pos[:, -1] + 1                            # [B, H], [B]
        slots, stops = [], []
        for k in range(Q):
            s, p = self._soft_slot(self.slot_head(last), hard)               # [B, D], [B]
            slots.append(s)
            stops.append(p)
            if k == Q - 1:
                break
            inp = s
            if exp is not None:
                use_own = torch.rand(B, generator=generator).to(self.device) < sample_prob
                use_own = use_own | (k >= exp_n)                              # past the expert
                inp = torch.where(use_own[:, None], s, exp[:, k])
            x = self.slot_encoder(inp, self._own_keys(N_PORTS + k, 1))[:, None]  # [B, 1, H]
            mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
            h, cache = self._run_lm(x, mask, next_pos[:, None], cache)
            last, next_pos = h[:, -1], next_pos + 1
        return torch.stack(slots, 1), torch.stack(stops, 1)

    @torch.no_grad()
    def emit(self, prompts: Sequence[str], max_slots: int | None = None, *,
             use_cache: bool = True) -> list[Program]:
        """Greedy plan: one :class:`~llamacpu.core.isa.Program` per prompt (ports + emitted slots,
        entry 2, the controller's alphabet).

        Batched, one LM forward per slot with the KV cache (``use_cache=False`` recomputes
        the whole sequence every slot: the reference the cached path is tested against). A
        row that has not stopped after ``max_slots`` (default ``cfg.max_slots``) slots in
        all is returned truncated there.
        """
        programs, _, _ = self._emit(prompts, max_slots, use_cache)
        return programs

    @torch.no_grad()
    def emit_scored(self, prompts: Sequence[str], max_slots: int | None = None
                    ) -> tuple[list[Program], Tensor]:
        """:meth:`emit`, and the plan's confidence per prompt (``[B]`` in (0, 1]): the
        probability of the least certain decision it took — every field of every emitted
        slot (kind, op, each mode, each address, the value), each stop-or-go decision, and
        each digit of a WEIGHTS slot's function. One doubtful field makes a doubtful
        program, however sure the rest is; ``LearnedMachine.solve(abstain_below=...)``
        declines to run a plan below a threshold."""
        programs, _, confidence = self._emit(prompts, max_slots, True)
        return programs, confidence

    def _emit(self, prompts: Sequence[str], max_slots: int | None,
              use_cache: bool) -> tuple[list[Program], list[SlotLogits], Tensor]:
        """:meth:`emit`, also returning the head's logits at every step (for tests) and the
        confidence of :meth:`emit_scored`."""
        limit = self.cfg.max_slots if max_slots is None else max_slots
        if not N_PORTS < limit <= self.cfg.max_slots:
            raise ValueError(f"max_slots must be in {N_PORTS + 1}..{self.cfg.max_slots}, "
                             f"got {limit}")
        embeds, mask, pos = self._prompt(prompts, "plan")
        prompt_embeds, prompt_mask = embeds, mask
        B = embeds.shape[0]
        cache = DynamicCache() if use_cache else None
        h, cache = self._run_lm(embeds, mask, pos, cache)
        last = h[:, -1]
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        length = torch.full((B,), limit - N_PORTS, dtype=torch.long, device=self.device)
        fields: list[tuple[Tensor, ...]] = []
        history: list[SlotLogits] = []
        confidence = torch.ones(B, device=self.device)
        for k in range(limit - N_PORTS + 1):
            lg = self.slot_head(last)
            history.append(lg)
            with torch.no_grad():  # go: the go decision and every field; stop: the stop
                stop_p = torch.sigmoid(lg.stop.float())
                sure = torch.where(lg.stop > 0, stop_p,
                                   torch.minimum(1 - stop_p, lg.field_confidence()))
                confidence = torch.where(done, confidence, torch.minimum(confidence, sure))
            stop = (lg.stop > 0) & ~done
            length = torch.where(stop, torch.full_like(length, k), length)
            done = done | stop
            if bool(done.all()) or k == limit - N_PORTS:
                break
            idx = (lg.kind.argmax(-1), lg.op.argmax(-1), lg.modes.argmax(-1),
                   lg.args.argmax(-1), lg.val.argmax(-1))
            fields.append(idx)
            oh = F_nn.one_hot
            dt = embeds.dtype
            slot = self._compose(oh(idx[0], _KINDS).to(dt), oh(idx[1], _OPS).to(dt),
                                 oh(idx[2], _MODES).to(dt), oh(idx[3], self.cfg.max_slots).to(dt),
                                 oh(idx[4], self.cfg.alphabet.size).to(dt))   # [B, D]
            x = self.slot_encoder(slot, self._own_keys(N_PORTS + k, 1))[:, None]  # [B, 1, H]
            mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
            nxt = pos[:, -1:] + 1
            pos = torch.cat([pos, nxt], 1)
            if use_cache:
                h, cache = self._run_lm(x, mask, nxt, cache)
            else:
                embeds = torch.cat([embeds, x], 1)
                h, _ = self._run_lm(embeds, mask, pos)
            last = h[:, -1]
        programs = []
        ports = (Slot.data(), Slot.data())
        bodies = [[_slot_of(*(f[b] for f in step)) for step in fields[: int(length[b])]]
                  for b in range(B)]
        # WEIGHTS slots get their function from the weight head: table[x] = argmax_v Δ[v, x]
        # on the digits, the domain the head is trained on (weights_loss); every other entry
        # is END, an undefined entry's value (Slot.weights), never an untrained argmax
        where = [(b, N_PORTS + k) for b, body in enumerate(bodies)
                 for k, sl in enumerate(body) if sl.kind == Kind.WEIGHTS]
        if where:
            delta = self._decode_weights(prompt_embeds, prompt_mask, [b for b, _ in where])
            C, V = self.cfg.alphabet.base, self.cfg.alphabet.size
            for (b, a), digits in zip(where, delta[..., :C].argmax(-2).tolist()):
                bodies[b][a - N_PORTS] = Slot.weights(digits + [V - 1] * (V - C))
            # the function's digits, as APPLY reads them (weights_loss trains these)
            with torch.no_grad():
                digit_sure = self.apply_logits(delta).float().softmax(-1).amax(-1).amin(-1)
            for (b, _), c in zip(where, digit_sure):
                confidence[b] = torch.minimum(confidence[b], c)
        for b in range(B):
            programs.append(Program(ports + tuple(bodies[b]), N_PORTS, self.cfg.alphabet,
                                    name="<emitted>"))
        return programs, history, confidence

    # ------------------------------------------------------------ execute phase

    def encode_prompt(self, prompts: Sequence[str] | None = None,
                      prefix: PromptCache | None = None) -> PromptCache:
        """Run ``<bos> prompt <exec>`` once; every step of the run reads this cache.

        With ``prefix`` (the prompts' :meth:`encode_prefix`) only ``<exec>`` is run, after it.
        """
        if prefix is not None:
            B = prefix.batch_size
            mark = self.prompts.marker(self.lm, "exec", B, self.device)       # [B, 1, H]
            mask = torch.cat([prefix.mask, prefix.mask.new_ones(B, 1)], 1)   # [B, S+1]
            _, cache = self._run_lm(mark, mask, prefix.lengths[:, None], prefix.past())
        else:
            if prompts is None:
                raise ValueError("encode_prompt needs prompts or a prefix")
            embeds, mask, pos = self._prompt(prompts, "exec")
            _, cache = self._run_lm(embeds, mask, pos, DynamicCache())
        kv = tuple((layer.keys, layer.values) for layer in cache.layers)
        return PromptCache(kv, mask, mask.sum(1))

    def encode_prefix(self, prompts: Sequence[str]) -> PromptCache:
        """The LM's keys and values for ``<bos> prompt`` without a marker: what the plan
        (:meth:`plan_logits`) and execute (:meth:`encode_prompt`) phases have in common,
        so a training step can run the prompts through the LM once for both. Keeps the
        autograd graph (LoRA weights act on it).

        The tokens every prompt starts with (a chat template's system message: 24 of
        SmolLM2's ~36 tokens) are run once at batch 1 and broadcast; the rest of each
        row follows, left-padded after them. Position ids count real tokens only, so every
        row's keys and values are those of its own unpadded prompt.
        """
        rows = self.prompts.rows(prompts)
        B = len(rows)
        emb = self.lm.get_input_embeddings()
        L = 0  # tokens shared by every row, leaving each row at least one of its own
        shortest = min(len(r) for r in rows)
        while L < shortest - 1 and all(r[L] == rows[0][L] for r in rows):
            L += 1
        if B == 1 or L < 2:
            L = 0
        tails = [r[L:] for r in rows]
        S = max(len(r) for r in tails)
        ids = torch.zeros(B, S, dtype=torch.long)
        tail_mask = torch.zeros(B, S, dtype=torch.long)
        for b, r in enumerate(tails):                                        # left padding
            ids[b, S - len(r):] = torch.tensor(r, dtype=torch.long)
            tail_mask[b, S - len(r):] = 1
        ids, tail_mask = ids.to(self.device), tail_mask.to(self.device)
        past = DynamicCache()
        if L:
            head = torch.tensor([rows[0][:L]], dtype=torch.long, device=self.device)  # [1, L]
            pos = torch.arange(L, device=self.device)[None]
            _, shared = self._run_lm(emb(head), torch.ones_like(head), pos, DynamicCache())
            # the shared keys/values [1, heads, L, dh] → every row's (a view; its grads sum)
            past = DynamicCache(ddp_cache_data=[(layer.keys.expand(B, -1, -1, -1),
                                                 layer.values.expand(B, -1, -1, -1))
                                                for layer in shared.layers])
        mask = torch.cat([tail_mask.new_ones(B, L), tail_mask], 1)           # [B, L+S]
        _, cache = self._run_lm(emb(ids), mask, _positions(mask)[:, L:], past)
        kv = tuple((layer.keys, layer.values) for layer in cache.layers)
        return PromptCache(kv, mask, mask.sum(1))

    def step(self, cache: PromptCache, view: StepView, t: int | Tensor = 0) -> StepLogits:
        """Decide one machine step from the current state: logits ``[B]`` each.

        The state embedding sits at position ``cache.lengths`` (plus ``t``, the step index,
        only when ``cfg.absolute_positions``) after the prompt, computed from a copy of the
        cache: ``cache`` does not grow, and steps are independent of each other.
        """
        B = cache.batch_size
        if view.op.shape[0] != B or view.op.dim() != 2:
            raise ValueError(f"step takes a view with leading shape [B={B}], got "
                             f"{tuple(view.op.shape[:-1])}")
        x = self.state_encoder(view)[:, None]                                # [B, 1, H]
        pos = cache.lengths[:, None]                                         # [B, 1]
        if self.cfg.absolute_positions:
            pos = pos + torch.as_tensor(t, device=pos.device).reshape(-1, 1)
        mask = torch.cat([cache.mask, cache.mask.new_ones(B, 1)], 1)        # [B, S+1]
        h, _ = self._run_lm(x.to(cache.kv[0][0].dtype), mask, pos, cache.past())
        logits = self.step_head(h[:, -1])                                    # [B, 3]
        return StepLogits(*logits.unbind(-1))

    def step_loss(self, prompts: Sequence[str], views: StepView, targets: Tensor,
                  mask: Tensor, steps: Tensor | None = None, *,
                  denominator: float | None = None,
                  cache: PromptCache | None = None) -> tuple[Tensor, StepMetrics]:
        """BCE of the step decisions against expert targets, all T steps in one forward.

        ``views`` has leading dims ``[B, T]``; ``targets [B, T, 3]`` are (taken, write,
        halt) in {0, 1}; ``mask [B, T]`` (or ``[B, T, 3]``, per decision) is 1 on real
        steps; ``steps [B, T]`` the machine step index of each view (default 0..T-1; only
        the ``absolute_positions`` ablation reads it), so a subsample of a run's steps may
        be passed. The prompt cache is repeated along the batch: ``B·T`` length-1 sequences.
        The loss is ``Σ bce · mask / Σ mask`` (over the 3 decisions), or ``/ denominator``
        when given (a data-parallel shard passes the whole batch's ``Σ mask``). ``cache``:
        the prompts' :meth:`encode_prompt`, when the caller has it already (row b for
        prompt b).
        """
        B, T = views.op.shape[:2]
        if len(prompts) != B:
            raise ValueError(f"{len(prompts)} prompts for views of batch {B}")
        if tuple(targets.shape) != (B, T, 3):
            raise ValueError(f"targets must be [B, T, 3] = {[B, T, 3]}, got "
                             f"{list(targets.shape)}")
        m = mask.to(targets.dtype)
        if m.shape == (B, T):
            m = m[..., None].expand(B, T, 3)
        if tuple(m.shape) != (B, T, 3):
            raise ValueError(f"mask must be [B, T] or [B, T, 3], got {list(mask.shape)}")
        if cache is None:
            cache = self.encode_prompt(prompts)
        elif cache.batch_size != B:
            raise ValueError(f"a prompt cache of {cache.batch_size} rows for views of batch {B}")
        cache = cache.repeat(T)                                              # [B·T, ...]
        flat = StepView(*(None if x is None else x.flatten(0, 1) for x in views))
        if steps is None:
            t = torch.arange(T, device=self.device).repeat(B)                # [B·T]
        else:
            t = steps.to(self.device).reshape(B * T)
        lg = self.step(cache, flat, t)
        logits = torch.stack(lg, -1).reshape(B, T, 3)
        bce = F_nn.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                    reduction="none")
        loss = (bce * m).sum() / (m.sum().clamp(min=1) if denominator is None
                                  else max(1.0, denominator))
        with torch.no_grad():
            ok = ((logits > 0) == (targets > 0.5)) | (m == 0)                 # [B, T, 3]
            real = m.sum(-1) > 0                                             # [B, T]
            accs = [float(ok[..., i][m[..., i] > 0].float().mean()) if (m[..., i] > 0).any()
                    else 1.0 for i in range(3)]
            step_acc = float(ok.all(-1)[real].float().mean()) if real.any() else 1.0
        return loss, StepMetrics(float(loss.detach()), *accs, step_acc)


def _positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded mask ``[B, S]``: 0, 1, … over the real tokens."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _slot_of(kind: Tensor, op: Tensor, modes: Tensor, args: Tensor, val: Tensor) -> Slot:
    """A Slot from index tensors (scalars; modes and args ``[F]``)."""
    return Slot(Kind(int(kind)), Op(int(op)),
                tuple(Mode(m) for m in modes.tolist()),  # type: ignore[arg-type]
                tuple(args.tolist()), int(val))  # type: ignore[arg-type]
