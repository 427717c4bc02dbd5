"""The neural operator execution unit (OEU): a learned ALU.

Shapes: B batch, O opcodes, V alphabet size, C carry values (the digits of the base),
H hidden width, r rank of a low-rank delta.

The OEU maps one step's (opcode, operand values, carry) to a result symbol, a carry and a
condition flag, each as a distribution. It is an MLP over one-hot inputs, so it is a
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

from .interp import TraceStep
from .isa import DEFAULT_ALPHABET, SPEC, Alphabet, Op, Role

__all__ = [
    "OEUConfig", "ALUOut", "LowRankDelta", "LowRankLinear", "NeuralOEU", "ALU_OPS",
    "VALUE_OPS", "CONDITION_OPS", "OEUExamples", "examples_from_traces", "oeu_loss",
]

VALUE_OPS = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD, Op.EQ, Op.LT, Op.MIN, Op.MAX,
             Op.SETC, Op.GETC)
"""Ops whose result symbol (and carry) the OEU computes."""
CONDITION_OPS = (Op.JZ, Op.JNZ, Op.JEQ, Op.JNE)
"""Ops whose condition flag (jump taken) the OEU computes."""
ALU_OPS = VALUE_OPS + CONDITION_OPS


@dataclass(frozen=True)
class OEUConfig:
    alphabet: Alphabet = DEFAULT_ALPHABET  # operand/result symbols (V) and carry digits (C)
    hidden: int = 256                      # width of the two hidden layers
    max_rank: int = 8                      # largest rank a low-rank delta may have

    def __post_init__(self) -> None:
        if self.hidden < 8:
            raise ValueError(f"OEUConfig.hidden must be at least 8, got {self.hidden}")
        if self.max_rank < 1:
            raise ValueError(f"OEUConfig.max_rank must be at least 1, got {self.max_rank}")

    @property
    def n_ops(self) -> int:
        return len(Op)

    @property
    def n_carry(self) -> int:
        return self.alphabet.base

    @property
    def in_features(self) -> int:
        return self.n_ops + 2 * self.alphabet.size + self.n_carry


class ALUOut(NamedTuple):
    """Logits of one ALU step."""

    result: Tensor  # [B, V]
    carry: Tensor   # [B, C]
    flag: Tensor    # [B] condition (jump taken) logit


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
    """A learned ALU: (op, a, b, carry) distributions → result, carry and flag logits."""

    def __init__(self, cfg: OEUConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or OEUConfig()
        V, C, H = cfg.alphabet.size, cfg.n_carry, cfg.hidden
        self.layers = nn.ModuleList([LowRankLinear(cfg.in_features, H), LowRankLinear(H, H)])
        self.head = LowRankLinear(H, V + C + 1)
        self._split = (V, C, 1)

    def forward(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
                deltas: Sequence[LowRankDelta | None] | None = None) -> ALUOut:
        """op [B, O], a/b [B, V], carry [B, C] (probabilities or one-hots) → ALUOut.

        ``deltas`` gives one optional LowRankDelta per linear layer (3 of them).
        """
        x = torch.cat([op, a, b, carry], dim=-1)  # [B, O + 2V + C]
        ds = list(deltas) if deltas is not None else [None] * 3
        if len(ds) != 3:
            raise ValueError(f"NeuralOEU takes 3 deltas (one per linear layer), got {len(ds)}")
        for layer, d in zip(self.layers, ds[:2]):
            x = F.gelu(layer(x, d))
        result, carry_out, flag = self.head(x, ds[2]).split(self._split, dim=-1)
        return ALUOut(result, carry_out, flag.squeeze(-1))

    def probs(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
              deltas: Sequence[LowRankDelta | None] | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
        """Result [B, V] and carry [B, C] distributions, and the flag probability [B]."""
        out = self(op, a, b, carry, deltas)
        return out.result.softmax(-1), out.carry.softmax(-1), out.flag.sigmoid()


class OEUExamples(NamedTuple):
    """ALU steps gathered from expert traces, as index tensors."""

    op: Tensor      # [E] opcode index
    a: Tensor       # [E] first symbol operand
    b: Tensor       # [E] second symbol operand (0 where the op has one)
    carry: Tensor   # [E] carry in
    result: Tensor  # [E] result symbol (-100 where the op produces none: ignored)
    carry_out: Tensor  # [E]
    flag: Tensor    # [E] float, 1.0 when a conditional jump is taken


def _symbol_operands(t: TraceStep) -> tuple[int, int]:
    roles = SPEC[t.op].roles
    vals = [v for r, v in zip(roles, t.values) if r == Role.SRC]
    vals += [0, 0]
    return int(vals[0]), int(vals[1])


def examples_from_traces(traces: Sequence[Sequence[TraceStep]]) -> OEUExamples:
    """Every ALU step (VALUE_OPS and CONDITION_OPS) of the given traces, deduplicated."""
    seen: set[tuple[int, ...]] = set()
    rows: list[tuple[int, ...]] = []
    for trace in traces:
        for t in trace:
            if t.op not in ALU_OPS:
                continue
            a, b = _symbol_operands(t)
            if t.op in CONDITION_OPS:
                result, flag = -100, int(t.next_pc != t.pc + 1)
            else:
                result, flag = int(t.result), 0
            row = (int(t.op), a, b, int(t.carry_in), result, int(t.carry_out), flag)
            if row not in seen:
                seen.add(row)
                rows.append(row)
    if not rows:
        z = torch.zeros(0, dtype=torch.long)
        return OEUExamples(z, z, z, z, z, z, z.float())
    cols = torch.tensor(rows, dtype=torch.long).T
    return OEUExamples(*cols[:6], cols[6].float())


def oeu_loss(oeu: NeuralOEU, ex: OEUExamples) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of result and carry, BCE of the flag; exact-match accuracy per head."""
    cfg = oeu.cfg
    V, C = cfg.alphabet.size, cfg.n_carry
    out = oeu(F.one_hot(ex.op, cfg.n_ops).float(), F.one_hot(ex.a, V).float(),
              F.one_hot(ex.b, V).float(), F.one_hot(ex.carry, C).float())
    is_cond = ex.result < 0
    loss = out.result.new_zeros(())
    metrics: dict[str, float] = {}
    if (~is_cond).any():
        v = ~is_cond
        loss = loss + F.cross_entropy(out.result[v], ex.result[v])
        loss = loss + F.cross_entropy(out.carry[v], ex.carry_out[v])
        ok = (out.result[v].argmax(-1) == ex.result[v]) & (out.carry[v].argmax(-1)
                                                          == ex.carry_out[v])
        metrics["oeu_value_acc"] = ok.float().mean().item()
    if is_cond.any():
        loss = loss + F.binary_cross_entropy_with_logits(out.flag[is_cond], ex.flag[is_cond])
        ok = (out.flag[is_cond] > 0).float() == ex.flag[is_cond]
        metrics["oeu_flag_acc"] = ok.float().mean().item()
    return loss, metrics
