"""The differentiable machine (layer 6 of ARCHITECTURE.md): fetch, decode, read, OEU, write,
next PC, halt — every step a tensor operation over the slot memory of ``llamacpu.machine.memory``.

One step::

    fetch     ins = read(M, pc)                       the instruction slot at the PC
    decode    op, modes, field keys p0..p3, imm       one-hot fields of that slot
    operands  direct = read(M, p_f); indirect = read(M, direct.p0)   (``[p]`` → p.p0)
              row_f = m_dir·direct + m_ind·indirect;  val_f = row_f.val + m_imm·imm
    OEU       (result, carry) = oeu(op, a, b, carry, ptr_eq)          (pluggable)
    decide    (p_taken, write_gate, p_halt) = sequencer(StepView)     (pluggable)
    write     M ← M ∘ (1 − g w eᵀ) + g w uᵀ at the destination w = address of operand 0;
              e, u: the value field (value ops), the pointer field p0 (LEA INC DEC) or the
              whole slot (MOV d, s); writing a field of an EMPTY slot makes it DATA
    next pc   p_halt·pc + (1 − p_halt)·(p_taken·target + (1 − p_taken)·(pc + 1));
              CALL pushes pc + 1, RET pops; halted ← halted + (1 − halted)·p_halt

Three ways to run the same step, one semantics (docs/lasm.md, ``interp.transition``):

- **soft** (``hard=False``): reads are attention (``softmax(β q·Kᵀ) M`` through the fused
  pointer-read kernel), every decoded field a distribution, the OEU mixes its op tables by
  the input distributions. Differentiable end to end.
- **hard, differentiable**: the same code with every distribution snapped to a one-hot
  (straight-through: exact forward, the soft gradient backward). Used by :meth:`Machine.step`
  in hard mode whenever autograd needs it (state or machine parameters require grad).
- **hard, discrete**: the fast exact path. Memory is decoded once into integer fields
  ``[B, N, 11]`` and every read is a gather by address, O(B·P) per read instead of O(B·N·D),
  and the batch's rows step in lockstep. :meth:`Machine.run_batch` uses it; it also detects
  the faults of the reference interpreter, per row.

The OEU and the control decisions are pluggable (:class:`OEU`, :class:`Sequencer`), so a
neural OEU or an LLM controller replaces the symbolic ones without touching the machine.
Jump targets always come from the instruction's target field, never from the sequencer.

Shape letters::

    B  batch rows                N  slots              D  slot width (SlotLayout.width)
    A  address-key width (2 L)   F  address fields (4) O  opcodes (27)
    M  operand modes (4)         V  alphabet symbols   C  carry digits (= base)
    S  return-stack entries      T  steps              K  slot kinds (4)
    Pw slots of the weights bank (the longest program of the batch)

WEIGHTS slots (the weight-token channel, ``isa`` module docstring). Their functions live in
a side bank aligned with the program's slots: ``MachineState.weights [B, Pw, V, V]`` holds
each slot's delta Δ (zero-base linear layer, ``Δ[v, x]`` = logit of result v for input x);
the discrete path keeps the tables ``[B, Pw, V]`` (``table[x] = argmax_v Δ[v, x]``). APPLY
reads the bank with the same address weights as its memory read of operand w::

    APPLY d, w, a   result = softmax(s · Δ_w a),  Δ_w = Σ_n w_n Δ_n       (s: APPLY_SCALE)
    WSET  w, a, b   Δ_n ← Δ_n ∘ (1 − g w_n 1 aᵀ) + g w_n b aᵀ              (column a ← b)
    MOV   d, s      Δ_n ← Δ_n (1 − g d_n) + g d_n Δ_s                      (with the slot)

so soft mode is differentiable in the bank, in which slot is read, and in the operands;
the hard paths are exact against the interpreter's tables.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F_nn
from torch import Tensor, nn

from llamacpu.core.interp import (
    DEFAULT_MAX_STEPS,
    DEFAULT_STACK_SIZE,
    MachineFault,
    Result,
    StepFault,
    TraceStep,
    _uses_weights,
    transition,
)
from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    N_PORTS,
    NUM_FIELDS,
    OPS,
    PORT_IN,
    PORT_OUT,
    SPEC,
    Alphabet,
    Kind,
    MemoryImage,
    Mode,
    Op,
    Program,
    Role,
    Slot,
    default_out_size,
    memory_image,
)
from llamacpu.machine.memory import (
    DEFAULT_SHARPNESS,
    AddressCodec,
    HybridSWM,
    SlotLayout,
    straight_through,
)

__all__ = [
    "OEU", "HardOEU", "OEUOutput", "SymbolicOEU", "exact_op",
    "StepView", "Decisions", "Sequencer", "HardSequencer", "SymbolicSequencer",
    "MachineConfig", "MachineState", "MachineResult", "Machine", "AttentionMaps",
    "default_machine", "load_batch", "run_batch", "run_program", "draw_heatmap",
    "APPLY_SCALE", "apply_result", "with_weights",
]

_O, _F, _M, _K = len(Op), NUM_FIELDS, len(Mode), len(Kind)
_TINY = 1e-12  # floor of the normalisers (mass of the writing / jumping ops)
_CHECK_EVERY = 8  # discrete steps between two "is any row still running?" checks

# Columns of the discrete path's per-op feature table (see _op_table_arrays).
_FT_AB, _FT_T = slice(0, 2), slice(2, 3)      # fields of the operands a, b; the jump target
_FT_DELTA = 3                                 # INC/DEC step
_FT_CHECK = slice(4, 5)                       # op-specific fault check (see _discrete_step)
_FT_USED = slice(5, 9)                        # operand f exists
_FT_WRITE = slice(9, 12)                      # write kind, column written, EMPTY -> DATA
_FT_WRITE_IMM = slice(12, 15)                 # the same when operand 2 is an immediate
_FT_WIDTH = 15

# Columns of the discrete (integer) view of a slot: kind, op, modes, args, val.
_KIND, _OP, _VAL = 0, 1, 10
_MODES = slice(2, 2 + _F)
_ARGS = slice(2 + _F, 2 + 2 * _F)
_P0 = 2 + _F
_COLS = 3 + 2 * _F
_STATIC = _COLS       # 1 if the slot cannot execute (see Machine._static_bad)
_SCRATCH = _COLS + 1  # written by steps that write no field
_W = _COLS + 2        # stored row width

_VALUE_OPS = (Op.MOV, Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD, Op.EQ, Op.LT, Op.MIN, Op.MAX,
              Op.GETC, Op.PEQ)
_WRITES_VAL = _VALUE_OPS + (Op.APPLY,)
"""Ops whose write replaces d.val: the OEU's value ops and APPLY (the weights bank's)."""
APPLY_SCALE = 10.0
"""s in APPLY's logits s · Δ a: a crisp Δ (0/1 entries) gives the result ~0.9995 mass."""
"""Ops whose write replaces a slot's val (MOV only with an immediate; else the whole slot)."""
_POINTER_OPS = (Op.LEA, Op.INC, Op.DEC)
_CARRY_OPS = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.SETC)
_JUMP_OPS = (Op.JMP, Op.JZ, Op.JNZ, Op.JEQ, Op.JNE, Op.CALL)
_ARITH_CARRY = (Op.ADD, Op.SUB, Op.MUL, Op.DIV)
_COMPARE = (Op.EQ, Op.LT, Op.MIN, Op.MAX)


def apply_result(delta: Tensor, a: Tensor) -> Tensor:
    """APPLY's result distribution: ``softmax(APPLY_SCALE · Δ a)``.

    ``delta [B, V, V]`` (``Δ = U Vᵀ``, the delta of a zero-base linear layer V → V), ``a [B, V]``
    the operand's distribution. Hard mode takes its argmax: ``table[a]``.
    """
    return (APPLY_SCALE * torch.einsum("bvx,bx->bv", delta, a)).softmax(-1)


# ====================================================================== per-op tables

def _first(roles: Sequence[Role], wanted: tuple[Role, ...], skip: int = 0) -> int:
    """Index of the (skip+1)-th operand whose role is in ``wanted`` (0 if there is none)."""
    hits = [i for i, r in enumerate(roles) if r in wanted]
    return hits[skip] if len(hits) > skip else 0


@functools.lru_cache(maxsize=1)
def _op_table_arrays() -> dict[str, np.ndarray]:
    """Everything the machine needs to know per opcode, from ``isa.OPS``, as arrays."""
    src = (Role.SRC, Role.SLOT)
    t: dict[str, np.ndarray] = {
        "a_field": np.array([_first(s.roles, src) for s in OPS]),       # [O] where a is
        "b_field": np.array([_first(s.roles, src, 1) for s in OPS]),    # [O] where b is
        "t_field": np.array([_first(s.roles, (Role.TARGET,)) for s in OPS]),  # [O]
        "delta": np.array([{Op.INC: 1, Op.DEC: -1}.get(s.op, 0) for s in OPS]),
    }
    # write kind: 0 none, 1 the val field, 2 the pointer p0, 3 the whole slot (MOV d, s),
    # 4 the weights bank only (WSET: the slot's fields stay as they are)
    wk = np.zeros(_O, dtype=np.int64)
    wk[list(_WRITES_VAL)] = 1
    wk[list(_POINTER_OPS)] = 2
    wk[Op.MOV] = 3
    wk[Op.WSET] = 4
    t["wkind"] = wk
    valid = np.ones((_O, _F, _M), dtype=bool)     # [O, F, M] the modes an operand accepts
    used = np.zeros((_O, _F), dtype=bool)         # [O, F] operand exists
    for s in OPS:
        for i, role in enumerate(s.roles):
            used[s.op, i] = True
            valid[s.op, i] = [Mode(m) in role.modes for m in range(_M)]
    t.update(valid=valid, used=used)
    # taken[o, a == 0, a == b]: whether a jump op goes to its target
    taken = np.zeros((_O, 2, 2), dtype=bool)
    taken[[Op.JMP, Op.CALL, Op.RET]] = True
    taken[Op.JZ, 1, :] = True
    taken[Op.JNZ, 0, :] = True
    taken[Op.JEQ, :, 1] = True
    taken[Op.JNE, :, 0] = True
    t["taken"] = taken
    writes = np.zeros(_O, dtype=bool)
    writes[list(_WRITES_VAL + _POINTER_OPS) + [Op.WSET]] = True
    t["writes"] = writes
    one_hot = np.eye(_F)
    t["asel"] = one_hot[t["a_field"]]                           # [O, F]
    t["bsel"] = one_hot[t["b_field"]]
    tsel = one_hot[t["t_field"]]
    tsel[[s.op for s in OPS if not s.is_jump]] = 0
    t["tsel"] = tsel                                            # [O, F] target field of jumps
    value_nomov = np.zeros(_O)
    value_nomov[[o for o in _WRITES_VAL if o != Op.MOV]] = 1
    t["value_nomov"] = value_nomov
    jumps = np.zeros(_O)
    jumps[list(_JUMP_OPS) + [Op.RET]] = 1
    t["jumps"] = jumps
    # The discrete path's packed per-op features (one lookup per step), columns _FT_*.
    feat = np.zeros((_O, _FT_WIDTH), dtype=np.int64)
    feat[:, 0], feat[:, 1], feat[:, 2] = t["a_field"], t["b_field"], t["t_field"]
    feat[:, _FT_DELTA] = t["delta"]
    checks = {Op.ADD: 1, Op.SUB: 1, Op.MUL: 1, Op.DIV: 2, Op.MOD: 3, Op.SETC: 4, Op.INC: 5,
              Op.DEC: 5, Op.CALL: 6, Op.RET: 7}
    for o, k in checks.items():
        feat[o, _FT_CHECK] = k
    feat[:, _FT_USED] = used
    for cols, kinds in ((_FT_WRITE, wk), (_FT_WRITE_IMM, np.where(np.arange(_O) == Op.MOV, 1, wk))):
        column = np.choose(kinds, [_SCRATCH, _VAL, _P0, _SCRATCH, _SCRATCH])
        feat[:, cols] = np.stack([kinds, column, (kinds == 1) | (kinds == 2)], 1)
    t["feat"] = feat
    return t


# ====================================================================== the OEU

class OEUOutput(NamedTuple):
    """What the OEU computes in one step."""

    result: Tensor  # [B, V] the symbol the op writes, given that it writes one
    carry: Tensor   # [B, C] the carry register after the op (passed through by most ops)


@runtime_checkable
class OEU(Protocol):
    """The operator execution unit: one step's value computation, on distributions.

    ``op`` [B, O] opcode distribution; ``a``, ``b`` [B, V] the operand symbols (first and
    second SRC operand, MOV's source); ``carry`` [B, C]; ``ptr_eq`` [B] the probability that
    PEQ's two pointers are equal. Returns :class:`OEUOutput`.
    """

    def __call__(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
                 ptr_eq: Tensor) -> OEUOutput: ...


@runtime_checkable
class HardOEU(Protocol):
    """Optional fast path of an OEU on integer tensors ``[B]``: (result, carry_out)."""

    def hard(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
             ptr_eq: Tensor) -> tuple[Tensor, Tensor]: ...


def exact_op(op: Tensor, a: Tensor, b: Tensor, carry: Tensor, ptr_eq: Tensor,
             alphabet: Alphabet) -> tuple[Tensor, Tensor]:
    """(result, carry_out) of every value op on broadcastable integer tensors (docs/lasm.md).

    The definition the symbolic tables are built from. Non-value ops pass ``a`` through as
    result and keep the carry. Cases that fault (non-digits in arithmetic, division by zero,
    a DIV quotient that is not a digit) give some in-range value: the machine faults on them.
    """
    base, V = alphabet.base, alphabet.size
    bz = b.clamp(min=1)
    add = a + b + carry                                                    # r = a + b + C
    sub = a - b - carry                                                    # r = a − b − C
    mul = a * b + carry                                                    # r = a · b + C
    num = carry * base + a                                                 # r = C · base + a
    res = torch.where(op == Op.ADD, add % base, a)
    res = torch.where(op == Op.SUB, sub % base, res)
    res = torch.where(op == Op.MUL, mul % base, res)
    res = torch.where(op == Op.DIV, num // bz, res)
    res = torch.where(op == Op.MOD, a % bz, res)
    res = torch.where(op == Op.EQ, (a == b).long(), res)
    res = torch.where(op == Op.LT, (a < b).long(), res)
    res = torch.where(op == Op.MIN, torch.minimum(a, b), res)
    res = torch.where(op == Op.MAX, torch.maximum(a, b), res)
    res = torch.where(op == Op.GETC, carry, res)
    res = torch.where(op == Op.PEQ, ptr_eq.long(), res)
    cout = torch.where(op == Op.ADD, add // base, carry)
    cout = torch.where(op == Op.SUB, (sub < 0).long(), cout)
    cout = torch.where(op == Op.MUL, mul // base, cout)
    cout = torch.where(op == Op.DIV, num % bz, cout)
    cout = torch.where(op == Op.SETC, a, cout)
    return res.remainder(V), cout.remainder(base)


class SymbolicOEU(nn.Module):
    """The exact OEU: one table per value op, mixed by the input distributions.

    Tables (one-hot rows; with ``learnable=True`` logits ``logit_scale · one-hot`` as
    ``nn.Parameter``s, read through a softmax, so training can change them):

    ========  ==================  ===============================================
    arith     [4, C³, C] ×2       ADD SUB MUL DIV: (a, b, carry) → digit, carry out
    mod       [C², C]             MOD: (a, b) → digit
    compare   [4, V², V]          EQ LT MIN MAX over every symbol
    peq       [2, V]              PEQ: (pointers differ, equal) → 0, 1
    getc      [C, V]              GETC: carry → symbol
    mov       [V, V]              MOV: a → a
    setc      [C, C]              SETC: a → carry
    ========  ==================  ===============================================

    Arithmetic tables cover digits only (non-digit mass is dropped; hard mode faults there).
    A soft step costs O(B·(C³ + V²)·V). Alphabets whose tables would exceed
    ``max_table_entries`` (the 257-symbol bytes alphabet) run in hard mode only, through
    :func:`exact_op`.
    """

    def __init__(self, alphabet: Alphabet = DEFAULT_ALPHABET, learnable: bool = False,
                 logit_scale: float = 12.0, max_table_entries: int = 1 << 25) -> None:
        super().__init__()
        self.alphabet = alphabet
        self.learnable = learnable
        self.logit_scale = logit_scale
        base, V = alphabet.base, alphabet.size
        shapes = self.table_shapes(alphabet)
        entries = sum(math.prod(s) for s in shapes.values())
        self.has_tables = entries <= max_table_entries
        if learnable and not self.has_tables:
            raise ValueError(f"learnable tables for {alphabet.describe()} would hold {entries:,} "
                             f"entries (> max_table_entries = {max_table_entries:,})")
        if self.has_tables:
            for name, table in self._exact_tables().items():
                if learnable:
                    self.register_parameter(f"logits_{name}",
                                            nn.Parameter(table * logit_scale))
                else:
                    self.register_buffer(f"table_{name}", table, persistent=False)
        # The hard path's lookup tables: result and carry_out per (op, a, b, carry), flat.
        self.has_lookup = not learnable and _O * V * V * base <= (1 << 24)
        if self.has_lookup:
            ops = torch.arange(_O)[:, None, None, None]
            a = torch.arange(V)[None, :, None, None]
            b = torch.arange(V)[None, None, :, None]
            c = torch.arange(base)[None, None, None, :]
            res, cout = exact_op(ops, a, b, c, torch.zeros((), dtype=torch.bool), alphabet)
            self.register_buffer("lookup_result", res.flatten(), persistent=False)
            self.register_buffer("lookup_carry", cout.flatten(), persistent=False)

    @staticmethod
    def table_shapes(alphabet: Alphabet) -> dict[str, tuple[int, ...]]:
        """The shape of every table for an alphabet (see the class docstring)."""
        C, V = alphabet.base, alphabet.size
        return {"arith_result": (4, C ** 3, C), "arith_carry": (4, C ** 3, C),
                "mod": (C * C, C), "compare": (4, V * V, V), "peq": (2, V),
                "getc": (C, V), "mov": (V, V), "setc": (C, C)}

    def _exact_tables(self) -> dict[str, Tensor]:
        """One-hot float tables from :func:`exact_op`."""
        alpha = self.alphabet
        C, V = alpha.base, alpha.size
        no = torch.zeros((), dtype=torch.bool)
        arith = torch.tensor([int(o) for o in _ARITH_CARRY])[:, None, None, None]
        dg = torch.arange(C)
        res, cout = exact_op(arith, dg[:, None, None], dg[None, :, None], dg[None, None, :],
                             no, alpha)                                   # [4, C, C, C]
        mod, _ = exact_op(torch.tensor(int(Op.MOD)), dg[:, None], dg[None, :],
                          torch.zeros((), dtype=torch.long), no, alpha)  # [C, C]
        sym = torch.arange(V)
        cmp_ops = torch.tensor([int(o) for o in _COMPARE])[:, None, None]
        cmp, _ = exact_op(cmp_ops, sym[:, None], sym[None, :], torch.zeros((), dtype=torch.long),
                          no, alpha)                                      # [4, V, V]

        def hot(idx: Tensor, n: int) -> Tensor:
            return F_nn.one_hot(idx, n).float()

        return {
            "arith_result": hot(res.remainder(C), C).reshape(4, C ** 3, C),
            "arith_carry": hot(cout, C).reshape(4, C ** 3, C),
            "mod": hot(mod.remainder(C), C).reshape(C * C, C),
            "compare": hot(cmp, V).reshape(4, V * V, V),
            "peq": hot(torch.tensor([0, 1]), V),
            "getc": hot(dg, V),
            "mov": hot(sym, V),
            "setc": hot(dg, C),
        }

    def table(self, name: str, dtype: torch.dtype) -> Tensor:
        """A table's probabilities (softmax of the logits if learnable), in ``dtype``."""
        if not self.has_tables:
            raise ValueError(
                f"SymbolicOEU has no soft tables for {self.alphabet.describe()} (they would "
                f"exceed max_table_entries); run this alphabet in hard mode")
        if self.learnable:
            return torch.softmax(getattr(self, f"logits_{name}").to(dtype), -1)
        return getattr(self, f"table_{name}").to(dtype)

    def forward(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
                ptr_eq: Tensor) -> OEUOutput:
        """Soft evaluation: ``result = Σ_o p_o Σ_{a,b,c} p_a p_b p_c T_o[a, b, c]``,
        normalised over the value ops; ``carry = Σ_o p_o carry_o`` (others keep it)."""
        B = op.shape[0]
        C, V = self.alphabet.base, self.alphabet.size
        dt = a.dtype
        ad, bd = a[:, :C], b[:, :C]                                        # digits only
        abc = (ad[:, :, None, None] * bd[:, None, :, None]
               * carry[:, None, None, :]).reshape(B, C ** 3)               # [B, C³]
        ar_res = torch.einsum("bk,okv->bov", abc, self.table("arith_result", dt))  # [B, 4, C]
        ar_car = torch.einsum("bk,okv->bov", abc, self.table("arith_carry", dt))   # [B, 4, C]
        mod = (ad[:, :, None] * bd[:, None, :]).reshape(B, C * C) @ self.table("mod", dt)
        ab = (a[:, :, None] * b[:, None, :]).reshape(B, V * V)            # [B, V²]
        cmp = torch.einsum("bk,okv->bov", ab, self.table("compare", dt))  # [B, 4, V]
        peq = torch.stack([1 - ptr_eq, ptr_eq], -1) @ self.table("peq", dt)  # [B, V]
        getc = carry @ self.table("getc", dt)                              # [B, V]
        mov = a @ self.table("mov", dt)                                    # [B, V]
        setc = ad @ self.table("setc", dt)                                 # [B, C]

        def pad(x: Tensor) -> Tensor:                                      # digits -> symbols
            return F_nn.pad(x, (0, V - C))

        # value ops in _VALUE_OPS order: MOV ADD SUB MUL DIV MOD EQ LT MIN MAX GETC PEQ
        outs = torch.stack([mov, *pad(ar_res).unbind(1), pad(mod), *cmp.unbind(1), getc, peq],
                           1)                                              # [B, 12, V]
        p_val = op[:, list(_VALUE_OPS)]                                    # [B, 12]
        result = torch.einsum("bk,bkv->bv", p_val, outs)
        result = result / p_val.sum(-1, keepdim=True).clamp_min(_TINY)
        couts = torch.cat([ar_car, setc[:, None]], 1)                      # [B, 5, C]
        p_car = op[:, list(_CARRY_OPS)]                                    # [B, 5]
        carry_out = (torch.einsum("bk,bkc->bc", p_car, couts)
                     + (1 - p_car.sum(-1, keepdim=True)) * carry)
        return OEUOutput(result, carry_out)

    def hard(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor,
             ptr_eq: Tensor) -> tuple[Tensor, Tensor]:
        """Exact (result, carry_out) on integer tensors [B]: a table lookup, :func:`exact_op`
        for large alphabets, the argmax of the learned tables if learnable."""
        C, V = self.alphabet.base, self.alphabet.size
        if self.learnable:
            dt = self.logits_mov.dtype
            out = self(F_nn.one_hot(op, _O).to(dt), F_nn.one_hot(a, V).to(dt),
                       F_nn.one_hot(b, V).to(dt), F_nn.one_hot(carry, C).to(dt), ptr_eq.to(dt))
            return out.result.argmax(-1), out.carry.argmax(-1)
        if not self.has_lookup:
            return exact_op(op, a, b, carry, ptr_eq, self.alphabet)
        at = ((op * V + a) * V + b) * C + carry
        res = torch.where(op == Op.PEQ, ptr_eq.long(), self.lookup_result.take(at))
        return res, self.lookup_carry.take(at)


# ====================================================================== the sequencer

class StepView(NamedTuple):
    """What the control decisions may look at: the decoded step."""

    op: Tensor       # [B, O] opcode distribution
    modes: Tensor    # [B, F, M] operand-mode distributions
    values: Tensor   # [B, F, V] operand symbols (val of the slot read, or the immediate)
    carry: Tensor    # [B, C] carry register
    ptr_eq: Tensor   # [B] probability that operands 1 and 2 hold equal pointers (PEQ)
    halted: Tensor   # [B] halted flag before this step


class Decisions(NamedTuple):
    """The three control probabilities the machine uses, and nothing else."""

    p_taken: Tensor     # [B] a jump goes to its target (JMP CALL RET always)
    write_gate: Tensor  # [B] the op's write happens
    p_halt: Tensor      # [B] the machine stops after this step


@runtime_checkable
class Sequencer(Protocol):
    """Maps a :class:`StepView` to :class:`Decisions`.

    The discrete path steps only the rows still running once half the batch has stopped;
    a sequencer that keeps per-row state (the controller's prompt cache) may define
    ``select_rows(ids)``, which is called with the batch indices of the rows the following
    calls are about (``None``: every row, in order).
    """

    def __call__(self, view: StepView) -> Decisions: ...


@runtime_checkable
class HardSequencer(Protocol):
    """Optional fast path on integers: op [B], operand values [B, F] -> (taken, write, halt)
    bool tensors [B]."""

    def hard(self, op: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


class SymbolicSequencer(nn.Module):
    """The exact decisions: taken = JMP/CALL/RET, or JZ JNZ JEQ JNE by their condition on
    operands 0 and 1; write gate = the op writes memory; halt = HALT."""

    def __init__(self) -> None:
        super().__init__()
        t = _op_table_arrays()
        self.register_buffer("taken", torch.from_numpy(t["taken"]), persistent=False)
        self.register_buffer("writes", torch.from_numpy(t["writes"]), persistent=False)

    def forward(self, view: StepView) -> Decisions:
        p = view.op
        a, b = view.values[:, 0], view.values[:, 1]                        # [B, V]
        z = a[:, 0]                                                        # P(a = 0)
        e = (a * b).sum(-1)                                                # P(a = b)
        pz = torch.stack([1 - z, z], -1)                                   # [B, 2]
        pe = torch.stack([1 - e, e], -1)
        taken = torch.einsum("bo,oze,bz,be->b", p, self.taken.to(p.dtype), pz, pe)
        return Decisions(taken, p @ self.writes.to(p.dtype), p[:, Op.HALT])

    def hard(self, op: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, b = values[:, 0], values[:, 1]
        taken = self.taken.view(-1).take(op * 4 + (a == 0) * 2 + (a == b))   # [o, a = 0, a = b]
        return taken, self.writes.take(op), op == Op.HALT


# ====================================================================== state and config

@dataclass(frozen=True)
class MachineConfig:
    """How the machine is built."""

    alphabet: Alphabet = DEFAULT_ALPHABET  # value symbols; every loaded program must use it
    stack_size: int = DEFAULT_STACK_SIZE   # S: return-stack entries (CALL past them faults)
    sharpness: float = DEFAULT_SHARPNESS   # β of soft addressing, softmax(β q·Kᵀ)
    address_bits: int | None = None        # L of the address keys; None: fewest for N + 1 slots

    def __post_init__(self) -> None:
        if self.stack_size < 0:
            raise ValueError(f"stack_size must be >= 0, got {self.stack_size}")
        if not self.sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {self.sharpness}")
        if self.address_bits is not None and not 1 <= self.address_bits <= 30:
            raise ValueError(f"address_bits must be in 1..30, got {self.address_bits}")


class MachineState(NamedTuple):
    """The whole machine between two steps (a batch of independent rows).

    ``step`` returns a new state; nothing here is modified in place.
    """

    memory: Tensor  # [B, N, D] slot vectors (SlotLayout: kind | op | modes | p0..p3 | val)
    pc: Tensor      # [B, A] address key of the instruction to execute next
    carry: Tensor   # [B, C] distribution over the carry digit
    stack: Tensor   # [B, S, A] return addresses (keys); entry d is filled at depth d
    sp: Tensor      # [B, S+1] distribution over the stack depth 0..S
    halted: Tensor  # [B] in [0, 1]; rows with 1 no longer change
    steps: Tensor   # [B] instructions executed (expected count in soft mode)
    fault: Tensor   # [B] 1 where hard mode detected a fault; the row is frozen
    size: Tensor    # [B] long: slots of the row's own memory (the rest is EMPTY padding)
    weights: Tensor | None = None  # [B, Pw, V, V] the WEIGHTS bank (Pw = 0: no program uses it)
    psize: Tensor | None = None    # [B] long: program slots of each row (where WEIGHTS live)


@dataclass
class _Discrete:
    """The hard path's private, mutable integer view of a MachineState.

    ``store`` is slot-major, ``[N + 2, B, 13]``: rows stepping in lockstep mostly touch the
    same addresses, so their gathers hit neighbouring memory. Slot N is a guard (an EMPTY
    slot: fetching past a row's memory faults like fetching its padding) and slot N + 1 a
    sink that rows which do not write write to. Columns: kind, op, mode0..3, p0..p3, val,
    then a static-fault flag (see Machine._static_bad) and a scratch column.
    """

    store: Tensor   # [N + 2, B, 13] long
    pc: Tensor      # [B]
    carry: Tensor   # [B]
    stack: Tensor   # [B, S]
    sp: Tensor      # [B]
    halted: Tensor  # [B] bool
    steps: Tensor   # [B]
    fault: Tensor   # [B] bool
    size: Tensor    # [B]
    wbank: Tensor | None = None  # [B, Pw, V] long: WEIGHTS tables (None: unused)
    psize: Tensor | None = None  # [B] program slots of each row

    @property
    def mem(self) -> Tensor:
        """``[B, N, 13]`` the rows' memories (a view of ``store``)."""
        return self.store[:-2].permute(1, 0, 2)

    @property
    def active(self) -> Tensor:
        return ~(self.halted | self.fault)


class _Kit(NamedTuple):
    """What every discrete step of a run needs, prepared once per run."""

    feat: Tensor       # [O, 15] per-op features (_FT_*)
    row0: Tensor       # [B] b: row b's offset in the flat slot-major [(N + 2)·B, 13] memory
    rows1: Tensor      # [B, 1] the same, as a column
    false: Tensor      # [B] bool zeros
    zero: Tensor       # [B] long zeros
    size_m1: Tensor    # [B] last slot of each row's memory
    check_addr: bool   # some address field points outside its row's memory
    stack_ops: bool    # CALL or RET occurs in some memory
    oeu_hard: Callable[..., tuple[Tensor, Tensor]]
    seq_hard: Callable[..., tuple[Tensor, Tensor, Tensor]] | None  # None: the generic path
    ids: Tensor        # [B] each row's index in the whole batch (rows are dropped when done)
    weights: bool = False  # the rows have a WEIGHTS bank (APPLY / WSET / WEIGHTS slots)


@dataclass(frozen=True)
class _Layout:
    """Where each row's regions lie (for results and heatmaps)."""

    in_base: tuple[int, ...]
    in_len: tuple[int, ...]
    out_base: tuple[int, ...]
    out_size: tuple[int, ...]


@dataclass(frozen=True)
class MachineResult:
    """One row of a batched run, in the terms of ``interp.Result`` plus a fault."""

    output: str                        # symbols from OUT.p0 up to END, decoded ("" on a fault)
    symbols: tuple[int, ...]
    steps: int                         # instructions executed (HALT included)
    halted: bool
    trace: tuple[TraceStep, ...] | None
    carry: int
    pc: int                            # pc when the run ended (the faulting instruction's)
    fault: str | None = None           # the reason, as MachineFault.reason; None: no fault
    memory: tuple[Slot, ...] | None = None  # final memory, if asked for (keep_memory=True)

    def raise_fault(self, program: Program) -> None:
        """Raise the MachineFault the reference interpreter raises, if this run faulted."""
        if self.fault is not None:
            raise MachineFault(self.pc, self.steps, self.fault, program.where(self.pc),
                               self.trace)

    def to_result(self, image: MemoryImage) -> Result:
        """An ``interp.Result`` (needs ``keep_memory=True``); raises on a fault."""
        if self.fault is not None:
            raise ValueError(f"the run faulted: {self.fault}")
        if self.memory is None:
            raise ValueError("to_result needs the final memory: run with keep_memory=True")
        return Result(self.output, self.symbols, self.steps, self.halted, self.trace,
                      self.memory, self.carry, image)


@dataclass(frozen=True)
class AttentionMaps:
    """Where each read of a run looked, per step: for heatmaps.

    ``image[c, t, n]`` is the largest address weight read channel c gave a slot of bin n in a
    step of bin t (bins merge ``step_bin`` steps and ``slot_bin`` slots, for long runs).
    """

    image: Tensor                   # [1 + F, T', N'] channels: fetch, operand 1..4
    labels: tuple[str, ...]         # channel names
    steps: int
    slots: int
    step_bin: int
    slot_bin: int
    regions: tuple[tuple[str, int], ...]  # (name, first slot) of program, input, output, padding
    hard: bool                      # hard maps are one-hot; soft ones spread over slots


# ====================================================================== helpers

def _snap(x: Tensor) -> Tensor:
    """One-hot of the argmax along the last axis, straight-through to ``x``."""
    hard = F_nn.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
    return straight_through(hard, x)


def _snap_bool(x: Tensor) -> Tensor:
    """``x > 0.5`` as 0/1, straight-through to ``x``."""
    return straight_through((x > 0.5).to(x.dtype), x)


def _store(mem: Tensor) -> Tensor:
    """Slot-major storage ``[N + 2, B, 13]`` of ``mem [B, N, 13]``, guard and sink slots
    appended (EMPTY, static fault set)."""
    B, _, W = mem.shape
    extra = torch.zeros(2, B, W, dtype=mem.dtype, device=mem.device)
    extra[..., _STATIC] = 1
    return torch.cat([mem.permute(1, 0, 2), extra], 0)


@functools.lru_cache(maxsize=16)
def _char_table(alphabet: Alphabet) -> dict[str, int]:
    """Every character of the alphabet -> its symbol (digits in either case for bases > 10)."""
    if alphabet.raw_bytes:
        return {chr(i): i for i in range(256)}
    out = {alphabet.decode_symbol(v): v for v in range(alphabet.end)}
    if alphabet.base > 10:
        out.update({ch.upper(): v for ch, v in list(out.items()) if v < alphabet.base})
    return out


@functools.lru_cache(maxsize=16)
def _symbol_table(alphabet: Alphabet) -> tuple[str, ...]:
    return tuple(alphabet.decode_symbol(v) for v in range(alphabet.size))


def _decode_text(alphabet: Alphabet, symbols: Sequence[int]) -> str:
    """``alphabet.decode(symbols)``, through a table."""
    return "".join(map(_symbol_table(alphabet).__getitem__, symbols))


def _encode_text(alphabet: Alphabet, text: str) -> list[int]:
    """``alphabet.encode(text)``, through a table; errors are the alphabet's own."""
    table = _char_table(alphabet)
    try:
        return [table[ch] for ch in text]
    except KeyError:
        return alphabet.encode(text)  # raises the InputError naming the position


def _take_rows(d: _Discrete, ids: Tensor) -> _Discrete:
    """A copy of the rows ``ids`` of ``d``."""
    return _Discrete(d.store.index_select(1, ids), d.pc[ids], d.carry[ids], d.stack[ids],
                     d.sp[ids], d.halted[ids], d.steps[ids], d.fault[ids], d.size[ids],
                     None if d.wbank is None else d.wbank[ids],
                     None if d.psize is None else d.psize[ids])


def _put_rows(d: _Discrete, ids: Tensor, part: _Discrete) -> None:
    """Write ``part`` (rows ``ids`` of ``d``, stepped on) back into ``d``."""
    d.store.index_copy_(1, ids, part.store)
    for name in ("pc", "carry", "stack", "sp", "halted", "steps", "fault"):
        getattr(d, name)[ids] = getattr(part, name)
    if d.wbank is not None:
        d.wbank[ids] = part.wbank


def _slot_rows(slots: Sequence[Slot]) -> np.ndarray:
    """``[n, 11]`` integer rows of Slots (the discrete view)."""
    return np.array([(s.kind, s.op, *s.modes, *s.args, s.val) for s in slots],
                    dtype=np.int64).reshape(len(slots), _COLS)


def _tables(d: _Discrete, r: int) -> np.ndarray | None:
    """Row r's WEIGHTS tables ``[Pw, V]``, or None."""
    return None if d.wbank is None else d.wbank[r].cpu().numpy()


def _rows_to_slots(rows: np.ndarray, tables: np.ndarray | None = None) -> tuple[Slot, ...]:
    """Slots of ``[n, 11]`` integer rows; equal rows share one Slot, as memory_image does.

    ``tables [Pw, V]``: the WEIGHTS bank; a WEIGHTS slot at n < Pw gets ``tables[n]``."""
    made: dict[tuple[int, ...], Slot] = {}
    out = []
    kinds, ops, modes = list(Kind), list(Op), list(Mode)
    for n, row in enumerate(map(tuple, rows[:, :_COLS].tolist())):
        if row[0] == Kind.WEIGHTS and tables is not None and n < len(tables):
            row = row + tuple(tables[n].tolist())
        s = made.get(row)
        if s is None:
            table = Slot.weights(row[_COLS:]).table if len(row) > _COLS else None
            s = Slot(kinds[row[0]], ops[row[1]],
                     tuple(modes[m] for m in row[2:6]),  # type: ignore[arg-type]
                     row[6:10], row[10], table)  # type: ignore[arg-type]
            made[row] = s
        out.append(s)
    return tuple(out)


# ====================================================================== the machine

class Machine(nn.Module):
    """The differentiable computer: a slot memory stepped by a pluggable OEU and sequencer.

    >>> from llamacpu.core.golden import load_program
    >>> m = Machine(MachineConfig())
    >>> [r.output for r in m.run_batch([load_program("add")] * 2, ["2+3", "99+1"])]
    ['5', '100']
    """

    def __init__(self, config: MachineConfig = MachineConfig(),  # noqa: B008 (frozen)
                 oeu: OEU | None = None, sequencer: Sequencer | None = None) -> None:
        super().__init__()
        self.config = config
        self.oeu = oeu if oeu is not None else SymbolicOEU(config.alphabet)
        self.sequencer = sequencer if sequencer is not None else SymbolicSequencer()
        t = _op_table_arrays()
        self.register_buffer("_t_feat", torch.from_numpy(t["feat"]), persistent=False)
        for name in ("asel", "bsel", "tsel", "value_nomov", "jumps"):
            self.register_buffer(f"_t_{name}", torch.from_numpy(t[name]).float(),
                                 persistent=False)
        self._memories: dict[int, HybridSWM] = {}

    @property
    def alphabet(self) -> Alphabet:
        return self.config.alphabet

    # ------------------------------------------------------------------ layout

    def memory_for(self, width_or_bits: int, *, bits: bool = False) -> HybridSWM:
        """The HybridSWM (layout, codec, sharpness) of slot width D, or of L address bits."""
        V = self.alphabet.size
        fixed = _K + _O + _F * _M + V
        if bits:
            L = width_or_bits
        else:
            L, rest = divmod(width_or_bits - fixed, 2 * _F)
            if rest or L < 1:
                raise ValueError(f"slot width {width_or_bits} is not a SlotLayout width for "
                                 f"{self.alphabet.describe()} (expected {fixed} + 8 L)")
        if L not in self._memories:
            layout = SlotLayout(self.alphabet, AddressCodec(L))
            self._memories[L] = HybridSWM(layout, self.config.sharpness)
        return self._memories[L]

    def _bits_for(self, n: int) -> int:
        need = AddressCodec.for_size(n + 1).bits  # pc + 1 of the last slot stays a key
        L = self.config.address_bits
        if L is None:
            return need
        if L < need:
            raise ValueError(f"address_bits = {L} cannot address {n} slots (need {need})")
        return L

    # ------------------------------------------------------------------ loading

    def _load_discrete(self, programs: Sequence[Program], inputs: Sequence[str],
                       out_size: int | None, device: torch.device | str | None
                       ) -> tuple[_Discrete, _Layout]:
        """Memory images of every row, padded with EMPTY slots to a common N, as integers."""
        if len(programs) != len(inputs):
            raise ValueError(f"{len(programs)} programs but {len(inputs)} inputs")
        if not programs:
            raise ValueError("load_batch needs at least one program")
        alpha = self.alphabet
        bad = sorted({p.alphabet.describe() for p in programs if p.alphabet != alpha})
        if bad:
            raise ValueError(f"every program in a batch must use the machine's alphabet "
                             f"({alpha.describe()}); got {', '.join(bad)}")
        if out_size is not None and out_size < 1:
            raise ValueError(f"out_size must be at least 1, got {out_size}")
        symbols = [_encode_text(alpha, t) for t in inputs]
        lens = np.array([len(s) for s in symbols], dtype=np.int64)
        outs = [default_out_size(len(s)) if out_size is None else out_size for s in symbols]
        P = np.array([len(p.slots) for p in programs], dtype=np.int64)
        if int(P.min()) < N_PORTS:
            raise ValueError("every program holds the IN and OUT ports (at least 2 slots)")
        sizes = P + lens + 1 + np.array(outs, dtype=np.int64)
        B, N = len(programs), int(sizes.max())
        # memory_image, vectorised: [program | input symbols, END | output region of END],
        # written through a [B, N, 13] view of the slot-major store (see _Discrete)
        store = np.zeros((N + 2, B, _W), dtype=np.int64)    # zeros: EMPTY slots
        store[..., _STATIC] = 1                             # nothing but INSTR slots can run
        mem = store[:N].transpose(1, 0, 2)
        groups: dict[int, list[int]] = {}
        for r, p in enumerate(programs):
            groups.setdefault(id(p), []).append(r)
        for rows_of_p in groups.values():
            p = programs[rows_of_p[0]]
            rows = _slot_rows(p.slots)
            mem[rows_of_p, :len(p.slots), :_COLS] = rows
            static = self._static_bad(torch.from_numpy(rows)).numpy()
            mem[rows_of_p, :len(p.slots), _STATIC] = static
        pos = np.arange(N)[None, :]
        in_base, out_base = P, P + lens + 1
        mem[..., _KIND] = np.where((pos >= P[:, None]) & (pos < sizes[:, None]), int(Kind.DATA),
                                   mem[..., _KIND])
        mem[..., _VAL] = np.where((pos >= (P + lens)[:, None]) & (pos < sizes[:, None]),
                                  alpha.end, mem[..., _VAL])
        rows_in = np.repeat(np.arange(B), lens)
        cols_in = np.repeat(P, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens,
                                                                          lens))
        mem[rows_in, cols_in, _VAL] = np.fromiter((v for s in symbols for v in s), np.int64,
                                                  int(lens.sum()))
        ports = mem[:, [PORT_IN, PORT_OUT]]                 # memory_image: with_ptr
        ports[..., _P0] = np.stack([in_base, out_base], 1)
        ports[..., _KIND] = np.where(ports[..., _KIND] == Kind.EMPTY, int(Kind.DATA),
                                     ports[..., _KIND])
        mem[:, [PORT_IN, PORT_OUT]] = ports
        sizes_l, in_base, out_base = sizes.tolist(), in_base.tolist(), out_base.tolist()
        self._bits_for(N)  # fail early if address_bits is too small
        dev = torch.device(device) if device is not None else self._t_feat.device
        S = self.config.stack_size

        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=dev)

        wbank = None
        if any(_uses_weights(p) for p in programs):   # the WEIGHTS bank, [B, Pw, V]
            bank = np.zeros((B, int(P.max()), alpha.size), dtype=np.int64)
            for r, p in enumerate(programs):
                for n, sl in enumerate(p.slots):
                    if sl.kind == Kind.WEIGHTS and sl.table is None:
                        bank[r, n] = alpha.end                # the empty function
                    elif sl.kind == Kind.WEIGHTS:
                        if len(sl.table) != alpha.size:
                            raise ValueError(f"{p.where(n)}: a WEIGHTS slot needs a table of "
                                             f"{alpha.size} symbols")
                        bank[r, n] = sl.table
            wbank = torch.from_numpy(bank).to(dev)
        disc = _Discrete(
            store=torch.from_numpy(store).to(dev),
            pc=torch.tensor([p.entry for p in programs], device=dev),
            carry=zeros(B), stack=zeros(B, S), sp=zeros(B),
            halted=zeros(B, dtype=torch.bool), steps=zeros(B),
            fault=zeros(B, dtype=torch.bool), size=torch.tensor(sizes_l, device=dev),
            wbank=wbank, psize=torch.from_numpy(P).to(dev))
        return disc, _Layout(tuple(in_base), tuple(len(s) for s in symbols), tuple(out_base),
                             tuple(outs))

    def load_batch(self, programs: Sequence[Program], inputs: Sequence[str],
                   out_size: int | None = None, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> MachineState:
        """The machine at load time, one row per (program, input): ``isa.memory_image`` of
        each, padded with EMPTY slots to a common N; pc at each program's entry.

        Raises ValueError if the programs' alphabets differ from the machine's.
        """
        disc, _ = self._load_discrete(programs, inputs, out_size, device)
        return self._encode(disc, dtype)

    # ------------------------------------------------------------------ int view <-> tensors

    def _encode(self, d: _Discrete, dtype: torch.dtype) -> MachineState:
        """The MachineState of an integer view: one-hots and exact address keys."""
        B, N, _ = d.mem.shape
        top = max(N, int(d.mem[..., _ARGS].max()) if d.mem.numel() else 0)   # keys hold every field
        codec = self.memory_for(self._bits_for(top), bits=True).codec
        V, C, S = self.alphabet.size, self.alphabet.base, d.stack.shape[1]
        m = d.mem

        def hot(x: Tensor, n: int) -> Tensor:
            return F_nn.one_hot(x, n).to(dtype)

        memory = torch.cat([hot(m[..., _KIND], _K), hot(m[..., _OP], _O),
                            hot(m[..., _MODES], _M).flatten(-2),
                            codec.address_to_key(m[..., _ARGS], dtype=dtype).flatten(-2),
                            hot(m[..., _VAL], V)], -1)                      # [B, N, D]
        f = d.fault.to(dtype)
        if d.wbank is None:                                                 # [B, Pw, V, V]
            weights = torch.zeros(B, 0, V, V, dtype=dtype, device=d.pc.device)
        else:
            weights = hot(d.wbank, V).transpose(-1, -2)
        return MachineState(
            memory=memory, pc=codec.address_to_key(d.pc, dtype=dtype),
            carry=hot(d.carry, C), stack=codec.address_to_key(d.stack, dtype=dtype),
            sp=hot(d.sp, S + 1), halted=d.halted.to(dtype), steps=d.steps.to(dtype),
            fault=f, size=d.size.clone(), weights=weights,
            psize=None if d.psize is None else d.psize.clone())

    def _decode(self, s: MachineState) -> _Discrete:
        """The integer view of a state: argmax of each one-hot, nearest address of each key
        (exact for hard states; a rounding of soft ones)."""
        M = s.memory
        swm = self.memory_for(M.shape[-1])
        lay, codec = swm.layout, swm.codec
        x = M.detach()
        mem = torch.cat([lay.get(x, "kind").argmax(-1, keepdim=True),
                         lay.get(x, "op").argmax(-1, keepdim=True),
                         lay.modes(x).argmax(-1),
                         codec.key_to_address(lay.args(x)),
                         lay.get(x, "val").argmax(-1, keepdim=True)], -1)   # [B, N, 11]
        mem = torch.cat([mem, self._static_bad(mem)[..., None],
                         torch.zeros_like(mem[..., :1])], -1)                 # [B, N, 13]
        return _Discrete(
            store=_store(mem), pc=codec.key_to_address(s.pc), carry=s.carry.detach().argmax(-1),
            stack=codec.key_to_address(s.stack), sp=s.sp.detach().argmax(-1),
            halted=s.halted.detach() > 0.5, steps=s.steps.detach().round().long(),
            fault=s.fault.detach() > 0.5, size=s.size.clone(),
            wbank=(None if s.weights is None or not s.weights.shape[1]
                   else s.weights.detach().argmax(-2)),                     # [B, Pw, V]
            psize=s.psize.clone() if s.psize is not None else s.size.clone())

    def harden(self, state: MachineState) -> MachineState:
        """The nearest exact state: every field snapped to its argmax / nearest address."""
        return self._encode(self._decode(state), state.memory.dtype)

    def decode_memory(self, state: MachineState) -> list[tuple[Slot, ...]]:
        """Each row's memory as Slots (its own ``size`` slots, padding dropped)."""
        d = self._decode(state)
        mem = d.mem.cpu().numpy()
        return [_rows_to_slots(mem[r, :n], _tables(d, r)) for r, n in enumerate(d.size.tolist())]

    def read_outputs(self, state: MachineState) -> list[str]:
        """Each row's answer: symbols from OUT.p0 up to END (of the hardened state)."""
        d = self._decode(state)
        return [self.alphabet.decode(s) for s in self._outputs(d)]

    def _outputs(self, d: _Discrete) -> list[tuple[int, ...]]:
        vals = d.mem[..., _VAL].cpu().numpy()
        outp = d.mem[:, PORT_OUT, _P0].tolist()
        end = self.alphabet.end
        out = []
        for r, (p, n) in enumerate(zip(outp, d.size.tolist())):
            row = vals[r, p:n]
            stop = np.flatnonzero(row == end)
            out.append(tuple(row[: stop[0] if len(stop) else len(row)].tolist()))
        return out

    # ------------------------------------------------------------------ stepping

    def _wants_grad(self, state: MachineState) -> bool:
        if not torch.is_grad_enabled():
            return False
        return (any(t is not None and t.requires_grad for t in state)
                or any(p.requires_grad for p in self.parameters()))

    def step(self, state: MachineState, hard: bool = True) -> MachineState:
        """One instruction on every row that has not halted; returns the new state.

        Hard mode runs the discrete path (decode, exact step, encode: O(B·N·D) for the copy)
        unless autograd needs the step, then the straight-through dense path.
        """
        if not hard or self._wants_grad(state):
            return self._dense_step(state, hard)[0]
        d = self._decode(state)
        self._discrete_step(d, self._kit(d), None)
        return self._encode(d, state.memory.dtype)

    def run(self, state: MachineState, max_steps: int, hard: bool = True) -> MachineState:
        """Step until every row has halted (or faulted), at most ``max_steps`` times."""
        if not hard or self._wants_grad(state):
            for _ in range(max_steps):
                if bool(((state.halted > 0.5) | (state.fault > 0.5)).all()):
                    break
                state = self._dense_step(state, hard)[0]
            return state
        d = self._decode(state)
        self._run_discrete(d, max_steps, None)
        return self._encode(d, state.memory.dtype)

    # ------------------------------------------------------------------ the dense step

    def _dense_step(self, s: MachineState, hard: bool, record: bool = False
                    ) -> tuple[MachineState, Tensor | None]:
        """One step by attention (soft) or snapped attention (hard, straight-through).

        Returns the new state and, if ``record``, the read weights [B, 1 + F, N]
        (fetch, then each operand's effective address).
        """
        M = s.memory
        B, N, D = M.shape
        swm = self.memory_for(D)
        lay, codec = swm.layout, swm.codec
        L, dt = codec.bits, M.dtype
        keys = swm.keys(N, dtype=dt, device=M.device)                          # [N, A]
        snap = _snap if hard else (lambda x: x)
        cast = {n: getattr(self, f"_t_{n}").to(dt)
                for n in ("asel", "bsel", "tsel", "value_nomov", "jumps")}
        live = (1 - s.halted) * (1 - s.fault)                                  # [B] rows that run

        # fetch and decode: ins = read(M, pc)
        fetch = swm.read(M, s.pc[:, None], hard=hard, keys=keys, need_weights=record)
        ins = fetch.values[:, 0]                                               # [B, D]
        op = snap(lay.get(ins, "op"))                                          # [B, O]
        modes = snap(lay.modes(ins))                                           # [B, F, M]
        args = lay.args(ins)                                                   # [B, F, A]
        imm = snap(lay.get(ins, "val"))                                        # [B, V]

        # operands: [p] reads the slot that p.p0 points to
        direct = swm.read(M, args, hard=hard, keys=keys)                       # [B, F, D]
        pk = lay.args(direct.values)[:, :, 0]                                  # [B, F, A]
        indirect = swm.read(M, pk, hard=hard, keys=keys, need_weights=True)
        m_dir, m_ind = modes[..., Mode.DIRECT], modes[..., Mode.INDIRECT]      # [B, F]
        m_imm = modes[..., Mode.IMMEDIATE]
        rows = m_dir[..., None] * direct.values + m_ind[..., None] * indirect.values
        ek = m_dir[..., None] * args + m_ind[..., None] * pk                   # [B, F, A]
        vals = lay.get(rows, "val") + m_imm[..., None] * imm[:, None]          # [B, F, V]
        pv = lay.args(rows)[:, :, 0]                                           # [B, F, A] p0s
        assert direct.weights is not None and indirect.weights is not None
        w_eff = m_dir[..., None] * direct.weights + m_ind[..., None] * indirect.weights

        # the OEU
        a = torch.einsum("bo,of,bfv->bv", op, cast["asel"], vals)              # [B, V]
        b = torch.einsum("bo,of,bfv->bv", op, cast["bsel"], vals)
        # ptr_eq = exp(β (p·q − L)): 1 for equal keys, ≤ e^(−2β) for different ones
        ptr_eq = torch.exp(self.config.sharpness * ((pv[:, 1] * pv[:, 2]).sum(-1) - L))
        if hard:
            ptr_eq = _snap_bool(ptr_eq)
        result, carry_out = self.oeu(op, a, b, s.carry, ptr_eq)
        result, carry_out = snap(result), snap(carry_out)
        Wb = s.weights                                                         # [B, Pw, V, V]
        if Wb is not None and not Wb.shape[1]:
            Wb = None                                                          # no bank: skip
        if Wb is not None:
            Pw = Wb.shape[1]
            # APPLY: result = softmax(s · Δ_w a), Δ_w = Σ_n w_n Δ_n read with operand w's weights
            delta = torch.einsum("bn,bnvx->bvx", w_eff[:, 1, :Pw], Wb)           # [B, V, V]
            applied = snap(apply_result(delta, a))                             # [B, V]
            p_apply = op[:, Op.APPLY, None]
            result = result + p_apply * (applied - result)
            keep = (op[:, Op.APPLY] + op[:, Op.WSET])[:, None]                 # carry unchanged
            carry_out = carry_out + keep * (s.carry - carry_out)

        # the decisions
        dec = self.sequencer(StepView(op, modes, vals, s.carry, ptr_eq, s.halted))
        taken, gate, p_halt = (_snap_bool(x) if hard else x for x in dec)

        # the write: M ← M ∘ (1 − g w eᵀ) + g w uᵀ, e and u mixed over the write kinds
        mov_imm = op[:, Op.MOV] * m_imm[:, 1]
        g_val = op @ cast["value_nomov"] + mov_imm                             # [B] val field
        g_slot = op[:, Op.MOV] - mov_imm                                       # [B] whole slot
        g_ptr = op[:, Op.LEA] + op[:, Op.INC] + op[:, Op.DEC]                  # [B] p0 field
        p0_new = (op[:, Op.LEA, None] * ek[:, 1]
                  + op[:, Op.INC, None] * codec.inc(pv[:, 0], hard)
                  + op[:, Op.DEC, None] * codec.dec(pv[:, 0], hard))           # [B, A]
        m_val = lay.mask("val", dtype=dt, device=M.device)                     # [D]
        m_p0 = lay.mask("p0", dtype=dt, device=M.device)
        erase = g_val[:, None] * m_val + g_ptr[:, None] * m_p0 + g_slot[:, None]   # [B, D]
        add = (g_val[:, None] * lay.place("val", result) + lay.place("p0", p0_new)
               + g_slot[:, None] * rows[:, 1])                                 # [B, D]
        norm = 1 / (g_val + g_slot + g_ptr).clamp_min(_TINY)                   # [B]
        gw = (gate * live * norm)[:, None] * w_eff[:, 0]                       # [B, N]
        new = M * (1 - gw[:, :, None] * erase[:, None, :]) + gw[:, :, None] * add[:, None, :]
        # writing a field of an EMPTY slot makes it DATA: move that slot's EMPTY mass
        kind = lay.field("kind")
        promote = torch.zeros(D, dtype=dt, device=M.device)
        promote[kind.start + Kind.DATA] = 1
        promote[kind.start + Kind.EMPTY] = -1
        moved = gw * (g_val + g_ptr)[:, None] * M[..., kind.start + Kind.EMPTY]  # [B, N]
        new = new + moved[..., None] * promote
        if Wb is not None:
            # WSET: Δ_n ← Δ_n ∘ (1 − g w_n 1 aᵀ) + g w_n b aᵀ, w_n operand 0's address weights
            gws = (gate * live * op[:, Op.WSET])[:, None] * w_eff[:, 0, :Pw]   # [B, Pw]
            col = gws[:, :, None, None] * a[:, None, None, :]                  # [B, Pw, 1, V]
            Wb = Wb * (1 - col) + col * b[:, None, :, None]
            # MOV d, s: Δ_d ← Δ_d (1 − g d) + g d Δ_s
            gm = (gate * live * g_slot)[:, None] * w_eff[:, 0, :Pw]            # [B, Pw]
            src = torch.einsum("bn,bnvx->bvx", w_eff[:, 1, :Pw], Wb)           # [B, V, V]
            Wb = Wb * (1 - gm[..., None, None]) + gm[..., None, None] * src[:, None]

        # next pc: p_halt·pc + (1 − p_halt)·(taken·target + (1 − taken)·(pc + 1))
        seq = codec.inc(s.pc, hard)                                            # [B, A]
        S = s.stack.shape[1]
        top = torch.einsum("bs,bsa->ba", s.sp[:, 1:], s.stack)                 # [B, A]
        jump = torch.einsum("bo,of,bfa->ba", op, cast["tsel"], ek) + op[:, Op.RET, None] * top
        target = jump / (op @ cast["jumps"]).clamp_min(_TINY)[:, None]
        p_h, p_t = p_halt[:, None], taken[:, None]
        nxt = p_h * s.pc + (1 - p_h) * (p_t * target + (1 - p_t) * seq)
        # CALL pushes pc + 1 at depth sp; RET pops
        push, pop = op[:, Op.CALL] * taken * live, op[:, Op.RET] * taken * live  # [B]
        w_push = push[:, None] * s.sp[:, :S]                                   # [B, S]
        stack = s.stack * (1 - w_push[..., None]) + w_push[..., None] * seq[:, None]
        up = F_nn.pad(s.sp[:, :-1], (1, 0))                                    # depth + 1
        down = F_nn.pad(s.sp[:, 1:], (0, 1))                                   # depth − 1
        sp = s.sp * (1 - push - pop)[:, None] + push[:, None] * up + pop[:, None] * down

        lv = live[:, None]
        state = MachineState(
            memory=new,
            pc=(1 - lv) * s.pc + lv * nxt,
            carry=(1 - lv) * s.carry + lv * carry_out,
            stack=stack, sp=sp,
            halted=s.halted + live * p_halt,
            steps=s.steps + live,
            fault=s.fault, size=s.size, weights=s.weights if Wb is None else Wb, psize=s.psize)
        weights = None
        if record:
            assert fetch.weights is not None
            weights = torch.cat([fetch.weights, w_eff], 1).detach()            # [B, 1 + F, N]
        return state, weights

    # ------------------------------------------------------------------ the discrete step

    def _static_bad(self, mem: Tensor) -> Tensor:
        """``[B, N]`` 1 where a slot cannot execute whatever the state: not an instruction,
        an operand mode its op does not accept. Writes keep it true: a val or p0
        write leaves kind, op and modes alone, and MOV copies the column with the slot."""
        t = _op_table_arrays()
        valid = torch.from_numpy(t["valid"]).to(mem.device)                  # [O, F, M]
        op, modes = mem[..., _OP], mem[..., _MODES]
        ok = valid[op[..., None], torch.arange(_F, device=mem.device), modes].all(-1)
        bad = (mem[..., _KIND] != Kind.INSTR) | ~ok
        return bad.long()

    def _kit(self, d: _Discrete, ids: Tensor | None = None, like: _Kit | None = None) -> _Kit:
        """What every discrete step of one run needs, prepared once.

        Two facts about a memory hold for the whole run, because a step only ever writes a
        range-checked pointer, a symbol, or a copy of a slot already in memory: an address
        field points outside its row's memory only if one did at load, and an opcode occurs
        only if it did at load. The kit skips the checks these make unnecessary. ``ids``: the
        rows' indices in the whole batch (for traces); ``like``: a kit whose facts still hold.
        """
        mem = d.mem
        B, dev = mem.shape[0], mem.device
        oeu_hard = self.oeu.hard if isinstance(self.oeu, HardOEU) else self._oeu_generic
        seq_hard = self.sequencer.hard if isinstance(self.sequencer, HardSequencer) else None
        row0 = torch.arange(B, device=dev)
        if like is None:
            check_addr = bool((mem[..., _ARGS] >= d.size[:, None, None]).any())
            ops = mem[..., _OP]
            stack_ops = bool(((ops == Op.CALL) | (ops == Op.RET)).any())
        else:
            check_addr, stack_ops = like.check_addr, like.stack_ops
        return _Kit(self._t_feat, row0, row0[:, None], torch.zeros(B, dtype=torch.bool, device=dev),
                    torch.zeros(B, dtype=torch.long, device=dev), d.size - 1, check_addr,
                    stack_ops, oeu_hard, seq_hard, row0 if ids is None else ids,
                    d.wbank is not None)

    def _oeu_generic(self, op: Tensor, a: Tensor, b: Tensor, c: Tensor,
                     ptr_eq: Tensor) -> tuple[Tensor, Tensor]:
        """Any OEU in hard mode: one-hot inputs, argmax outputs."""
        V, C = self.alphabet.size, self.alphabet.base
        dt = torch.get_default_dtype()
        out = self.oeu(F_nn.one_hot(op, _O).to(dt), F_nn.one_hot(a, V).to(dt),
                       F_nn.one_hot(b, V).to(dt), F_nn.one_hot(c, C).to(dt), ptr_eq.to(dt))
        return out[0].argmax(-1), out[1].argmax(-1)

    def _seq_generic(self, op: Tensor, vals: Tensor, modes: Tensor, c: Tensor,
                     ptr_eq: Tensor, halted: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Any sequencer in hard mode: a one-hot StepView, decisions thresholded at 0.5."""
        V, C = self.alphabet.size, self.alphabet.base
        dt = torch.get_default_dtype()
        view = StepView(F_nn.one_hot(op, _O).to(dt), F_nn.one_hot(modes, _M).to(dt),
                        F_nn.one_hot(vals, V).to(dt), F_nn.one_hot(c, C).to(dt),
                        ptr_eq.to(dt), halted.to(dt))
        dec = self.sequencer(view)
        return dec[0] > 0.5, dec[1] > 0.5, dec[2] > 0.5

    def _discrete_step(self, d: _Discrete, kit: _Kit, rec: list[Tensor] | None) -> None:
        """One exact step of every active row, in place on the private view ``d``.

        Reads are gathers by address from the flat slot-major memory (slot n of row b is
        flat row n·B + b). A row whose instruction faults (``interp.transition`` would raise)
        is frozen with its fault flag set: nothing of the step happens. ``rec`` collects
        trace rows. Written for few tensor ops: at batch 1024 their dispatch is the cost.
        """
        store = d.store
        N2, B, W = store.shape
        N = N2 - 2
        flat = store.view(N2 * B, W)
        base, S = self.alphabet.base, d.stack.shape[1]
        act, pc, c, row0, rows1 = d.active, d.pc, d.carry, kit.row0, kit.rows1
        ins = flat.index_select(0, pc * B + row0)                              # [B, 13] fetch
        op, modes, args = ins[:, _OP], ins[:, _MODES], ins[:, _ARGS]
        t = kit.feat.index_select(0, op)                                       # [B, 15] per op
        ind = modes == Mode.INDIRECT                                           # [B, F]
        is_imm = modes == Mode.IMMEDIATE
        if kit.check_addr:                  # the guard slot absorbs reads outside memory
            args = args.clamp(max=N)
        ptrs = flat[:, _P0].take(args * B + rows1)                             # [B, F] p.p0
        eff = torch.where(ind, ptrs, args)                                     # [B, F]
        if kit.check_addr:
            eff = eff.clamp(max=N)
        rows = flat.index_select(0, (eff * B + rows1).view(-1)).view(B, _F, W)  # [B, F, 13]
        vals = torch.where(is_imm, ins[:, _VAL:_VAL + 1], rows[..., _VAL])     # [B, F]
        p0s = rows[..., _P0]                                                   # [B, F]
        ab = vals.gather(1, t[:, _FT_AB])                                      # [B, 2]
        a, b = ab[:, 0], ab[:, 1]
        ptr_eq = p0s[:, 1] == p0s[:, 2]
        res, cout = kit.oeu_hard(op, a, b, c, ptr_eq)
        if kit.weights:  # APPLY reads its table; APPLY and WSET keep the carry
            bank = d.wbank                                                     # [B, Pw, V]
            Pw, V = bank.shape[1], bank.shape[2]
            is_apply, is_wset = op == Op.APPLY, op == Op.WSET
            w_addr = torch.where(is_apply, eff[:, 1], eff[:, 0])               # operand w
            w_kind = torch.where(is_apply, rows[:, 1, _KIND], rows[:, 0, _KIND])
            w_row = row0 * Pw + w_addr.clamp(max=Pw - 1)                       # [B] bank row
            res = torch.where(is_apply, bank.view(-1).take(w_row * V + a.clamp(max=V - 1)), res)
            cout = torch.where(is_apply | is_wset, c, cout)
        if kit.seq_hard is None:
            taken, write, halt = self._seq_generic(op, vals, modes, c, ptr_eq, d.halted)
        else:
            taken, write, halt = kit.seq_hard(op, vals)
        g = torch.where(is_imm[:, 1:2], t[:, _FT_WRITE_IMM], t[:, _FT_WRITE])   # [B, 3]
        wk = g[:, 0]                         # write kind: 0 none, 1 val, 2 p0, 3 whole slot
        ptr_res = torch.where(op == Op.LEA, eff[:, 1], p0s[:, 0] + t[:, _FT_DELTA])

        # faults, as interp.transition raises them (their reason is found afterwards):
        # the static column covers non-instructions, bad modes, APPLY and pc past memory
        digit_a, digit_b = a >= base, b >= base
        ab_bad = digit_a | digit_b
        moved = torch.clamp(ptr_res, kit.zero, kit.size_m1) != ptr_res
        over, under = (d.sp >= S, d.sp <= 0) if kit.stack_ops else (kit.false, kit.false)
        check = torch.stack([kit.false,
                             ab_bad,                    # 1 ADD SUB MUL: a, b digits
                             ab_bad | (c >= b),         # 2 DIV: quotient ≥ base ⟺ C ≥ b
                             ab_bad | (b == 0),         # 3 MOD
                             digit_a,                   # 4 SETC
                             moved,                     # 5 INC DEC leave memory
                             over, under], 1)           # 6 CALL, 7 RET
        bad = check.gather(1, t[:, _FT_CHECK])[:, 0] | (ins[:, _STATIC] != 0)
        if kit.weights:  # w must be a WEIGHTS slot; MOV keeps WEIGHTS in the program region
            bad |= (is_apply | is_wset) & ((w_kind != Kind.WEIGHTS) | (w_addr >= d.psize))
            bad |= ((op == Op.MOV) & ~is_imm[:, 1] & (rows[:, 1, _KIND] == Kind.WEIGHTS)
                    & (eff[:, 0] >= d.psize))
        if kit.check_addr:
            size1 = d.size[:, None]
            out = (args >= size1) | (ind & (ptrs >= size1))
            bad |= (t[:, _FT_USED].bool() & ~is_imm & out).any(1)
        bad &= act
        ok = act & ~bad

        # the write: val or p0 (column g[:, 1]), or the whole slot, at operand 0's address
        old = rows[:, 0]                                                       # [B, 13]
        new = torch.where((wk == 3)[:, None], rows[:, 1], old)                 # MOV d, s
        new = new.scatter(1, g[:, 1:2], torch.where(wk == 2, ptr_res, res)[:, None])
        new[:, _KIND] = torch.maximum(new[:, _KIND], g[:, 2])                  # EMPTY -> DATA
        wrote = ok & write & (wk != 0)
        dst = torch.where(wrote, eff[:, 0], N + 1)                             # else: the sink
        flat.index_copy_(0, dst * B + row0, new)
        if kit.weights:  # the bank: WSET sets f_w(a) ← b; MOV d, s copies s's table
            bank2 = bank.view(B * Pw, V)
            wset = wrote & is_wset
            cells = (w_row * V + a.clamp(max=V - 1))[wset]
            bank.view(-1)[cells] = b[wset]
            movw = wrote & (wk == 3) & (rows[:, 1, _KIND] == Kind.WEIGHTS)
            if bool(movw.any()):
                src = row0 * Pw + eff[:, 1].clamp(max=Pw - 1)
                bank2[(row0 * Pw + eff[:, 0].clamp(max=Pw - 1))[movw]] = bank2[src[movw]]

        # next pc, the return stack
        seq = pc + 1
        tgt = eff.gather(1, t[:, _FT_T])[:, 0]
        if kit.stack_ops and S > 0:
            is_ret = op == Op.RET
            top = d.stack.gather(1, (d.sp - 1).clamp(min=0)[:, None])[:, 0]
            tgt = torch.where(is_ret, top, tgt)
            push = ok & taken & (op == Op.CALL)
            at = d.sp.clamp(max=S - 1)[:, None]
            d.stack.scatter_(1, at, torch.where(push, seq, d.stack.gather(1, at)[:, 0])[:, None])
            d.sp = d.sp + push.long() - (ok & taken & is_ret).long()
        nxt = torch.where(halt, pc, torch.where(taken, tgt, seq))
        if rec is not None:
            result = torch.where(wk == 1, res, torch.where(wk == 2, ptr_res, torch.where(
                wk == 3, rows[:, 1, _VAL], -1)))
            cols = [kit.ids[:, None], d.steps[:, None], pc[:, None], op[:, None], eff, is_imm,
                    vals, p0s, c[:, None], cout[:, None], result[:, None], wrote[:, None],
                    eff[:, :1], new, nxt[:, None]]
            if kit.weights:  # the written slot's table (read only for WEIGHTS slots)
                cols.append(bank.view(B * Pw, V)[row0 * Pw + dst.clamp(max=Pw - 1)])
            rec.append(torch.cat(cols, 1)[ok].cpu())
        d.pc = torch.where(ok, nxt, pc)
        d.carry = torch.where(ok, cout, c)
        d.halted |= ok & halt
        d.fault |= bad
        d.steps += ok

    def _run_discrete(self, d: _Discrete, max_steps: int, rec: list[Tensor] | None) -> None:
        """Step ``d`` until no row is active or ``max_steps`` steps.

        Every few steps it asks how many rows still run; once at most half do, it goes on
        with those rows only (a compacted copy, written back at the end), so one long row
        does not keep a large batch stepping.
        """
        with torch.inference_mode():  # no autograd bookkeeping: ~15 % of a step at B = 1024
            kit = self._kit(d)
            cur, ids = d, None        # the rows being stepped, and their indices in d
            select = getattr(self.sequencer, "select_rows", None)  # a sequencer with per-row
            if select is not None:                                 # state (a prompt cache)
                select(None)                                       # is told which rows run
            done = 0
            while done < max_steps:
                act = cur.active
                n = int(act.sum())
                if n == 0:
                    break
                if n <= act.shape[0] // 2:
                    if ids is not None:
                        _put_rows(d, ids, cur)
                    ids = act.nonzero()[:, 0] if ids is None else ids[act]
                    cur = _take_rows(d, ids)
                    kit = self._kit(cur, ids, kit)
                    if select is not None:
                        select(ids)
                for _ in range(min(_CHECK_EVERY, max_steps - done)):
                    self._discrete_step(cur, kit, rec)
                done += _CHECK_EVERY
            if ids is not None:
                _put_rows(d, ids, cur)
            if select is not None:
                select(None)

    # ------------------------------------------------------------------ batched runs

    def run_batch(self, programs: Sequence[Program], inputs: Sequence[str],
                  max_steps: int = DEFAULT_MAX_STEPS, hard: bool = True, trace: bool = False,
                  *, out_size: int | None = None, on_limit: str = "raise",
                  keep_memory: bool = False, device: torch.device | str | None = None
                  ) -> list[MachineResult]:
        """Run each program on its input, all rows in lockstep; one result per row.

        Hard mode is the exact discrete path; ``trace`` (hard only) records the interpreter's
        TraceSteps. Soft mode runs the attention machine without gradients and reads the answer
        from the hardened final memory. A row that faults (or, with ``on_limit="raise"``, does
        not halt within ``max_steps``) gets ``fault`` = the interpreter's reason.
        """
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        if on_limit not in ("raise", "stop"):
            raise ValueError(f"on_limit must be 'raise' or 'stop', got {on_limit!r}")
        if trace and not hard:
            raise ValueError("trace=True needs hard mode (a soft step has no single trace)")
        d, layout = self._load_discrete(programs, inputs, out_size, device)
        rec: list[Tensor] | None = [] if trace else None
        if hard:
            self._run_discrete(d, max_steps, rec)
        else:
            with torch.no_grad():
                state = self.run(self._encode(d, torch.float32), max_steps, hard=False)
            d = self._decode(state)
        return self._results(programs, d, max_steps, on_limit, rec, keep_memory)

    def _results(self, programs: Sequence[Program], d: _Discrete, max_steps: int,
                 on_limit: str, rec: list[Tensor] | None, keep_memory: bool
                 ) -> list[MachineResult]:
        outputs = self._outputs(d)
        traces = self._traces(rec, len(programs)) if rec is not None else None
        mem = d.mem.cpu().numpy()
        pcs, steps, carries = d.pc.tolist(), d.steps.tolist(), d.carry.tolist()
        halted, faulted, sizes = d.halted.tolist(), d.fault.tolist(), d.size.tolist()
        results = []
        for r, p in enumerate(programs):
            fault = None
            if faulted[r]:
                fault = self._fault_reason(p, mem[r, :sizes[r]], d, r)
            elif not halted[r] and on_limit == "raise":
                fault = f"step limit of {max_steps} reached without HALT"
            tr = traces[r] if traces is not None else None
            if fault is not None:
                results.append(MachineResult("", (), steps[r], False, tr, carries[r], pcs[r],
                                             fault))
                continue
            memory = _rows_to_slots(mem[r, :sizes[r]], _tables(d, r)) if keep_memory else None
            results.append(MachineResult(_decode_text(p.alphabet, outputs[r]), outputs[r], steps[r],
                                         bool(halted[r]), tr, carries[r], pcs[r], None, memory))
        return results

    def _fault_reason(self, program: Program, rows: np.ndarray, d: _Discrete, r: int) -> str:
        """The interpreter's reason for the fault of row r, which is frozen at the faulting
        instruction: ``interp.transition`` on that row's memory names it."""
        sp = int(d.sp[r])
        try:
            transition(_rows_to_slots(rows, _tables(d, r)), int(d.pc[r]), int(d.carry[r]),
                       d.stack[r, :sp].tolist(), self.alphabet, step=int(d.steps[r]),
                       stack_size=self.config.stack_size, program_size=len(program.slots))
        except StepFault as e:
            return e.reason
        return "fault (the machine stopped here; the reference interpreter sees no fault)"

    def _traces(self, rec: list[Tensor], B: int) -> list[tuple[TraceStep, ...]]:
        """TraceSteps per row from the recorded step rows (see ``_discrete_step``)."""
        out: list[list[TraceStep]] = [[] for _ in range(B)]
        if not rec:
            return [() for _ in range(B)]
        data = torch.cat(rec, 0).tolist()               # executed steps, in order: [R, 38]
        ops, modes = list(Op), list(Mode)
        kinds = list(Kind)
        F = _F
        for row in data:
            b_i = row[0]
            step, pc, op = row[1], row[2], ops[row[3]]
            eff, imm = row[4:4 + F], row[4 + F:4 + 2 * F]
            vals, p0s = row[4 + 2 * F:4 + 3 * F], row[4 + 3 * F:4 + 4 * F]
            k = 4 + 4 * F
            c_in, c_out, result, wrote, dst = row[k:k + 5]
            new, nxt = row[k + 5:k + 5 + _W], row[k + 5 + _W]
            addrs: list[int | None] = []
            values: list[int | None] = []
            for i, role in enumerate(SPEC[op].roles):
                if imm[i]:
                    addrs.append(None)
                    values.append(vals[i])
                    continue
                addrs.append(eff[i])
                if role in (Role.SRC, Role.SLOT):
                    values.append(vals[i])
                elif role == Role.PTR:
                    values.append(p0s[i])
                elif role in (Role.ADDR, Role.TARGET):
                    values.append(eff[i])
                else:
                    values.append(None)
            written = None
            if wrote:
                table = None
                if new[_KIND] == Kind.WEIGHTS and len(row) > k + 6 + _W:
                    table = Slot.weights(row[k + 6 + _W:]).table
                written = Slot(kinds[new[_KIND]], ops[new[_OP]],
                               tuple(modes[m] for m in new[_MODES]),  # type: ignore[arg-type]
                               tuple(new[_ARGS]), new[_VAL], table)  # type: ignore[arg-type]
            out[b_i].append(TraceStep(step, pc, op, tuple(addrs), tuple(values), c_in, c_out,
                                      None if result < 0 else result,
                                      dst if wrote else None, written, nxt))
        return [tuple(x) for x in out]

    # ------------------------------------------------------------------ attention maps

    def attention(self, program: Program, input_text: str, max_steps: int = DEFAULT_MAX_STEPS,
                  hard: bool = True, *, out_size: int | None = None, max_rows: int = 1024,
                  max_cols: int = 1024) -> AttentionMaps:
        """Where fetch and each operand read looked at every step of one run, binned to at
        most ``max_rows`` × ``max_cols`` (max over a bin)."""
        d, lay = self._load_discrete([program], [input_text], out_size, None)
        N, n = d.mem.shape[1], int(d.size[0])
        slot_bin = -(-N // max_cols)
        cols = -(-N // slot_bin)
        chunks: list[Tensor] = []                                              # [1 + F, N']
        if hard:
            rec: list[Tensor] = []
            self._run_discrete(d, max_steps, rec)
            for t in self._traces(rec, 1)[0]:
                img = torch.zeros(1 + _F, cols)
                img[0, t.pc // slot_bin] = 1
                for i, a in enumerate(t.addrs):
                    if a is not None:
                        img[1 + i, a // slot_bin] = 1
                chunks.append(img)
        else:
            state = self._encode(d, torch.float32)
            with torch.no_grad():
                for _ in range(max_steps):
                    if bool(((state.halted > 0.5) | (state.fault > 0.5)).all()):
                        break
                    state, w = self._dense_step(state, False, record=True)
                    assert w is not None
                    w = F_nn.pad(w[0], (0, cols * slot_bin - N))               # [1 + F, N'·bin]
                    chunks.append(w.reshape(1 + _F, cols, slot_bin).amax(-1))
        T = len(chunks)
        step_bin = max(1, -(-T // max_rows))
        image = torch.stack(chunks, 1) if chunks else torch.zeros(1 + _F, 0, cols)
        pad = (-T) % step_bin
        image = F_nn.pad(image, (0, 0, 0, pad))
        image = image.reshape(1 + _F, -1, step_bin, cols).amax(2)
        regions = (("program", 0), ("input", lay.in_base[0]), ("output", lay.out_base[0]),
                   ("end", n))
        labels = ("fetch",) + tuple(f"operand {i + 1}" for i in range(_F))
        return AttentionMaps(image, labels, T, N, step_bin, slot_bin, regions, hard)


# ====================================================================== module-level helpers

@functools.lru_cache(maxsize=16)
def default_machine(alphabet: Alphabet = DEFAULT_ALPHABET,
                    stack_size: int = DEFAULT_STACK_SIZE) -> Machine:
    """The symbolic machine of an alphabet and stack size, built once (cached): its tables
    take a moment. Shared: do not modify it; build a Machine to change anything."""
    return Machine(MachineConfig(alphabet=alphabet, stack_size=stack_size))


def _machine_for(programs: Sequence[Program], stack_size: int) -> Machine:
    if not programs:
        raise ValueError("need at least one program")
    return default_machine(programs[0].alphabet, stack_size)


def load_batch(programs: Sequence[Program], inputs: Sequence[str],
               out_size: int | None = None) -> MachineState:
    """:meth:`Machine.load_batch` on the symbolic machine of the programs' alphabet."""
    return _machine_for(programs, DEFAULT_STACK_SIZE).load_batch(programs, inputs, out_size)


def run_batch(programs: Sequence[Program], inputs: Sequence[str],
              max_steps: int = DEFAULT_MAX_STEPS, hard: bool = True, trace: bool = False, *,
              out_size: int | None = None, stack_size: int = DEFAULT_STACK_SIZE,
              on_limit: str = "raise", keep_memory: bool = False) -> list[MachineResult]:
    """:meth:`Machine.run_batch` on the symbolic machine of the programs' alphabet."""
    return _machine_for(programs, stack_size).run_batch(
        programs, inputs, max_steps, hard, trace, out_size=out_size, on_limit=on_limit,
        keep_memory=keep_memory)


def run_program(program: Program, input_text: str, max_steps: int = DEFAULT_MAX_STEPS, *,
                hard: bool = True, trace: bool = False, out_size: int | None = None,
                stack_size: int = DEFAULT_STACK_SIZE) -> Result:
    """One run as ``interp.run`` does it (same Result, same MachineFault), on the machine."""
    image = memory_image(program, input_text, out_size)
    machine = default_machine(program.alphabet, stack_size)
    res = machine.run_batch([program], [input_text], max_steps, hard, trace,
                            out_size=out_size, keep_memory=True)[0]
    res.raise_fault(program)
    return res.to_result(image)


def draw_heatmap(maps: AttentionMaps, path: str, title: str = "") -> None:
    """Draw ``maps`` to ``path`` (matplotlib, Agg): one panel per read channel that read
    anything; rows are steps, columns slots, cropped to the slots that were read; the
    program / input / output boundaries are marked. Soft maps use a log colour scale, so
    the attention spread around each target is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize

    img = maps.image
    used = [c for c in range(img.shape[0]) if c == 0 or bool((img[c] > 0.5).any())]
    read = (img[used] > 0.01).any(0).any(0).nonzero()                     # columns read
    last = int(read.max()) + 1 if len(read) else img.shape[2]
    cols = min(img.shape[2], max(last + max(2, last // 10), 8))
    fig, axes = plt.subplots(1, len(used), figsize=(3.2 * len(used) + 1, 6), sharey=True,
                             squeeze=False)
    extent = (0, cols * maps.slot_bin, img.shape[1] * maps.step_bin, 0)
    norm = Normalize(0, 1) if maps.hard else LogNorm(1e-7, 1)
    for ax, c in zip(axes[0], used):
        shown = img[c, :, :cols].numpy()
        if not maps.hard:
            shown = shown.clip(1e-7, 1)
        ax.imshow(shown, aspect="auto", cmap="magma", norm=norm, extent=extent,
                  interpolation="nearest")
        ax.set_title(maps.labels[c])
        ax.set_xlabel("slot")
        for name, at in maps.regions:
            if 0 < at < cols * maps.slot_bin:
                ax.axvline(at, color="cyan", lw=0.8, ls="--")
            if name != "end" and at < cols * maps.slot_bin:
                ax.text(at, 0, f" {name}", color="cyan", fontsize=7, va="bottom", rotation=90)
    axes[0][0].set_ylabel("step")
    fig.suptitle(title or f"pointer attention ({'hard' if maps.hard else 'soft'})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def with_weights(state: MachineState, addr: int, delta: Tensor) -> MachineState:
    """The state with WEIGHTS slot ``addr``'s delta replaced by ``delta [B, V, V]`` in every row
    (how a controller's weight head writes a slot; differentiable in ``delta``).

    The slot must be a WEIGHTS slot of every row's program (loaded from the Program).
    """
    if state.weights is None or not 0 <= addr < state.weights.shape[1]:
        raise ValueError(f"slot {addr} is not in the WEIGHTS bank of this state (load a program "
                         f"with a WEIGHTS slot at {addr})")
    W = state.weights
    onehot = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
    onehot[addr] = 1
    m = onehot[None, :, None, None]
    return state._replace(weights=W * (1 - m) + m * delta[:, None].to(W.dtype))
