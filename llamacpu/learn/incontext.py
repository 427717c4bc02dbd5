"""The in-context-op task: an operation defined by examples in the prompt, carried into the
machine either through the weight-token channel (a WEIGHTS slot) or through data slots.

Shape letters: B batch, T prompt tokens, M metatokens (10), H hidden width, V alphabet
symbols, r rank of a WEIGHTS delta, K the digits (10).

The task. A prompt defines a random digit function f by its ten examples and asks for f of
every digit of a payload::

    f: 0>3 1>7 2>2 3>9 4>0 5>1 6>8 7>5 8>6 9>4 ; apply f to 40917      →  03475

(``>`` is the alphabet's arrow.) Functions are drawn uniformly from the 10¹⁰ digit maps;
a fixed 20% of them, chosen by a hash of the table (:func:`held_out`), is never trained on
and is what evaluation draws from.

Two ways to hand f to the machine, the same LM reading the same prompt followed by M = 10
metatokens, trained for the same budget. The metatokens follow the definitions (the prompt
up to its ';'): the controller writes f when it has read it, and the payload — any length —
is only the machine's input, which the program loops over:

- **channel on** (:data:`CHANNEL_PROGRAM`): the hidden states at the metatokens go through
  a :class:`WeightHead` into low-rank factors ``U [V, r]``, ``Vf [V, r]``; their product
  ``Δ = U Vfᵀ`` becomes the program's WEIGHTS slot ``f`` (``machine.with_weights``), and the
  program maps ``APPLY [o], f, [i]`` over the payload. The head is supervised directly: the
  cross-entropy of APPLY's logits ``s · Δ e_x`` against f(x) for every digit x.
- **channel off** (:data:`TABLE_PROGRAM`): a value head reads the same metatoken states as
  ten DATA slots ``tab+0 .. tab+9`` holding f(0..9), and the program looks f(d) up by
  pointer arithmetic (``LEA q, tab`` then d × ``INC q``, ``MOV [o], [q]``); supervised by
  the cross-entropy of each slot's value against f(x).

Both can add the end-to-end answer loss through the soft machine (:func:`answer_loss`).
The expert program is fixed (the controller's plan phase is not asked to emit it here);
what is learned is the function's transport. :func:`evaluate` runs the hard machine free on
held-out functions and reports exact match of the whole answer.

The machine's alphabet is ``IncontextConfig.alphabet`` (default the default one; the
curriculum's fmap stages train in a run's ``--alphabet``): the LM reads the prompt's
symbols in it, the WEIGHTS delta is ``[V, V]`` over it, and both programs are assembled in
it (:func:`fixed_program`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llamacpu.core.asm import assemble
from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet, Program, Slot
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.models import build_tiny_llama
from llamacpu.machine.interfaces import APPLY_SCALE
from llamacpu.machine.machine import Machine, MachineConfig, with_weights
from llamacpu.machine.oeu import LowRankDelta

__all__ = [
    "K", "CHANNEL_PROGRAM", "TABLE_PROGRAM", "fixed_program", "IncontextConfig", "Problem",
    "held_out", "random_function", "make_problem", "problems", "WeightHead", "FunctionReader",
    "apply_logits", "weights_loss", "answer_loss", "programs_for", "evaluate", "train",
]

K = 10
"""Digits a function is defined on (and metatokens the controller emits)."""

_CHANNEL_SOURCE = """\
; the in-context op, channel on: f is a WEIGHTS slot the controller writes
start:  lea   i, [IN]
find:   jeq   [i], #';', body       ; the payload starts after the ';'
        inc   i
        jmp   find
body:   lea   o, [OUT]
loop:   inc   i
        jeq   [i], #END, done
        lt    t, [i], #' '          ; a digit?
        jz    t, loop
        apply [o], f, [i]           ; o ← f(digit)
        inc   o
        jmp   loop
done:   halt
i:      .data 0
o:      .data 0
t:      .data 0
f:      .weights "" -> ""           ; written by the controller's weight head
"""

_TABLE_SOURCE = """\
; the in-context op, channel off: f(0..9) are DATA slots the controller writes
start:  lea   i, [IN]
find:   jeq   [i], #';', body
        inc   i
        jmp   find
body:   lea   o, [OUT]
loop:   inc   i
        jeq   [i], #END, done
        lt    t, [i], #' '
        jz    t, loop
        lea   q, tab                ; q → tab + digit, by pointer arithmetic
        mov   c, [i]
look:   jz    c, found
        inc   q
        sub   c, c, #1
        jmp   look
found:  mov   [o], [q]              ; o ← f(digit)
        inc   o
        jmp   loop
done:   halt
i:      .data 0
o:      .data 0
t:      .data 0
c:      .data 0
q:      .data 0
tab:    .data 0, 0, 0, 0, 0, 0, 0, 0, 0, 0   ; f(0..9), written by the controller
"""


@functools.cache
def fixed_program(channel: bool, alphabet: Alphabet = DEFAULT_ALPHABET) -> Program:
    """The fixed expert program, channel on (:data:`CHANNEL_PROGRAM`) or off
    (:data:`TABLE_PROGRAM`), assembled in ``alphabet`` (the same slots at the same
    addresses in every alphabet; its immediates ``';'``, ``' '`` and END are the
    alphabet's)."""
    if channel:
        return assemble(_CHANNEL_SOURCE, file="<incontext channel>", alphabet=alphabet)
    return assemble(_TABLE_SOURCE, file="<incontext table>", alphabet=alphabet)


CHANNEL_PROGRAM = fixed_program(True)
"""The expert program, channel on: ``APPLY [o], f, [i]`` over the payload, f a WEIGHTS slot."""
TABLE_PROGRAM = fixed_program(False)
"""The expert program, channel off: f(d) looked up in ten DATA slots ``tab+0..9``."""

_F_ADDR = CHANNEL_PROGRAM.symbols["f"]
_TAB_ADDR = TABLE_PROGRAM.symbols["tab"]


@dataclass(frozen=True)
class IncontextConfig:
    """The in-context-op experiment."""

    channel: bool = True          # False: the function travels through DATA slots instead
    hidden: int = 64              # H of the tiny Llama controller
    layers: int = 2               # its decoder layers
    heads: int = 4                # its attention heads
    rank: int = K                 # r of the WEIGHTS delta Δ = U Vfᵀ
    steps: int = 1500             # training steps
    batch: int = 32               # prompts per step
    lr: float = 3e-3              # AdamW learning rate (cosine decay to 10%)
    min_digits: int = 1           # payload lengths drawn per batch from this range
    max_digits: int = 120
    answer_weight: float = 0.0    # weight of the end-to-end answer loss (soft machine)
    answer_every: int = 10        # steps between answer-loss batches
    answer_rows: int = 2          # prompts in an answer-loss batch (soft runs are slow)
    seed: int = 0
    alphabet: Alphabet = DEFAULT_ALPHABET  # the machine's symbols (V), prompts and programs

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, "
                             f"{self.max_digits}")
        for name in ("hidden", "layers", "heads", "rank", "steps", "batch", "answer_every",
                     "answer_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class Problem(NamedTuple):
    f: tuple[int, ...]   # f(0..9)
    prompt: str
    answer: str


def held_out(f: tuple[int, ...]) -> bool:
    """Whether a function belongs to the evaluation set (a fixed 20% by a hash of its table)."""
    return hashlib.sha256(bytes(f)).digest()[0] % 5 == 0


def random_function(rng: random.Random, evaluation: bool) -> tuple[int, ...]:
    """A uniform digit map, from the held-out fifth if ``evaluation`` else from the rest."""
    while True:
        f = tuple(rng.randrange(K) for _ in range(K))
        if held_out(f) == evaluation:
            return f


def make_problem(f: tuple[int, ...], payload: str) -> Problem:
    pairs = " ".join(f"{x}>{y}" for x, y in enumerate(f))
    return Problem(f, f"f: {pairs} ; apply f to {payload}",
                   "".join(str(f[int(d)]) for d in payload))


def problems(rng: random.Random, n: int, digits: int, evaluation: bool) -> list[Problem]:
    """``n`` problems with ``digits``-digit payloads."""
    return [make_problem(random_function(rng, evaluation),
                         "".join(str(rng.randrange(K)) for _ in range(digits))) for _ in range(n)]


# ================================================================ the controller's side

class WeightHead(nn.Module):
    """Metatoken hidden states ``[B, M, H]`` → one LowRankDelta per target ``(out, in)``.

    Metatoken m writes column m of the factors: ``U[:, m] = P_u LN(h_m)``,
    ``Vf[:, m] = P_v LN(h_m)`` (so ``r = M`` here; the general head, which mixes M states
    into r codes, is ``homoiconic.WeightHead`` on the weight-channel branch — same
    interface).
    """

    def __init__(self, hidden: int, targets: dict[str, tuple[int, int]], rank: int,
                 n_meta: int) -> None:
        super().__init__()
        if rank != n_meta:
            raise ValueError(f"this WeightHead writes one factor column per metatoken: rank "
                             f"({rank}) must equal n_meta ({n_meta})")
        self.n_meta, self.names = n_meta, tuple(targets)
        self.norm = nn.LayerNorm(hidden)
        self.proj_u = nn.ModuleList(nn.Linear(hidden, o) for o, _ in targets.values())
        self.proj_v = nn.ModuleList(nn.Linear(hidden, i) for _, i in targets.values())

    def forward(self, h: Tensor) -> dict[str, LowRankDelta]:
        hn = self.norm(h)                                                     # [B, M, H]
        return {n: LowRankDelta(pu(hn).transpose(1, 2), pv(hn).transpose(1, 2))  # [B, O|I, r]
                for n, pu, pv in zip(self.names, self.proj_u, self.proj_v)}


class FunctionReader(nn.Module):
    """The controller for this task: a tiny Llama reads the prompt and M metatokens; the
    metatoken states become a WEIGHTS delta (channel on) or ten DATA slot values (off)."""

    def __init__(self, cfg: IncontextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V = cfg.alphabet.size
        self.vocab = V + K                                  # symbols, then the metatokens
        ccfg = ControllerConfig(hidden_size=cfg.hidden, num_layers=cfg.layers,
                                num_heads=cfg.heads, intermediate_size=4 * cfg.hidden)
        self.lm = build_tiny_llama(ccfg, self.vocab).model  # the decoder stack, no LM head
        if cfg.channel:
            self.head: nn.Module = WeightHead(cfg.hidden, {"apply": (V, V)}, cfg.rank, K)
        else:
            self.head = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, V))

    def tokens(self, prompts: list[str]) -> Tensor:
        """``[B, T]`` token ids: the prompt up to its first ';' (the definitions), then the
        metatokens. The controller writes f as soon as it is defined; the payload is the
        machine's input, so neither the LM's work nor its positions grow with it."""
        alpha = self.cfg.alphabet
        V = alpha.size
        rows = [alpha.encode(p.partition(";")[0] + ";") + list(range(V, V + K))
                for p in prompts]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("prompts of one batch must have the same length")
        return torch.tensor(rows)

    def forward(self, prompts: list[str]) -> Tensor:
        """Channel on: the deltas ``Δ [B, V, V]``; off: the slot value logits ``[B, K, V]``."""
        ids = self.tokens(prompts)
        h = self.lm(input_ids=ids).last_hidden_state[:, -K:]                 # [B, M, H]
        if self.cfg.channel:
            d = self.head(h)["apply"]
            return torch.einsum("bor,bir->boi", d.u, d.v)                     # Δ = U Vfᵀ
        return self.head(h)                                                   # [B, K, V]


def apply_logits(delta: Tensor) -> Tensor:
    """``[B, K, V]``: APPLY's logits ``s · Δ e_x`` for every digit x (the OEU's APPLY path)."""
    return APPLY_SCALE * delta[:, :, :K].transpose(1, 2)


def function_logits(reader: FunctionReader, out: Tensor) -> Tensor:
    """``[B, K, V]``: what the machine will use as f(x), as logits, either way."""
    return apply_logits(out) if reader.cfg.channel else out


def weights_loss(reader: FunctionReader, out: Tensor, f: Tensor) -> tuple[Tensor, float]:
    """CE of the function the machine would run against f(x) for every digit x; and the
    fraction of functions whose ten entries are all right."""
    logits = function_logits(reader, out)                                     # [B, K, V]
    loss = F.cross_entropy(logits.flatten(0, 1), f.flatten())
    exact = (logits.argmax(-1) == f).all(-1).float().mean().item()
    return loss, exact


def programs_for(reader: FunctionReader, out: Tensor) -> list[Program]:
    """The expert program of each row with the controller's function written in (hard)."""
    table = function_logits(reader, out).argmax(-1).tolist()                 # [B, K]
    alpha = reader.cfg.alphabet
    V, end = alpha.size, alpha.end
    p = fixed_program(reader.cfg.channel, alpha)
    progs = []
    for row in table:
        slots = list(p.slots)
        if reader.cfg.channel:   # the WEIGHTS slot's table: argmax_v Δ[v, x] for every x
            slots[_F_ADDR] = Slot.weights(row + [end] * (V - K))
        else:
            for x, y in enumerate(row):
                slots[_TAB_ADDR + x] = Slot.data(y)
        progs.append(replace(p, slots=tuple(slots)))
    return progs


def answer_loss(reader: FunctionReader, machine: Machine, batch: list[Problem],
                max_steps: int | None = None) -> Tensor:
    """End-to-end: the soft machine runs the expert program with the controller's function
    (a WEIGHTS delta, or DATA slot distributions) and the answer's cross-entropy is taken on
    the output slots' value distributions. Differentiable into the LM and its head."""
    out = reader([p.prompt for p in batch])
    alpha = reader.cfg.alphabet
    program = fixed_program(reader.cfg.channel, alpha)
    n_out = max(len(p.answer) for p in batch) + 1
    state = machine.load_batch([program] * len(batch), [p.prompt for p in batch], out_size=n_out)
    swm = machine.memory_for(state.memory.shape[-1])
    lay = swm.layout
    if reader.cfg.channel:
        state = with_weights(state, _F_ADDR, out)
    else:
        mem = state.memory.clone()                                            # [B, N, D]
        mem[:, _TAB_ADDR:_TAB_ADDR + K, lay.field("val").slice] = out.softmax(-1)
        state = state._replace(memory=mem)
    if max_steps is None:
        lens = max(len(p.prompt) for p in batch)
        max_steps = 3 * lens + (40 if reader.cfg.channel else 80) * n_out + 20
    state = machine.run(state, max_steps, hard=False)
    out_base = len(program.slots) + len(batch[0].prompt) + 1
    loss = state.memory.new_zeros(())
    for r, p in enumerate(batch):
        target = alpha.encode(p.answer) + [alpha.end]
        probs = lay.get(state.memory[r, out_base:out_base + len(target)], "val")  # [n, V]
        loss = loss - torch.log(probs[torch.arange(len(target)), target] + 1e-6).mean()
    return loss / len(batch)


@torch.no_grad()
def evaluate(reader: FunctionReader, digits: int, n: int, seed: int = 1234,
             batch: int = 50) -> tuple[float, float]:
    """Exact match of the free-running hard machine on ``n`` held-out functions with
    ``digits``-digit payloads; and the fraction whose ten entries were all decoded right."""
    from llamacpu.machine.machine import run_batch

    rng = random.Random(seed)
    probs = problems(rng, n, digits, evaluation=True)
    ok = full = 0
    reader.eval()
    for s in range(0, n, batch):
        part = probs[s:s + batch]
        out = reader([p.prompt for p in part])
        f = torch.tensor([p.f for p in part])
        full += int((function_logits(reader, out).argmax(-1) == f).all(-1).sum())
        results = run_batch(programs_for(reader, out), [p.prompt for p in part],
                            max_steps=100_000)
        ok += sum(r.fault is None and r.output == p.answer for r, p in zip(results, part))
    reader.train()
    return ok / n, full / n


def train(cfg: IncontextConfig, log_every: int = 100, log=print) -> FunctionReader:
    """Train a FunctionReader on random training functions (never a held-out one)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    reader = FunctionReader(cfg)
    opt = torch.optim.AdamW(reader.parameters(), lr=cfg.lr, weight_decay=0.01)
    machine = Machine(MachineConfig(alphabet=cfg.alphabet)) if cfg.answer_weight > 0 else None
    for step in range(cfg.steps):
        lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        digits = rng.randint(cfg.min_digits, cfg.max_digits)
        batch = problems(rng, cfg.batch, digits, evaluation=False)
        out = reader([p.prompt for p in batch])
        loss, exact = weights_loss(reader, out, torch.tensor([p.f for p in batch]))
        total = loss
        if machine is not None and step % cfg.answer_every == 0:
            small = problems(rng, cfg.answer_rows, rng.randint(1, 3), evaluation=False)
            total = total + cfg.answer_weight * answer_loss(reader, machine, small)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
        opt.step()
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            log(f"step {step:5d}  loss {loss.item():.4f}  functions exact {exact:.2f}")
    return reader
