"""The neural operator execution unit (OEU): a learned ALU.

Shapes: B batch, O opcodes, V alphabet size, C carry values (the digits of the base),
H hidden width, r rank of a low-rank delta.

The OEU maps one step's (opcode, operand values, carry, pointer equality) to a result
symbol and a carry, each as a distribution — the machine's ``OEU`` protocol. It is an MLP over one-hot inputs, so it is a
classifier that can be exact: trained on the op tables that expert traces exercise, it
reproduces them, and because it only ever sees one digit column at a time it does not
care how long the numbers are.

Every linear layer takes an optional per-sample low-rank delta (``W + U Vᵀ`` for each
batch row), which is how a WEIGHTS slot becomes a new operation (APPLY) in the
weight-token issue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llamacpu.core.interp import TraceStep
from llamacpu.core.isa import DEFAULT_ALPHABET, OPS, SPEC, Alphabet, Op, Role, Write
from llamacpu.machine.interfaces import OEUOutput

__all__ = [
    "OEUConfig", "ALUOut", "LowRankDelta", "LowRankLinear", "NeuralOEU", "WRITES_VAL",
    "OEUExamples", "examples_from_traces", "merge_examples", "oeu_loss", "operand_usage",
    "carry_usage",
]

WRITES_VAL = tuple(s.op for s in OPS if s.writes_result)
"""Ops whose result symbol the OEU computes and the machine writes (MOV's only with an
immediate source): its training targets. APPLY's result comes from a WEIGHTS slot."""


def _operand_index(op: Op, k: int) -> int | None:
    """Which operand of ``op`` is its k-th symbol operand (a: k = 0, b: k = 1), if any."""
    return SPEC[op].operand(k)


def operand_usage() -> Tensor:
    """[O, 3] 0/1: whether each built-in op reads a, b and the pointer-equality bit (the ops
    that write a comparison of pointer operands: PEQ)."""
    u = torch.zeros(len(OPS), 3)
    for s in OPS:
        u[s.op, 0] = s.operand(0) is not None
        u[s.op, 1] = s.operand(1) is not None
        u[s.op, 2] = s.writes == Write.VAL and Role.PTR in s.roles
    return u


def carry_usage() -> Tensor:
    """[O, 2] 0/1: whether each built-in op reads the carry (ADD SUB MUL DIV GETC) and
    whether it writes it (ADD SUB MUL DIV SETC)."""
    u = torch.zeros(len(OPS), 2)
    for s in OPS:
        u[s.op, 0] = s.reads_carry
        u[s.op, 1] = s.writes_carry
    return u


@dataclass(frozen=True)
class OEUConfig:
    alphabet: Alphabet = DEFAULT_ALPHABET  # operand/result symbols (V) and carry digits (C)
    hidden: int = 256                      # width of the two hidden layers
    # the carry by construction: zeroed at the input of ops that do not read it, passed
    # through (not learned) by ops that do not write it. Checkpoints written before it
    # existed load with it off: their OEU learned the pass-through (learn/learned.py).
    carry_gate: bool = True

    def __post_init__(self) -> None:
        if self.hidden < 8:
            raise ValueError(f"OEUConfig.hidden must be at least 8, got {self.hidden}")

    @property
    def n_ops(self) -> int:
        """O, the built-in ops: a neural OEU does not learn ops added by ``isa.define_op``."""
        return len(OPS)

    @property
    def n_carry(self) -> int:
        return self.alphabet.base

    @property
    def in_features(self) -> int:
        return self.n_ops + 2 * self.alphabet.size + self.n_carry + 1


class ALUOut(NamedTuple):
    """Logits of one ALU step."""

    result: Tensor  # [B, V] the symbol written (for ops that write one)
    carry: Tensor   # [B, C] the carry register after the op


class LowRankDelta(NamedTuple):
    """A per-sample weight delta ``U Vᵀ`` for one linear layer."""

    u: Tensor  # [B, out, r]
    v: Tensor  # [B, in, r]


class LowRankLinear(nn.Linear):
    """``nn.Linear`` that adds a per-sample low-rank delta: y = x Wᵀ + b + (x V) Uᵀ."""

    def forward(self, x: Tensor, delta: LowRankDelta | None = None) -> Tensor:  # x: [B, in]
        y = super().forward(x)
        if delta is not None:
            # (x V) Uᵀ, per batch row: [B, in] · [B, in, r] → [B, r]; · [B, out, r]ᵀ → [B, out]
            y = y + torch.einsum("bi,bir,bor->bo", x, delta.v, delta.u)
        return y


class NeuralOEU(nn.Module):
    """A learned ALU implementing the machine's OEU protocol (``machine.OEU``/``HardOEU``).

    Inputs an op does not read are zeroed before the MLP (``operand_usage``): INC sees no
    operand symbols, only PEQ sees the pointer-equality bit. So the unit cannot pick up
    spurious dependencies, and what it learns for an op transfers to operands it has not
    seen with that op whenever the op ignores them.

    With ``cfg.carry_gate`` the carry gets the same treatment (``carry_usage``): ops that
    do not read it see carry 0, and ops that do not write it pass it through untouched,
    outside the MLP. MIN's table is then a function of (a, b) alone, V² entries instead of
    V²·C, and no op has a carry it could forget; the certificate relies on both
    (``learn/certify.py``), and tests check them on untrained weights.
    """

    def __init__(self, cfg: OEUConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or OEUConfig()
        V, C, H = cfg.alphabet.size, cfg.n_carry, cfg.hidden
        self.layers = nn.ModuleList([LowRankLinear(cfg.in_features, H), LowRankLinear(H, H)])
        self.head = LowRankLinear(H, V + C)
        self._split = (V, C)
        self.register_buffer("usage", operand_usage(), persistent=False)
        self.register_buffer("carry_use", carry_usage(), persistent=False)

    @property
    def carry_gated(self) -> bool:
        """Whether the carry is gated by construction (see the class docstring)."""
        return self.cfg.carry_gate

    def logits(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor, ptr_eq: Tensor,
               deltas: Sequence[LowRankDelta | None] | None = None) -> ALUOut:
        """op [B, O], a/b [B, V], carry [B, C] (distributions), ptr_eq [B] → logits.

        ``deltas`` gives one optional LowRankDelta per linear layer (3 of them).
        """
        out = self._mlp(op, a, b, carry, ptr_eq, deltas)
        if not self.cfg.carry_gate:
            return out
        # ops that do not write the carry: logits whose softmax is the carry in
        w = self._writes_carry(op)
        kept = carry.clamp_min(1e-30).log()
        return ALUOut(out.result, w * out.carry + (1 - w) * kept)

    def _writes_carry(self, op: Tensor) -> Tensor:
        return (op @ self.carry_use[:, 1].to(op.dtype))[:, None]             # [B, 1]

    def _mlp(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor, ptr_eq: Tensor,
             deltas: Sequence[LowRankDelta | None] | None) -> ALUOut:
        use = op @ self.usage.to(op.dtype)                                    # [B, 3]
        if self.cfg.carry_gate:
            carry = carry * (op @ self.carry_use[:, 0].to(op.dtype))[:, None]
        x = torch.cat([op, a * use[:, :1], b * use[:, 1:2], carry,
                       (ptr_eq * use[:, 2])[:, None]], dim=-1)               # [B, O + 2V + C + 1]
        ds = list(deltas) if deltas is not None else [None] * 3
        if len(ds) != 3:
            raise ValueError(f"NeuralOEU takes 3 deltas (one per linear layer), got {len(ds)}")
        for layer, d in zip(self.layers, ds[:2]):
            x = F.gelu(layer(x, d))
        result, carry_out = self.head(x, ds[2]).split(self._split, dim=-1)
        return ALUOut(result, carry_out)

    def forward(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor, ptr_eq: Tensor,
                deltas: Sequence[LowRankDelta | None] | None = None) -> OEUOutput:
        """The machine's OEU protocol: result [B, V] and carry [B, C] distributions."""
        out = self._mlp(op, a, b, carry, ptr_eq, deltas)
        carry_out = out.carry.softmax(-1)
        if self.cfg.carry_gate:  # exactly the carry in where the op does not write it
            w = self._writes_carry(op)
            carry_out = w * carry_out + (1 - w) * carry
        return OEUOutput(out.result.softmax(-1), carry_out)

    @torch.no_grad()
    def hard(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
             ptr_eq: Tensor) -> tuple[Tensor, Tensor]:
        """The machine's discrete fast path: integer tensors [B] in, argmax indices out."""
        cfg = self.cfg
        dt = self.head.weight.dtype
        out = self._mlp(F.one_hot(op, cfg.n_ops).to(dt), F.one_hot(a, cfg.alphabet.size).to(dt),
                        F.one_hot(b, cfg.alphabet.size).to(dt),
                        F.one_hot(carry, cfg.n_carry).to(dt), ptr_eq.to(dt), None)
        carry_out = out.carry.argmax(-1)
        if cfg.carry_gate:
            carry_out = torch.where(self.carry_use[op, 1].bool(), carry_out, carry)
        return out.result.argmax(-1), carry_out


class OEUExamples(NamedTuple):
    """ALU steps gathered from expert traces, as index tensors ``[E]``."""

    op: Tensor         # opcode
    a: Tensor          # first symbol operand (0 where the op has none)
    b: Tensor          # second symbol operand (0 where the op has none)
    carry: Tensor      # carry in
    ptr_eq: Tensor     # PEQ's pointers equal (0/1)
    result: Tensor     # the symbol written; -100 where the op writes none (ignored)
    carry_out: Tensor  # carry out

    def __len__(self) -> int:
        return int(self.op.shape[0])


def examples_from_traces(traces: Sequence[Sequence[TraceStep]]) -> OEUExamples:
    """Every step of the given traces as an ALU example, deduplicated.

    Operands follow the machine's convention: ``a`` and ``b`` are the first and second
    SRC/SLOT operand's symbol (the slot's val, or the immediate).
    """
    rows: set[tuple[int, ...]] = set()
    for trace in traces:
        for t in trace:
            ia, ib = _operand_index(t.op, 0), _operand_index(t.op, 1)
            a = int(t.values[ia]) if ia is not None else 0
            b = int(t.values[ib]) if ib is not None else 0
            eq = int(t.op == Op.PEQ and t.values[1] == t.values[2])
            result = int(t.result) if t.op in WRITES_VAL and t.result is not None else -100
            rows.add((int(t.op), a, b, int(t.carry_in), eq, result, int(t.carry_out)))
    if not rows:
        z = torch.zeros(0, dtype=torch.long)
        return OEUExamples(z, z, z, z, z, z, z)
    cols = torch.tensor(sorted(rows), dtype=torch.long).T
    return OEUExamples(*cols)


def merge_examples(*parts: OEUExamples) -> OEUExamples:
    """The union of example sets, deduplicated (a replay buffer grows this way)."""
    parts = tuple(p for p in parts if len(p))
    if not parts:
        return examples_from_traces(())
    rows = torch.unique(torch.cat([torch.stack(list(p), 1) for p in parts]), dim=0)
    return OEUExamples(*rows.T)


def oeu_loss(oeu: NeuralOEU, ex: OEUExamples) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of result and carry; exact-match accuracy of whole steps. A gated
    carry is learned only where the op writes it (elsewhere it is the carry in)."""
    cfg = oeu.cfg
    V, C = cfg.alphabet.size, cfg.n_carry
    out = oeu.logits(F.one_hot(ex.op, cfg.n_ops).float(), F.one_hot(ex.a, V).float(),
                     F.one_hot(ex.b, V).float(), F.one_hot(ex.carry, C).float(),
                     ex.ptr_eq.float())
    writes = ex.result >= 0
    learned = oeu.carry_use[ex.op, 1].bool() if cfg.carry_gate else torch.ones_like(writes)
    loss = (F.cross_entropy(out.carry[learned], ex.carry_out[learned]) if learned.any()
            else out.carry.sum() * 0)
    if writes.any():
        loss = loss + F.cross_entropy(out.result[writes], ex.result[writes])
    with torch.no_grad():
        ok = out.carry.argmax(-1) == ex.carry_out
        ok &= ~writes | (out.result.argmax(-1) == ex.result.clamp(min=0))
    return loss, {"oeu_acc": ok.float().mean().item()}
