"""The controller's heads and encoders (part of layer 8 of docs/architecture.md): the small modules
between the LM's hidden states and the machine, and the typed values they pass.

Plan: :class:`SlotEncoder` turns an emitted slot into ONE continuous LM input embedding, and
:class:`SlotHead` predicts the next slot's fields (:class:`SlotLogits`), an address as
attention over the candidate addresses' keys. Execute: :class:`StateEncoder` turns the
machine's state at a step (:class:`StepView`) into one embedding after the prompt's
:class:`PromptCache`, and the step head's :class:`StepLogits` decide the step.
:class:`PlanMetrics` and :class:`StepMetrics` report the two phases' losses.

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

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from llamacpu.core.isa import NUM_FIELDS, Alphabet, Kind, Mode, Op
from llamacpu.machine.interfaces import Decisions
from llamacpu.machine.memory import SlotLayout

__all__ = [
    "SlotEncoder", "SlotLogits", "SlotHead", "StepView", "StateEncoder", "StepLogits",
    "PromptCache", "PlanMetrics", "StepMetrics",
]

_KINDS, _OPS, _MODES = len(Kind), len(Op), len(Mode)
_PAIRS = tuple((i, j) for i in range(NUM_FIELDS) for j in range(i + 1, NUM_FIELDS))


class SlotEncoder(nn.Module):
    """Slot vectors ``[..., D]`` (SlotLayout form, hard or soft) at addresses ``[..., A]`` →
    LM input embeddings ``[..., H]``.

    ``e = W x + U key(address) + b``. On the one-hot fields of ``x`` the linear map is a sum
    of field embeddings (one table per field); on the address fields it is a linear map of
    the pointer's key, and ``U`` adds the slot's own address key, so a pointer and the slot
    it names meet in the same key space (attention-compatible). Linear, so a soft slot
    (probabilities, probability-weighted keys) embeds as the expected embedding.
    """

    def __init__(self, layout: SlotLayout, hidden: int) -> None:
        super().__init__()
        self.layout = layout
        self.fields = nn.Linear(layout.width, hidden)                        # W, b
        self.address = nn.Linear(layout.codec.width, hidden, bias=False)     # U

    def forward(self, slots: Tensor, address_keys: Tensor) -> Tensor:
        return self.fields(slots) + self.address(address_keys)              # [..., H]


class SlotLogits(NamedTuple):
    """The slot head's predictions for the next slot, at each position."""

    stop: Tensor   # [B, Q]          logit of "the program ends here"
    kind: Tensor   # [B, Q, K]
    op: Tensor     # [B, Q, O]
    modes: Tensor  # [B, Q, F, M]
    args: Tensor   # [B, Q, F, N]    pointer logits over the candidate addresses
    val: Tensor    # [B, Q, V]

    def field_confidence(self) -> Tensor:
        """``[B, Q]``: the probability of the least certain field of each slot (the greedy
        choice's softmax probability, per field; every mode and address field counts)."""
        def top(logits: Tensor) -> Tensor:
            return logits.float().softmax(-1).amax(-1)

        return torch.stack([top(self.kind), top(self.op), top(self.val),
                            top(self.modes).amin(-1), top(self.args).amin(-1)], -1).amin(-1)


class SlotHead(nn.Module):
    """Hidden states ``[..., H]`` → :class:`SlotLogits` for the next slot.

    Pointers as attention: per address field f, a query ``q_f = W_f h`` (width A) is scored
    against the keys of the candidate addresses, ``logit_f(j) = q_f · key(j)``. The right
    address wins by the codec's margin once ``q_f`` aligns with its key.
    """

    def __init__(self, hidden: int, layout: SlotLayout, max_slots: int) -> None:
        super().__init__()
        A, V = layout.codec.width, layout.alphabet.size
        self.stop = nn.Linear(hidden, 1)
        self.kind = nn.Linear(hidden, _KINDS)
        self.op = nn.Linear(hidden, _OPS)
        self.modes = nn.Linear(hidden, NUM_FIELDS * _MODES)
        self.query = nn.Linear(hidden, NUM_FIELDS * A)
        self.val = nn.Linear(hidden, V)
        self.register_buffer("keys", layout.codec.keys(max_slots), persistent=False)  # [N, A]

    def forward(self, h: Tensor) -> SlotLogits:
        q = self.query(h).unflatten(-1, (NUM_FIELDS, -1))                   # [..., F, A]
        return SlotLogits(
            stop=self.stop(h).squeeze(-1),
            kind=self.kind(h),
            op=self.op(h),
            modes=self.modes(h).unflatten(-1, (NUM_FIELDS, _MODES)),        # [..., F, M]
            args=q @ self.keys.T,                                            # [..., F, N]
            val=self.val(h),
        )


class StepView(NamedTuple):
    """What the execute phase sees of the machine at one step (leading dims ``[...]`` = [B] or
    [B, T]). Distributions, hard or soft: the machine's decoded fetch and operand reads.
    :class:`~llamacpu.llm.sequencer.ControllerSequencer` builds it from
    ``llamacpu.machine.machine.StepView``."""

    op: Tensor                 # [..., O]     the fetched instruction's opcode
    modes: Tensor              # [..., F, M]  its operand modes
    values: Tensor             # [..., F, V]  per field, the val of the operand's slot (or the
    #                                         immediate); fields with mode NONE are ignored
    carry: Tensor              # [..., Vc]    the carry register
    cond: Tensor | None = None  # [...]       the ALU's condition flag in [0, 1], if provided


class StateEncoder(nn.Module):
    """A :class:`StepView` → one LM input embedding ``[..., H]``.

    Features: op, modes, the flags a CPU's ALU would raise — per operand whether its symbol
    is 0 (JZ/JNZ), and the pairwise agreements ``⟨value_i, value_j⟩`` (= 1 for equal one-hot
    symbols: what JEQ/JNE decide on) — the condition flag and whether one was given; with
    ``values=True`` also the operand symbols themselves (zeroed on fields whose mode is
    NONE, so the value a machine happens to put there does not matter) and the carry. A
    linear map of these (the LM supplies the nonlinearity).
    """

    def __init__(self, alphabet: Alphabet, hidden: int, values: bool = False) -> None:
        super().__init__()
        self.alphabet = alphabet
        self.values = values
        V, Vc = alphabet.size, alphabet.base
        raw = NUM_FIELDS * V + Vc if values else 0
        self.width = _OPS + NUM_FIELDS * _MODES + NUM_FIELDS + raw + len(_PAIRS) + 2
        self.proj = nn.Linear(self.width, hidden)

    def features(self, view: StepView) -> Tensor:
        """``[..., width]``: the feature vector of a view (checks its shapes)."""
        V, Vc = self.alphabet.size, self.alphabet.base
        lead = view.op.shape[:-1]
        expect = {"op": (*lead, _OPS), "modes": (*lead, NUM_FIELDS, _MODES),
                  "values": (*lead, NUM_FIELDS, V), "carry": (*lead, Vc)}
        for name, shape in expect.items():
            got = tuple(getattr(view, name).shape)
            if got != shape:
                raise ValueError(f"StepView.{name} has shape {got}, expected {shape} "
                                 f"(O={_OPS}, F={NUM_FIELDS}, M={_MODES}, V={V}, Vc={Vc})")
        x = view.values * (1 - view.modes[..., Mode.NONE])[..., None]     # [..., F, V]
        pairs = torch.stack([(x[..., i, :] * x[..., j, :]).sum(-1) for i, j in _PAIRS], -1)
        if view.cond is None:
            cond = x.new_zeros(*lead, 2)
        else:
            if tuple(view.cond.shape) != tuple(lead):
                raise ValueError(f"StepView.cond has shape {tuple(view.cond.shape)}, "
                                 f"expected {tuple(lead)}")
            cond = torch.stack([view.cond.to(x.dtype), torch.ones_like(view.cond, dtype=x.dtype)],
                               -1)
        zero = x[..., 0]                                                  # [..., F] symbol is 0
        raw = [x.flatten(-2), view.carry] if self.values else []
        return torch.cat([view.op, view.modes.flatten(-2), zero, *raw, pairs, cond],
                         -1)                                                 # [..., width]

    def forward(self, view: StepView) -> Tensor:
        return self.proj(self.features(view))                               # [..., H]


class StepLogits(NamedTuple):
    """The step head's logits; :meth:`decisions` gives the probabilities."""

    taken: Tensor  # [...]
    write: Tensor  # [...]
    halt: Tensor   # [...]

    def decisions(self) -> Decisions:
        """The probabilities, as ``llamacpu.machine.machine.Decisions``."""
        return Decisions(self.taken.sigmoid(), self.write.sigmoid(), self.halt.sigmoid())


@dataclass(frozen=True)
class PromptCache:
    """The LM's keys and values for ``<bos> prompt <exec>``, computed once per run.

    Left-padded: column S−1 is every row's ``<exec>``. ``lengths`` is each row's real token
    count, the position id the state token gets. A step reads this and never changes it.
    """

    kv: tuple[tuple[Tensor, Tensor], ...]  # per layer: keys, values [B, heads, S, head dim]
    mask: Tensor                           # [B, S] 1 on real tokens
    lengths: Tensor                        # [B] real tokens per row

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        """S, the cached sequence length (padding included)."""
        return self.mask.shape[1]

    def select(self, rows: Tensor) -> PromptCache:
        """The cache of some rows only (``rows`` [B'] long indices), in that order."""
        kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.kv]
        return PromptCache(tuple(kv), self.mask.index_select(0, rows),
                           self.lengths.index_select(0, rows))

    def repeat(self, n: int) -> PromptCache:
        """Each row ``n`` times in a row (``[B·n, ...]``), for a batch of steps per prompt."""
        rep = [(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0)) for k, v in self.kv]
        return PromptCache(tuple(rep), self.mask.repeat_interleave(n, 0),
                           self.lengths.repeat_interleave(n, 0))

    def past(self) -> DynamicCache:
        """A fresh ``DynamicCache`` holding copies of these keys/values (the LM may append
        to it; this cache is unaffected)."""
        return DynamicCache(ddp_cache_data=[(k, v) for k, v in self.kv])


@dataclass(frozen=True)
class PlanMetrics:
    """Teacher-forced plan metrics (accuracies in [0, 1], argmax against the expert)."""

    loss: float
    stop_acc: float     # stop-vs-slot right, at every position up to the expert's stop
    kind_acc: float
    op_acc: float
    mode_acc: float     # over the four mode fields
    arg_acc: float      # over the four address fields
    val_acc: float
    slot_acc: float     # every field of the slot (and the stop decision) right
    program_acc: float  # every slot of the program and its stop right (and its functions)
    weights_acc: float = 1.0  # WEIGHTS slots whose function (every digit) is right; 1 if none

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class StepMetrics:
    """Execute-phase metrics over the unmasked steps (decision = probability > 0.5)."""

    loss: float
    taken_acc: float
    write_acc: float
    halt_acc: float
    step_acc: float  # all three decisions right

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
