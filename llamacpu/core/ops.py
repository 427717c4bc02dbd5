"""The op table: operand modes and roles, opcodes, and one :class:`OpSpec` per op.

Every op is defined once, here: its operand roles, its group, its meaning in words, and
the facts the interpreter and the machine derive everything else from (what it writes,
when it jumps, whether it reads or writes the carry) and, for an ALU op, its scalar
semantics ``alu(a, b, carry, base)``, from which the reference interpreter computes and
the machine's exact tables are built. :func:`define_op` adds an ALU op at run time (a test
fixture, an experiment; docs/extending.md). ``llamacpu.core.isa`` re-exports every name.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "Mode", "Role", "Op", "Group", "Write", "Jump", "AluFn", "OpSpec", "OPS", "SPEC",
    "MNEMONICS", "ExtOp", "op_specs", "n_ops", "opcode", "ops_generation", "define_op",
    "remove_op", "defined_op", "isa_table_markdown",
]


class Mode(enum.IntEnum):
    """How an address field is used by an instruction."""

    NONE = 0       # field unused
    DIRECT = 1     # the operand is the slot at the address in the field
    INDIRECT = 2   # the operand is the slot that slot[field].p0 points to: ``[p]``
    IMMEDIATE = 3  # the operand is the instruction's own ``val`` (field unused): ``#v``


class Role(enum.Enum):
    """What an operand position of an instruction means; decides which modes it accepts."""

    DST = "dst"        # a slot that is written
    SRC = "src"        # a symbol that is read (its val field)
    SLOT = "slot"      # a whole slot that is read (MOV copies all its fields)
    PTR = "ptr"        # a slot whose pointer field p0 is read and/or written
    ADDR = "addr"      # an effective address: DIRECT x -> address of x; INDIRECT [p] -> p.p0
    TARGET = "target"  # a code address to jump to: a label, or [p] for p.p0
    WEIGHTS = "weights"  # a WEIGHTS slot whose function is run (APPLY) or changed (WSET)

    @property
    def modes(self) -> frozenset[Mode]:
        return _ROLE_MODES[self]


_ROLE_MODES = {
    Role.DST: frozenset({Mode.DIRECT, Mode.INDIRECT}),
    Role.SRC: frozenset({Mode.DIRECT, Mode.INDIRECT, Mode.IMMEDIATE}),
    Role.SLOT: frozenset({Mode.DIRECT, Mode.INDIRECT, Mode.IMMEDIATE}),
    Role.PTR: frozenset({Mode.DIRECT, Mode.INDIRECT}),
    Role.ADDR: frozenset({Mode.DIRECT, Mode.INDIRECT}),
    Role.TARGET: frozenset({Mode.DIRECT, Mode.INDIRECT}),
    Role.WEIGHTS: frozenset({Mode.DIRECT, Mode.INDIRECT}),
}


class Op(enum.IntEnum):
    """Opcodes. The order is the opcode's index in tensors: append, never reorder."""

    NOP = 0
    HALT = 1
    MOV = 2
    LEA = 3
    INC = 4
    DEC = 5
    ADD = 6
    SUB = 7
    MUL = 8
    DIV = 9
    MOD = 10
    EQ = 11
    LT = 12
    MIN = 13
    MAX = 14
    SETC = 15
    GETC = 16
    PEQ = 17
    JMP = 18
    JZ = 19
    JNZ = 20
    JEQ = 21
    JNE = 22
    CALL = 23
    RET = 24
    APPLY = 25
    WSET = 26


class Group(enum.Enum):
    """Families of ops, as the README's ISA table groups them."""

    CONTROL = "control"
    MOVE = "move"
    POINTER = "pointer"
    ARITH = "arithmetic"
    COMPARE = "compare"
    CARRY = "carry"
    WEIGHTS = "weights"


class Write(enum.IntEnum):
    """What an op writes, always at the address of its operand 0 (the values are the
    machine's write kinds)."""

    NONE = 0     # nothing
    VAL = 1      # the val field of d: ALU ops, GETC, PEQ, APPLY
    PTR = 2      # the pointer field p0 of p: LEA, INC, DEC
    SLOT = 3     # the whole slot (MOV d, s); with an immediate source only d.val (MOV d, #v)
    WEIGHTS = 4  # one entry of a WEIGHTS slot's function (WSET); the slot's fields stay


class Jump(enum.Enum):
    """When an op sends the pc elsewhere than pc + 1; a and b are its operands 0 and 1."""

    NEVER = "never"
    ALWAYS = "always"          # JMP, CALL, RET (RET's target is the popped address)
    IF_ZERO = "a = 0"          # JZ
    IF_NONZERO = "a ≠ 0"       # JNZ
    IF_EQUAL = "a = b"         # JEQ
    IF_DIFFERENT = "a ≠ b"     # JNE

    def taken(self, a_is_zero: bool, a_equals_b: bool) -> bool:
        """Whether the jump is taken, from the two facts every condition is made of."""
        return {Jump.NEVER: False, Jump.ALWAYS: True, Jump.IF_ZERO: a_is_zero,
                Jump.IF_NONZERO: not a_is_zero, Jump.IF_EQUAL: a_equals_b,
                Jump.IF_DIFFERENT: not a_equals_b}[self]


AluFn = Callable[[int, int, int, int], "tuple[int, int] | str"]
"""An ALU op's scalar semantics: ``(a, b, carry, base) -> (result, carry_out)``, or a fault
reason (a str). a and b are the op's first and second symbol operand (0 where it has none);
carry is the carry register (0 unless the op reads it); carry_out is used only if the op
writes the carry. Called on digits only if the op's ``digits`` is set, else on every symbol;
the result must be a symbol of the alphabet (and a digit if the op writes the carry)."""


@dataclass(frozen=True)
class OpSpec:
    """One row of the ISA table: everything the interpreter and the machine know of an op."""

    op: Op                   # the opcode (an ``Op``, or an ``ExtOp`` from ``define_op``)
    roles: tuple[Role, ...]  # operand positions, in source order; operand i uses field p_i
    group: Group
    semantics: str           # the exact meaning, in the notation of the README table
    writes_carry: bool = False
    reads_carry: bool = False
    writes: Write = Write.NONE  # what it writes at operand 0's address
    jump: Jump = Jump.NEVER     # when it sends the pc to its target (or the return address)
    alu: AluFn | None = None    # the scalar semantics of an ALU op (see AluFn)
    digits: bool = False        # fault unless every symbol operand is a digit (before alu)
    ptr_delta: int = 0          # pointer ops: added to p.p0 (INC +1, DEC −1; LEA loads)

    @property
    def mnemonic(self) -> str:
        return self.op.name

    @property
    def arity(self) -> int:
        return len(self.roles)

    @property
    def is_jump(self) -> bool:
        """Whether the op has a jump target operand (RET jumps, but has none)."""
        return Role.TARGET in self.roles

    @property
    def writes_result(self) -> bool:
        """Whether the op writes a result symbol that the OEU computes: the ALU ops, GETC,
        PEQ and MOV (whose result is written only from an immediate). APPLY writes d.val
        too, but its result is the WEIGHTS slot's function, not the OEU's."""
        return self.writes in (Write.VAL, Write.SLOT) and not self.uses_weights

    @property
    def uses_weights(self) -> bool:
        """Whether the op runs or changes a WEIGHTS slot's function (APPLY, WSET)."""
        return Role.WEIGHTS in self.roles

    def operand(self, k: int) -> int | None:
        """Which operand is the op's k-th symbol operand (a: k = 0, b: k = 1), if any."""
        hits = [i for i, r in enumerate(self.roles) if r in (Role.SRC, Role.SLOT)]
        return hits[k] if len(hits) > k else None


# The scalar semantics of the built-in ALU ops (docs/lasm.md), (a, b, carry, base) -> ...

def _add(a: int, b: int, c: int, base: int) -> tuple[int, int]:
    r = a + b + c                                   # r = a + b + C
    return r % base, r // base


def _sub(a: int, b: int, c: int, base: int) -> tuple[int, int]:
    r = a - b - c                                   # r = a − b − C
    return r % base, (1 if r < 0 else 0)


def _mul(a: int, b: int, c: int, base: int) -> tuple[int, int]:
    r = a * b + c                                   # r = a · b + C
    return r % base, r // base


def _div(a: int, b: int, c: int, base: int) -> tuple[int, int] | str:
    if b == 0:
        return "DIV by zero"
    r = c * base + a                                # r = C · base + a
    if r // b >= base:
        return (f"DIV quotient {r // b} (= ({c}·{base} + {a}) div {b}) is not a digit of "
                f"base {base}")
    return r // b, r % b


def _mod(a: int, b: int, c: int, base: int) -> tuple[int, int] | str:
    return (a % b, c) if b else "MOD by zero"


_R = Role
_VAL, _PTR, _ALWAYS = Write.VAL, Write.PTR, Jump.ALWAYS
_ABC = (_R.DST, _R.SRC, _R.SRC)
OPS: tuple[OpSpec, ...] = (
    OpSpec(Op.NOP, (), Group.CONTROL, "do nothing"),
    OpSpec(Op.HALT, (), Group.CONTROL, "stop; the answer is read from OUT.p0 up to END"),
    OpSpec(Op.MOV, (_R.DST, _R.SLOT), Group.MOVE,
           "d ← s (every field); with #v: d.val ← v", writes=Write.SLOT),
    OpSpec(Op.LEA, (_R.PTR, _R.ADDR), Group.POINTER,
           "p.p0 ← address of x; with [q]: p.p0 ← q.p0 (copy a pointer)", writes=_PTR),
    OpSpec(Op.INC, (_R.PTR,), Group.POINTER, "p.p0 ← p.p0 + 1 (fault if it leaves memory)",
           writes=_PTR, ptr_delta=1),
    OpSpec(Op.DEC, (_R.PTR,), Group.POINTER, "p.p0 ← p.p0 − 1 (fault if it leaves memory)",
           writes=_PTR, ptr_delta=-1),
    OpSpec(Op.ADD, _ABC, Group.ARITH,
           "r = a + b + C; d ← r mod base; C ← r div base", True, True,
           writes=_VAL, alu=_add, digits=True),
    OpSpec(Op.SUB, _ABC, Group.ARITH,
           "r = a − b − C; d ← r mod base; C ← 1 if r < 0 else 0", True, True,
           writes=_VAL, alu=_sub, digits=True),
    OpSpec(Op.MUL, _ABC, Group.ARITH,
           "r = a · b + C; d ← r mod base; C ← r div base", True, True,
           writes=_VAL, alu=_mul, digits=True),
    OpSpec(Op.DIV, _ABC, Group.ARITH,
           "r = C · base + a; d ← r div b; C ← r mod b (long-division step; fault if b = 0 "
           "or r div b is not a digit)",
           True, True, writes=_VAL, alu=_div, digits=True),
    OpSpec(Op.MOD, _ABC, Group.ARITH, "d ← a mod b (fault if b = 0)",
           writes=_VAL, alu=_mod, digits=True),
    OpSpec(Op.EQ, _ABC, Group.COMPARE, "d ← 1 if a = b else 0",
           writes=_VAL, alu=lambda a, b, c, base: (1 if a == b else 0, c)),
    OpSpec(Op.LT, _ABC, Group.COMPARE, "d ← 1 if a < b else 0",
           writes=_VAL, alu=lambda a, b, c, base: (1 if a < b else 0, c)),
    OpSpec(Op.MIN, _ABC, Group.COMPARE, "d ← min(a, b)",
           writes=_VAL, alu=lambda a, b, c, base: (min(a, b), c)),
    OpSpec(Op.MAX, _ABC, Group.COMPARE, "d ← max(a, b)",
           writes=_VAL, alu=lambda a, b, c, base: (max(a, b), c)),
    OpSpec(Op.SETC, (_R.SRC,), Group.CARRY, "C ← a (a must be a digit)", True, False,
           alu=lambda a, b, c, base: (a, a), digits=True),
    OpSpec(Op.GETC, (_R.DST,), Group.CARRY, "d ← C", False, True,
           writes=_VAL, alu=lambda a, b, c, base: (c, c)),
    OpSpec(Op.PEQ, (_R.DST, _R.PTR, _R.PTR), Group.COMPARE, "d ← 1 if p.p0 = q.p0 else 0",
           writes=_VAL),
    OpSpec(Op.JMP, (_R.TARGET,), Group.CONTROL, "pc ← t", jump=_ALWAYS),
    OpSpec(Op.JZ, (_R.SRC, _R.TARGET), Group.CONTROL, "if a = 0: pc ← t", jump=Jump.IF_ZERO),
    OpSpec(Op.JNZ, (_R.SRC, _R.TARGET), Group.CONTROL, "if a ≠ 0: pc ← t",
           jump=Jump.IF_NONZERO),
    OpSpec(Op.JEQ, (_R.SRC, _R.SRC, _R.TARGET), Group.CONTROL, "if a = b: pc ← t",
           jump=Jump.IF_EQUAL),
    OpSpec(Op.JNE, (_R.SRC, _R.SRC, _R.TARGET), Group.CONTROL, "if a ≠ b: pc ← t",
           jump=Jump.IF_DIFFERENT),
    OpSpec(Op.CALL, (_R.TARGET,), Group.CONTROL, "push pc + 1; pc ← t (fault on overflow)",
           jump=_ALWAYS),
    OpSpec(Op.RET, (), Group.CONTROL, "pc ← pop (fault on underflow)", jump=_ALWAYS),
    OpSpec(Op.APPLY, (_R.DST, _R.WEIGHTS, _R.SRC), Group.WEIGHTS,
           "d ← f_w(a), f_w the function held in WEIGHTS slot w (fault if w is not WEIGHTS)",
           writes=_VAL),
    OpSpec(Op.WSET, (_R.WEIGHTS, _R.SRC, _R.SRC), Group.WEIGHTS,
           "f_w(a) ← b: column a of w's delta replaced by onehot(b) (self-modification; "
           "fault if w is not WEIGHTS)", writes=Write.WEIGHTS),
)
"""The built-in ops, one per ``Op``, in opcode order."""
del _R, _VAL, _PTR, _ALWAYS, _ABC
assert [s.op for s in OPS] == list(Op), "OPS must list every Op once, in order"


# ====================================================================== defining new ops
#
# The registry of every op now defined: the built-in OPS, then the ops ``define_op`` added
# (opcodes 27, 28, ... in order). SPEC and MNEMONICS are read-only views of it. Whatever
# caches something per opcode keys it on ``ops_generation()``, which every change bumps.

class ExtOp(int):
    """The opcode of an op defined with :func:`define_op`: an int with a name, used like an
    ``Op`` member (``op.name``, ``int(op)``, equality with plain ints)."""

    name: str

    def __new__(cls, value: int, name: str) -> ExtOp:
        self = super().__new__(cls, value)
        self.name = name
        return self

    @property
    def value(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"<ExtOp.{self.name}: {int(self)}>"


_SPEC: dict[int, OpSpec] = {s.op: s for s in OPS}
_MNEMONICS: dict[str, Op] = {s.mnemonic: s.op for s in OPS}
SPEC: Mapping[int, OpSpec] = MappingProxyType(_SPEC)
"""Opcode -> OpSpec of every op now defined (read-only view)."""
MNEMONICS: Mapping[str, Op] = MappingProxyType(_MNEMONICS)
"""Mnemonic -> opcode of every op now defined (read-only view)."""
_generation = [0]


def op_specs() -> tuple[OpSpec, ...]:
    """Every op now defined, in opcode order: ``OPS`` and then the defined ones."""
    return tuple(_SPEC.values())


def n_ops() -> int:
    """O, the number of opcodes now defined (27 without ``define_op``)."""
    return len(_SPEC)


def opcode(code: int) -> Op:
    """The ``Op`` (or ``ExtOp``) of an opcode number; ValueError if none is defined."""
    spec = _SPEC.get(int(code))
    if spec is None:
        raise ValueError(f"{code} is not a defined opcode (0..{len(_SPEC) - 1})")
    return spec.op


def ops_generation() -> int:
    """A number that changes whenever an op is defined or removed (a cache key)."""
    return _generation[0]


def define_op(name: str, roles: tuple[Role, ...], alu: AluFn, semantics: str, *,
              group: Group = Group.ARITH, reads_carry: bool = False,
              writes_carry: bool = False, digits: bool = False) -> OpSpec:
    """Add an ALU op with the next free opcode; return its spec. See docs/extending.md.

    ``roles``: ``(DST,)``, ``(DST, SRC)`` or ``(DST, SRC, SRC)``: it writes ``d.val ←
    result`` of ``alu(a, b, carry, base)`` (see :data:`AluFn`). Once defined, ``assemble``
    accepts the mnemonic and the reference interpreter runs it; a ``Machine`` built
    afterwards runs it too (its sizes follow the number of ops). Models built for the 27
    built-in ops do not know it. :func:`remove_op` (or :func:`defined_op`) undoes it.
    """
    name = name.upper()
    if not name.isidentifier() or name in _MNEMONICS:
        raise ValueError(f"cannot define op {name!r}: not an identifier, or already defined")
    roles = tuple(roles)
    if not roles or roles[0] != Role.DST or any(r != Role.SRC for r in roles[1:]) \
            or len(roles) > 3:
        raise ValueError(f"an ALU op's roles are (DST,), (DST, SRC) or (DST, SRC, SRC); "
                         f"got {roles}")
    if not callable(alu):
        raise TypeError("alu must be a function (a, b, carry, base) -> (result, carry_out)")
    spec = OpSpec(ExtOp(len(_SPEC), name), roles, group, semantics, writes_carry, reads_carry,
                  writes=Write.VAL, alu=alu, digits=digits)
    _SPEC[spec.op] = spec
    _MNEMONICS[name] = spec.op
    _generation[0] += 1
    return spec


def remove_op(name: str) -> None:
    """Remove an op ``define_op`` added; only the last one defined (opcodes stay dense)."""
    op = _MNEMONICS.get(name.upper())
    if op is None or isinstance(op, Op):
        raise ValueError(f"{name!r} is not an op defined with define_op")
    if int(op) != len(_SPEC) - 1:
        raise ValueError(f"remove the ops defined after {name} first (opcodes stay dense)")
    del _SPEC[op], _MNEMONICS[op.name]
    _generation[0] += 1


@contextlib.contextmanager
def defined_op(name: str, roles: tuple[Role, ...], alu: AluFn, semantics: str,
               **kw: object) -> Iterator[OpSpec]:
    """:func:`define_op` for the duration of a ``with`` block (a test fixture, say)."""
    spec = define_op(name, roles, alu, semantics, **kw)  # type: ignore[arg-type]
    try:
        yield spec
    finally:
        remove_op(spec.mnemonic)


def isa_table_markdown() -> str:
    """The README's ISA table, generated from OPS so the two cannot drift apart (the
    built-in ops only: ops added with ``define_op`` are not part of the documented ISA)."""
    role_txt = {Role.DST: "d", Role.SRC: "a", Role.SLOT: "s", Role.PTR: "p", Role.ADDR: "x",
                Role.TARGET: "t", Role.WEIGHTS: "w"}
    rows = ["| op | operands | group | meaning |", "|---|---|---|---|"]
    for s in OPS:
        names = []
        seen: dict[str, int] = {}
        for r in s.roles:
            n = role_txt[r]
            if r in (Role.SRC, Role.PTR) and n in seen:
                n = {"a": "b", "p": "q"}[n]
            seen[n] = 1
            names.append(n)
        rows.append(f"| `{s.mnemonic}` | {', '.join(names) or '—'} | {s.group.value} | "
                    f"{s.semantics} |")
    return "\n".join(rows) + "\n"
