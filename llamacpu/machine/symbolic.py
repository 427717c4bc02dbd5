"""The symbolic parts of the machine: what every opcode does, exactly, from the op table.

- the per-op tables, from ``isa.op_specs()`` (``_op_table_arrays``): where each op finds its
  operands a, b and its jump target, what it writes, which operand modes it accepts, when
  a jump is taken; the machine's dense step and its discrete path both read them;
- the exact ALU (:func:`alu_grid`, :class:`ExactALU`, :func:`exact_op`): every ALU op's
  scalar semantics (``OpSpec.alu``) evaluated once over the inputs it reads, as integer
  tables of result, carry out and fault;
- :class:`SymbolicOEU`, the exact OEU: one table per value op, built from those grids and
  mixed by the input distributions;
- :class:`SymbolicSequencer`, the exact control decisions.

``Machine`` uses the symbolic OEU and sequencer unless it is given others (a neural OEU, an
LLM controller's sequencer), through the protocols of ``llamacpu.machine.interfaces``.
Everything here is sized by the ops defined when it is built (``isa.define_op`` may add
some after the 27 built-in ones; docs/extending.md).

Shape letters::

    B  batch rows                F  address fields (4) O  opcodes (27 built in)
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

from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    NUM_FIELDS,
    OPS,
    Alphabet,
    Group,
    Jump,
    Mode,
    Op,
    OpSpec,
    Role,
    Write,
    op_specs,
    ops_generation,
)
from llamacpu.machine.interfaces import Decisions, OEUOutput, StepView

__all__ = ["exact_op", "alu_grid", "ExactALU", "SymbolicOEU", "SymbolicSequencer"]

_F, _M = NUM_FIELDS, len(Mode)
_TINY = 1e-12  # floor of the normalisers (mass of the writing / jumping ops)
_LOOKUP_MAX = 1 << 24  # entries of a flat [O, V, V, C] lookup beyond which ops are evaluated

# Groups of the built-in ops, derived from the op table. They fix the layout of the
# SymbolicOEU's named tables (kept as they are, so saved learnable tables keep loading).
_VALUE_OPS = tuple(s.op for s in OPS if s.writes_result)
"""Ops whose result the OEU computes and the machine writes to d.val (MOV's only with an
immediate source): MOV ADD SUB MUL DIV MOD EQ LT MIN MAX GETC PEQ. APPLY writes d.val too,
but its result comes from the WEIGHTS bank, not the OEU."""
_CARRY_OPS = tuple(s.op for s in OPS if s.writes_carry)              # ADD SUB MUL DIV SETC
_ARITH_CARRY = tuple(s.op for s in OPS if s.group == Group.ARITH and s.reads_carry)  # [4]
_MOD = tuple(s.op for s in OPS if s.group == Group.ARITH and not s.reads_carry)      # MOD
_COMPARE = tuple(s.op for s in OPS if s.group == Group.COMPARE and s.alu is not None)  # [4]
_GETC = next(s.op for s in OPS if s.writes == Write.VAL and s.alu and not s.roles[1:])
_SETC = next(s.op for s in OPS if s.writes_carry and s.writes == Write.NONE)
assert len(_ARITH_CARRY) == 4 and len(_COMPARE) == 4 and _MOD == (Op.MOD,)


def _extension_ops() -> tuple[OpSpec, ...]:
    """The ops ``isa.define_op`` added (after the built-in ones)."""
    return op_specs()[len(OPS):]


# ====================================================================== per-op tables

def _first(roles: Sequence[Role], wanted: tuple[Role, ...], skip: int = 0) -> int:
    """Index of the (skip+1)-th operand whose role is in ``wanted`` (0 if there is none)."""
    hits = [i for i, r in enumerate(roles) if r in wanted]
    return hits[skip] if len(hits) > skip else 0


def _op_table_arrays() -> dict[str, np.ndarray]:
    """Everything the machine needs to know per opcode, from the op table, as arrays (of
    the ops defined now)."""
    return _op_tables(ops_generation())


@functools.lru_cache(maxsize=8)
def _op_tables(generation: int) -> dict[str, np.ndarray]:
    specs = op_specs()
    O = len(specs)
    src = (Role.SRC, Role.SLOT)
    t: dict[str, np.ndarray] = {
        "a_field": np.array([_first(s.roles, src) for s in specs]),       # [O] where a is
        "b_field": np.array([_first(s.roles, src, 1) for s in specs]),    # [O] where b is
        "t_field": np.array([_first(s.roles, (Role.TARGET,)) for s in specs]),  # [O]
        "delta": np.array([s.ptr_delta for s in specs]),                  # [O] INC/DEC step
    }
    # write kind (isa.Write): 0 none, 1 the val field, 2 the pointer p0, 3 the whole slot
    # (MOV d, s), 4 the weights bank only (WSET: the slot's fields stay as they are)
    t["wkind"] = np.array([int(s.writes) for s in specs], dtype=np.int64)
    valid = np.ones((O, _F, _M), dtype=bool)     # [O, F, M] the modes an operand accepts
    used = np.zeros((O, _F), dtype=bool)         # [O, F] operand exists
    for o, s in enumerate(specs):
        for i, role in enumerate(s.roles):
            used[o, i] = True
            valid[o, i] = [Mode(m) in role.modes for m in range(_M)]
    t.update(valid=valid, used=used)
    # taken[o, a == 0, a == b]: whether a jump op goes to its target
    taken = np.zeros((O, 2, 2), dtype=bool)
    for o, s in enumerate(specs):
        for z in (0, 1):
            for e in (0, 1):
                taken[o, z, e] = s.jump.taken(bool(z), bool(e))
    t["taken"] = taken
    t["writes"] = t["wkind"] != Write.NONE
    one_hot = np.eye(_F)
    t["asel"] = one_hot[t["a_field"]]                           # [O, F]
    t["bsel"] = one_hot[t["b_field"]]
    tsel = one_hot[t["t_field"]]
    tsel[[o for o, s in enumerate(specs) if not s.is_jump]] = 0
    t["tsel"] = tsel                                            # [O, F] target field of jumps
    t["value_nomov"] = (t["wkind"] == Write.VAL).astype(np.float64)   # [O] d.val written
    t["jumps"] = np.array([float(s.jump != Jump.NEVER) for s in specs])  # [O] pc may jump
    return t


# ====================================================================== the exact ALU

@functools.lru_cache(maxsize=256)
def alu_grid(spec: OpSpec, alphabet: Alphabet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``spec.alu`` evaluated over every input it reads: (result, carry_out, fault), each
    ``[Va, Vb, Cc]`` over (a, b, carry).

    An axis has size 1 where the op does not read that input (no such operand, carry not
    read); a and b range over the digits if the op's ``digits`` is set, else over all
    symbols. Where the op faults, result and carry are 0 (the machine faults there); where
    it does not write the carry, carry_out is the carry in (size-1 carry axis: 0).
    """
    if spec.alu is None:
        raise ValueError(f"{spec.mnemonic} has no scalar semantics (OpSpec.alu)")
    V, C = alphabet.size, alphabet.base
    sym = range(C) if spec.digits else range(V)
    As = sym if spec.operand(0) is not None else range(1)
    Bs = sym if spec.operand(1) is not None else range(1)
    Cs = range(C) if spec.reads_carry else range(1)
    res = np.zeros((len(As), len(Bs), len(Cs)), dtype=np.int64)
    cout = np.zeros_like(res)
    fault = np.zeros(res.shape, dtype=bool)
    for a in As:
        for b in Bs:
            for c in Cs:
                out = spec.alu(a, b, c, C)
                if isinstance(out, str):
                    fault[a, b, c] = True
                    continue
                r, k = int(out[0]), int(out[1])
                if spec.writes == Write.VAL and not 0 <= r < V:
                    raise ValueError(f"{spec.mnemonic}({a}, {b}, carry {c}) gives {r}, not a "
                                     f"symbol of {alphabet.describe()}")
                if spec.writes_carry and not 0 <= k < C:
                    raise ValueError(f"{spec.mnemonic}({a}, {b}, carry {c}) gives carry {k}, "
                                     f"not a digit of base {C}")
                res[a, b, c] = r
                cout[a, b, c] = k if spec.writes_carry else c
    return res, cout, fault


def _full_grid(spec: OpSpec, alphabet: Alphabet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`alu_grid` spread over every (a, b, carry) ∈ V × V × C: inputs the op does
    not read are broadcast; non-digit operands of a ``digits`` op fault."""
    V, C = alphabet.size, alphabet.base
    res, cout, fault = alu_grid(spec, alphabet)
    shape = (V, V, C)
    out_r = np.zeros(shape, dtype=np.int64)
    out_c = np.broadcast_to(np.arange(C), shape).copy()            # carry kept
    out_f = np.zeros(shape, dtype=bool)
    na, nb = res.shape[0], res.shape[1]
    if spec.digits:                                                # non-digits fault
        if spec.operand(0) is not None:
            out_f[C:] = True
        if spec.operand(1) is not None:
            out_f[:, C:] = True
    sa = slice(0, na) if na > 1 else slice(None)
    sb = slice(0, nb) if nb > 1 else slice(None)
    out_r[sa, sb] = res
    out_f[sa, sb] |= fault
    if spec.writes_carry:
        out_c[sa, sb] = cout
    return out_r, out_c, out_f


@functools.lru_cache(maxsize=16)
def _lookup(alphabet: Alphabet, generation: int) -> tuple[np.ndarray, ...] | None:
    """Flat ``[O·V·V·C]`` result, carry_out and fault of every op defined now (None when
    too large). Ops without scalar semantics pass a through and keep the carry."""
    specs = op_specs()
    V, C = alphabet.size, alphabet.base
    if len(specs) * V * V * C > _LOOKUP_MAX:
        return None
    shape = (len(specs), V, V, C)
    res = np.broadcast_to(np.arange(V)[None, :, None, None], shape).copy()
    cout = np.broadcast_to(np.arange(C), shape).copy()
    fault = np.zeros(shape, dtype=bool)
    for o, s in enumerate(specs):
        if s.alu is not None:
            res[o], cout[o], fault[o] = _full_grid(s, alphabet)
    return res.reshape(-1), cout.reshape(-1), fault.reshape(-1)


class ExactALU(nn.Module):
    """Exact (result, carry_out, fault) of every op defined when it is built, on integer
    tensors: a lookup in flat tables, or, for alphabets too large for them (bytes), each
    distinct input evaluated through ``OpSpec.alu`` once and remembered. Its tables are
    shared by every ExactALU of the alphabet: do not modify them."""

    def __init__(self, alphabet: Alphabet = DEFAULT_ALPHABET) -> None:
        super().__init__()
        self.alphabet = alphabet
        self.specs = op_specs()
        lut = _lookup(alphabet, ops_generation())
        self.has_lookup = lut is not None
        if lut is not None:
            for name, x in zip(("result", "carry", "fault"), lut):
                self.register_buffer(f"lookup_{name}", torch.from_numpy(x), persistent=False)
        self._memo: dict[int, tuple[int, int, bool]] = {}

    def forward(self, op: Tensor, a: Tensor, b: Tensor, carry: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        V, C = self.alphabet.size, self.alphabet.base
        at = ((op * V + a) * V + b) * C + carry                          # broadcast
        if self.has_lookup:
            return (self.lookup_result.take(at), self.lookup_carry.take(at),
                    self.lookup_fault.take(at))
        keys, inv = torch.unique(at.reshape(-1), return_inverse=True)
        rows = [self._one(k) for k in keys.tolist()]
        out = torch.tensor(rows, dtype=torch.long, device=at.device).reshape(-1, 3)
        res, cout, fault = (out[inv, i].reshape(at.shape) for i in range(3))
        return res, cout, fault.bool()

    def _one(self, key: int) -> tuple[int, int, bool]:
        """(result, carry_out, fault) of one flat key, through OpSpec.alu (memoised)."""
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        V, C = self.alphabet.size, self.alphabet.base
        rest, c = divmod(key, C)
        rest, b = divmod(rest, V)
        o, a = divmod(rest, V)
        s = self.specs[o]
        out: tuple[int, int, bool] = (a, c, False)
        if s.alu is not None:
            ia, ib = s.operand(0), s.operand(1)
            a_, b_ = (a if ia is not None else 0), (b if ib is not None else 0)
            if s.digits and (a_ >= C or b_ >= C):
                out = (0, c, True)
            else:
                r = s.alu(a_, b_, c if s.reads_carry else 0, C)
                out = ((0, c, True) if isinstance(r, str)
                       else (int(r[0]), int(r[1]) if s.writes_carry else c, False))
        self._memo[key] = out
        return out


@functools.lru_cache(maxsize=16)
def _exact_alu(alphabet: Alphabet, generation: int) -> ExactALU:
    return ExactALU(alphabet)


def exact_op(op: Tensor, a: Tensor, b: Tensor, carry: Tensor, ptr_eq: Tensor,
             alphabet: Alphabet) -> tuple[Tensor, Tensor]:
    """(result, carry_out) of every value op on broadcastable integer tensors (docs/lasm.md),
    from the op table's scalar semantics (``OpSpec.alu``); PEQ gives ``ptr_eq``.

    Non-value ops pass ``a`` through as result and keep the carry. Cases that fault
    (non-digits in arithmetic, division by zero, a DIV quotient that is not a digit) give
    result 0 and keep the carry: the machine faults on them.
    """
    alu = _exact_alu(alphabet, ops_generation())
    op, a, b, carry = torch.broadcast_tensors(op, a, b, carry)
    res, cout, _ = alu(op.long(), a.long(), b.long(), carry.long())
    res = torch.where(op == Op.PEQ, ptr_eq.long(), res)
    return res, cout


# ====================================================================== the OEU

class SymbolicOEU(nn.Module):
    """The exact OEU: one table per value op, mixed by the input distributions.

    Tables (one-hot rows; with ``learnable=True`` logits ``logit_scale · one-hot`` as
    ``nn.Parameter``s, read through a softmax, so training can change them), all built from
    the op table's scalar semantics (:func:`alu_grid`):

    ========  ==================  ===============================================
    arith     [4, C³, C] ×2       ADD SUB MUL DIV: (a, b, carry) → digit, carry out
    mod       [C², C]             MOD: (a, b) → digit
    compare   [4, V², V]          EQ LT MIN MAX over every symbol
    peq       [2, V]              PEQ: (pointers differ, equal) → 0, 1
    getc      [C, V]              GETC: carry → symbol
    mov       [V, V]              MOV: a → a
    setc      [C, C]              SETC: a → carry
    ext_X     [Va·Vb·Cc, V + C]   an op X added by ``isa.define_op``: result | carry out
    ========  ==================  ===============================================

    Arithmetic tables cover digits only (non-digit mass is dropped; hard mode faults there).
    A soft step costs O(B·(C³ + V²)·V). Alphabets whose tables would exceed
    ``max_table_entries`` (the 257-symbol bytes alphabet) run in hard mode only, through
    :class:`ExactALU`. The OEU covers the ops defined when it is built.
    """

    def __init__(self, alphabet: Alphabet = DEFAULT_ALPHABET, learnable: bool = False,
                 logit_scale: float = 12.0, max_table_entries: int = 1 << 25) -> None:
        super().__init__()
        self.alphabet = alphabet
        self.learnable = learnable
        self.logit_scale = logit_scale
        self.n_ops = len(op_specs())
        self.extensions = _extension_ops()
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
        # The hard path's lookup tables: result and carry_out per (op, a, b, carry), flat
        # (copies: this OEU's tables may be changed, the shared ones may not).
        lut = None if learnable else _lookup(alphabet, ops_generation())
        self.has_lookup = lut is not None
        if lut is not None:
            self.register_buffer("lookup_result", torch.tensor(lut[0]), persistent=False)
            self.register_buffer("lookup_carry", torch.tensor(lut[1]), persistent=False)

    def table_shapes(self, alphabet: Alphabet) -> dict[str, tuple[int, ...]]:
        """The shape of every table for an alphabet (see the class docstring)."""
        C, V = alphabet.base, alphabet.size
        shapes = {"arith_result": (4, C ** 3, C), "arith_carry": (4, C ** 3, C),
                  "mod": (C * C, C), "compare": (4, V * V, V), "peq": (2, V),
                  "getc": (C, V), "mov": (V, V), "setc": (C, C)}
        for s in self.extensions:
            shapes[f"ext_{s.mnemonic}"] = (math.prod(_ext_domain(s, alphabet)), V + C)
        return shapes

    def _exact_tables(self) -> dict[str, Tensor]:
        """One-hot float tables from the scalar semantics (:func:`alu_grid`)."""
        alpha = self.alphabet
        C, V = alpha.base, alpha.size
        spec = {s.op: s for s in OPS}

        def grid(op: Op) -> tuple[Tensor, Tensor]:
            res, cout, _ = alu_grid(spec[op], alpha)
            return torch.from_numpy(res), torch.from_numpy(cout)

        def hot(idx: Tensor, n: int) -> Tensor:
            return F_nn.one_hot(idx, n).float()

        arith = [grid(o) for o in _ARITH_CARRY]                          # [C, C, C] each
        dg, sym = torch.arange(C), torch.arange(V)
        out = {
            "arith_result": hot(torch.stack([r for r, _ in arith]), C).reshape(4, C ** 3, C),
            "arith_carry": hot(torch.stack([c for _, c in arith]), C).reshape(4, C ** 3, C),
            "mod": hot(grid(Op.MOD)[0], C).reshape(C * C, C),
            "compare": hot(torch.stack([grid(o)[0] for o in _COMPARE]), V).reshape(4, V * V, V),
            "peq": hot(torch.tensor([0, 1]), V),
            "getc": hot(grid(_GETC)[0].reshape(C), V),
            "mov": hot(sym, V),
            "setc": hot(grid(_SETC)[1].reshape(C), C),
        }
        assert torch.equal(out["getc"].argmax(-1), dg)
        for s in self.extensions:
            res, cout, _ = alu_grid(s, alpha)
            out[f"ext_{s.mnemonic}"] = torch.cat(
                [hot(torch.from_numpy(res).reshape(-1), V),
                 hot(torch.from_numpy(cout).reshape(-1), C)], -1)          # [Va·Vb·Cc, V + C]
        return out

    def table(self, name: str, dtype: torch.dtype) -> Tensor:
        """A table's probabilities (softmax of the logits if learnable), in ``dtype``."""
        if not self.has_tables:
            raise ValueError(
                f"SymbolicOEU has no soft tables for {self.alphabet.describe()} (they would "
                f"exceed max_table_entries); run this alphabet in hard mode")
        if self.learnable:
            logits = getattr(self, f"logits_{name}").to(dtype)
            if name.startswith("ext_"):                 # result | carry: two distributions
                V = self.alphabet.size
                return torch.cat([torch.softmax(logits[:, :V], -1),
                                  torch.softmax(logits[:, V:], -1)], -1)
            return torch.softmax(logits, -1)
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

        res_of = {o: r for o, r in zip(_ARITH_CARRY, pad(ar_res).unbind(1))}
        res_of.update(zip(_COMPARE, cmp.unbind(1)))
        res_of.update({Op.MOV: mov, Op.MOD: pad(mod), _GETC: getc, Op.PEQ: peq})
        car_of = dict(zip(_ARITH_CARRY, ar_car.unbind(1)))
        car_of[_SETC] = setc
        for s in self.extensions:                                          # define_op's ops
            ext = _ext_inputs(s, a, b, carry, self.alphabet) @ self.table(f"ext_{s.mnemonic}", dt)
            res_of[s.op] = ext[:, :V]                                      # [B, V]
            if s.writes_carry:
                car_of[s.op] = ext[:, V:]                                  # [B, C]
        val_ops = list(_VALUE_OPS) + [s.op for s in self.extensions]
        outs = torch.stack([res_of[o] for o in val_ops], 1)                # [B, Ov, V]
        p_val = op[:, val_ops]                                             # [B, Ov]
        result = torch.einsum("bk,bkv->bv", p_val, outs)
        result = result / p_val.sum(-1, keepdim=True).clamp_min(_TINY)
        car_ops = list(car_of)
        couts = torch.stack([car_of[o] for o in car_ops], 1)               # [B, Oc, C]
        p_car = op[:, car_ops]                                             # [B, Oc]
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
            out = self(F_nn.one_hot(op, self.n_ops).to(dt), F_nn.one_hot(a, V).to(dt),
                       F_nn.one_hot(b, V).to(dt), F_nn.one_hot(carry, C).to(dt), ptr_eq.to(dt))
            return out.result.argmax(-1), out.carry.argmax(-1)
        if not self.has_lookup:
            return exact_op(op, a, b, carry, ptr_eq, self.alphabet)
        at = ((op * V + a) * V + b) * C + carry
        res = torch.where(op == Op.PEQ, ptr_eq.long(), self.lookup_result.take(at))
        return res, self.lookup_carry.take(at)


def _ext_domain(spec: OpSpec, alphabet: Alphabet) -> tuple[int, int, int]:
    """(Va, Vb, Cc): the sizes of the inputs an op reads (see :func:`alu_grid`)."""
    n = alphabet.base if spec.digits else alphabet.size
    return (n if spec.operand(0) is not None else 1, n if spec.operand(1) is not None else 1,
            alphabet.base if spec.reads_carry else 1)


def _ext_inputs(spec: OpSpec, a: Tensor, b: Tensor, carry: Tensor,
                alphabet: Alphabet) -> Tensor:
    """``[B, Va·Vb·Cc]`` the joint distribution of the inputs an op reads (non-digit mass
    of a ``digits`` op dropped, as the arithmetic tables drop it)."""
    na, nb, nc = _ext_domain(spec, alphabet)
    one = a.new_ones(a.shape[0], 1)
    pa = a[:, :na] if na > 1 else one
    pb = b[:, :nb] if nb > 1 else one
    pc = carry if nc > 1 else one
    return (pa[:, :, None, None] * pb[:, None, :, None] * pc[:, None, None, :]).flatten(1)


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
