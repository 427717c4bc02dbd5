"""The symbolic parts of the machine: what every opcode does, exactly.

- the per-op tables, from ``isa.OPS`` (``_op_table_arrays``): where each op finds its
  operands a, b and its jump target, what it writes, which operand modes it accepts, when
  a jump is taken; the machine's dense step and its discrete path both read them;
- :func:`exact_op`, the definition of every value op on integers (docs/lasm.md);
- :class:`SymbolicOEU`, the exact OEU: one table per value op, built from :func:`exact_op`
  and mixed by the input distributions;
- :class:`SymbolicSequencer`, the exact control decisions.

``Machine`` uses the symbolic OEU and sequencer unless it is given others (a neural OEU, an
LLM controller's sequencer), through the protocols of ``llamacpu.machine.interfaces``.

Shape letters::

    B  batch rows                F  address fields (4) O  opcodes (27)
    M  operand modes (4)         V  alphabet symbols   C  carry digits (= base)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F_nn
from torch import Tensor, nn

from llamacpu.core.isa import DEFAULT_ALPHABET, NUM_FIELDS, OPS, Alphabet, Mode, Op, Role
from llamacpu.machine.interfaces import Decisions, OEUOutput, StepView

__all__ = ["exact_op", "SymbolicOEU", "SymbolicSequencer"]

_O, _F, _M = len(Op), NUM_FIELDS, len(Mode)
_TINY = 1e-12  # floor of the normalisers (mass of the writing / jumping ops)

_VALUE_OPS = (Op.MOV, Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD, Op.EQ, Op.LT, Op.MIN, Op.MAX,
              Op.GETC, Op.PEQ)
_WRITES_VAL = _VALUE_OPS + (Op.APPLY,)
"""Ops whose write replaces d.val: the OEU's value ops and APPLY (the weights bank's)."""
"""Ops whose write replaces a slot's val (MOV only with an immediate; else the whole slot)."""
_POINTER_OPS = (Op.LEA, Op.INC, Op.DEC)
_CARRY_OPS = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.SETC)
_JUMP_OPS = (Op.JMP, Op.JZ, Op.JNZ, Op.JEQ, Op.JNE, Op.CALL)
_ARITH_CARRY = (Op.ADD, Op.SUB, Op.MUL, Op.DIV)
_COMPARE = (Op.EQ, Op.LT, Op.MIN, Op.MAX)


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
    return t


# ====================================================================== the OEU

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
