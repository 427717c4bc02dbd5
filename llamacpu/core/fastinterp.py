"""The reference interpreter's fast path, ``interp.run(..., trace=False)``.

Straight-line code is translated, the first time it runs, into Python functions with the
operand addresses as constants (:func:`_block_source`), and the run loop is
``pc = code[pc](pc)``. A write to translated code discards its translations, so
self-modifying code stays exact. Programs with WEIGHTS slots, APPLY or WSET take the
readable path (:func:`_uses_weights`); the tests hold both paths equal.
"""

from __future__ import annotations

import functools
import operator
import types
from collections.abc import Callable
from dataclasses import dataclass

from llamacpu.core.isa import (
    PORT_OUT,
    SPEC,
    Jump,
    Kind,
    MemoryImage,
    Mode,
    Op,
    OpSpec,
    Program,
    Role,
    Slot,
    Write,
    op_specs,
    opcode,
    ops_generation,
)
from llamacpu.core.runtypes import (
    _UNDERFLOW,
    MachineFault,
    Result,
    StepFault,
    _check_instr,
    _decode,
    _move_fault,
    _not_digit,
    _outside,
    _overflow,
    _uses_weights,
)

__all__: list[str] = []  # nothing public: interp.run(..., trace=False) calls _run_fast

# The fast implementation: straight-line code translated to Python functions on first use
#
# Memory is split into parallel lists so the hot fields are one index away:
#   vals[a]   slot a's val          ptrs[a]   slot a's pointer p0
#   slots[a]  slot a itself, for its other fields (its val and p0 may be stale)
#   kinds[a]  slot a's kind, kept only when memory has EMPTY slots (a write makes them
#             DATA); otherwise kinds change only by MOV, which copies slots[a]
# A *block* is the straight-line run of instructions from an address up to and including
# the first control op (jump, CALL, RET, HALT, APPLY), at most _MAX_BLOCK long. The first
# time pc reaches an address, the block there is translated into one Python function with
# every operand address a constant (_block_source), and the run loop is
# ``pc = code[pc](pc)``:
#   code[a]   the block starting at a, or `lazy`, which translates it; code[N] faults
#   guard[a]  1 if a translated block covers address a
#   left      instructions the run may still execute; a block that does not fit in it
#             raises _SHORT and the last few steps run one instruction at a time
# A write to a guarded address (self-modifying code) discards every block covering it and
# leaves the running block (_Exit) right after the writing instruction.
#
# The translations rely on two invariants, checked at load (else run() takes the readable
# path): every p0 in memory lies in [0, N), and every val is >= 0. Both are preserved:
# pointers are only set by LEA (a checked address), INC/DEC (checked) and MOV (a copy),
# and values are symbols (an ALU op's result: OpSpec.alu's contract) or copies. So `[p]`
# needs no range check, a pc is never negative, and `x >= base` alone tells a non-digit.
#
# An ALU op runs as a call of its scalar semantics, ``o = alu<opcode>(a, b, carry, base)``
# (a fault if o is a str), the same function interp.transition calls.


class _Halt(Exception):
    """Raised by a translated HALT at ``pc`` to leave the fast loop."""

    def __init__(self, pc: int) -> None:
        self.pc = pc


_MAX_BLOCK = 16


def _ends_block(spec: OpSpec) -> bool:
    """Whether a block ends with this op: it may jump (CALL and RET too), HALT, or APPLY."""
    return spec.jump != Jump.NEVER or spec.op == Op.HALT or spec.uses_weights


@dataclass(frozen=True)
class _Machine:
    """What a translation depends on besides the slots themselves (the cache key: the
    memory size N is a global of the translations, so other inputs reuse them)."""

    base: int         # digit radix
    stack_size: int   # return-stack entries
    promote: bool     # memory has EMPTY slots: writes must turn them into DATA
    n: int | None     # N if an operand field of the block lies outside memory, else None
    ops: int          # isa.ops_generation(): the op table the translation was made from


class _BlockFault(StepFault):
    """A fault inside a block: which instruction, and how many of the block's instructions
    (the faulting one included) did not complete."""

    def __init__(self, reason: str, pc: int, undone: int) -> None:
        super().__init__(reason)
        self.pc = pc
        self.undone = undone


class _Exit(Exception):
    """Leave the running block after a write to code: resume at pc, `undone` not run."""

    def __init__(self, pc: int, undone: int) -> None:
        self.pc = pc
        self.undone = undone


class _Short(Exception):
    """The block at pc holds more instructions than the run may still execute."""


def _instr_lines(slot: Slot, pc: int, m: _Machine, undone: int) -> tuple[list[str], str | None]:
    """Python lines executing the instruction ``slot`` at ``pc``, and its next-pc expression
    (None if it never falls through: HALT, or a fault it always raises).

    ``undone``: instructions of the block from this one on, for fault and exit accounting.
    The slot must have passed ``_check_instr``.
    """
    op = opcode(slot.op)
    n, base = m.n, m.base
    at = f"{pc}, {undone}"          # fault(reason, pc, undone)
    lines: list[str] = []
    addr: list[str | None] = []     # each operand's effective address (None: immediate)
    val: list[str] = []             # each operand's value, as its role reads it
    for i, role in enumerate(SPEC[op].roles):
        mode, field = slot.modes[i], slot.args[i]
        if mode == Mode.IMMEDIATE:
            addr.append(None)
            val.append(str(slot.val))
            continue
        if n is not None and not 0 <= field < n:
            return lines + [f"fault({_outside(field, n)!r}, {at})"], None
        # [p] -> p.p0, in memory by the invariant; a local if the address is used twice
        if mode == Mode.DIRECT:
            a = str(field)
        elif role in (Role.SRC, Role.ADDR, Role.TARGET):
            a = f"ptrs[{field}]"
        else:
            a = f"a{i}"
            lines.append(f"a{i} = ptrs[{field}]")
        addr.append(a)
        if role in (Role.SRC, Role.SLOT):
            lines.append(f"v{i} = vals[{a}]")   # read every operand before any write
            val.append(f"v{i}")
        elif role == Role.PTR:
            val.append(f"ptrs[{a}]")
        else:                                   # DST; ADDR and TARGET are the address
            val.append(a)
    nxt: str | None = str(pc + 1)
    d = addr[0] if addr else None

    def written() -> None:                      # after any write to d
        if m.promote:
            lines.append(f"if kinds[{d}] == 0: kinds[{d}] = DATA")
        lines.append(f"if guard[{d}]: smc({d}, {pc + 1}, {undone - 1})")

    def write(lst: str, expr: str) -> None:     # d.val or d.p0 <- expr
        lines.append(f"{lst}[{d}] = {expr}")
        written()

    def check_digits(*idx: int) -> None:
        args = ", ".join(val[i] if i in idx else "None" for i in range(max(idx) + 1))
        call = f"fault(_not_digit(opc[{int(op)}], ({args},), {base}), {at})"
        if any(addr[i] is None and int(val[i]) >= base for i in idx):
            lines.append(call)                  # an immediate that is not a digit
            return
        tests = [f"{val[i]} >= {base}" for i in idx if addr[i] is not None]
        if tests:
            lines.append(f"if {' or '.join(tests)}: {call}")

    spec = SPEC[op]
    if spec.alu is not None:                    # ALU ops: a call of the op table's semantics
        src = [i for i in (spec.operand(0), spec.operand(1)) if i is not None]
        if spec.digits and src:
            check_digits(*src)
            if lines and lines[-1].startswith("fault("):
                return lines, None              # an immediate that is not a digit
        a, b = (val[i] if i is not None else "0" for i in (spec.operand(0), spec.operand(1)))
        c = "carry" if spec.reads_carry else "0"
        lines += [f"o = alu{int(op)}({a}, {b}, {c}, {base})",
                  f"if o.__class__ is str: fault(o, {at})"]
        if spec.writes == Write.VAL and spec.writes_carry:
            lines.append(f"vals[{d}], carry = o")
            written()
        elif spec.writes == Write.VAL:
            write("vals", "o[0]")
        elif spec.writes_carry:
            lines.append("carry = o[1]")
    elif op == Op.PEQ:
        write("vals", f"1 if {val[1]} == {val[2]} else 0")
    elif op == Op.MOV and addr[1] is None:      # d.val <- v
        write("vals", val[1])
    elif op == Op.MOV:                          # d <- s, every field
        s = addr[1]
        lines += [f"slots[{d}] = slots[{s}]", f"vals[{d}] = v1", f"ptrs[{d}] = ptrs[{s}]"]
        if m.promote:
            lines.append(f"kinds[{d}] = kinds[{s}]")
        lines.append(f"if guard[{d}]: smc({d}, {pc + 1}, {undone - 1})")
    elif op == Op.LEA:
        write("ptrs", val[1])
    elif op in (Op.INC, Op.DEC):
        sign, bad = ("+", "x >= N") if op == Op.INC else ("-", "x < 0")
        lines += [f"x = ptrs[{d}] {sign} 1",
                  f"if {bad}: fault(_move_fault(opc[{int(op)}], {d}, x, N), {at})"]
        write("ptrs", "x")
    elif op == Op.RET:
        lines.append(f"if not stack: fault({_UNDERFLOW!r}, {at})")
        nxt = "stack.pop()"
    elif spec.jump != Jump.NEVER:               # JMP JZ JNZ JEQ JNE CALL
        if op == Op.CALL:
            lines += [f"if len(stack) >= {m.stack_size}: "
                      f"fault({_overflow(m.stack_size)!r}, {at})",
                      f"stack.append({nxt})"]
        a, b = (val + ["", ""])[:2]
        cond = {Jump.ALWAYS: None, Jump.IF_ZERO: f"{a} == 0", Jump.IF_NONZERO: f"{a} != 0",
                Jump.IF_EQUAL: f"{a} == {b}", Jump.IF_DIFFERENT: f"{a} != {b}"}[spec.jump]
        target = val[spec.roles.index(Role.TARGET)]
        nxt = target if cond is None else f"{target} if {cond} else {nxt}"
    elif op == Op.HALT:
        lines.append(f"halt({pc})")
        nxt = None
    elif spec.uses_weights:  # never translated: _run_fast declines such programs
        raise AssertionError("APPLY / WSET run on the readable path")
    if lines and lines[-1].startswith("fault("):
        nxt = None                              # an immediate that is not a digit
    return lines, nxt


def _block_source(block: tuple[Slot, ...], pc: int, m: _Machine) -> tuple[str, int]:
    """Python source of ``def _b(pc): ...``, the instructions ``block`` from ``pc`` on, and
    how many of them it runs (the block ends early at an instruction that always faults).

    Its globals are the machine's lists (see the section comment), ``carry``, ``left``
    and a few helpers. It returns the next pc; it calls ``halt(pc)`` on HALT,
    ``fault(reason, pc, undone)`` on a fault, and raises ``_SHORT`` if ``left`` is too
    small for it.
    """
    bodies: list[list[str]] = []
    nxt: str | None = None
    for i, slot in enumerate(block):
        body, nxt = _instr_lines(slot, pc + i, m, len(block) - i)
        bodies.append([f"# pc {pc + i}: {opcode(slot.op).name}"] + body)
        if nxt is None:
            break
    k = len(bodies)
    if k < len(block):  # recount `undone` for the shorter block
        return _block_source(block[:k], pc, m)
    lines = ["global carry, left", f"if left < {k}: raise _SHORT", f"left -= {k}"]
    lines += [ln for body in bodies for ln in body]
    if nxt is not None:
        lines.append(f"return {nxt}")
    return "def _b(pc):\n" + "".join(f"    {ln}\n" for ln in lines), k


@functools.lru_cache(maxsize=4096)
def _translate(block: tuple[Slot, ...], pc: int, m: _Machine) -> tuple[types.CodeType, int]:
    """The code object of the block's source, and its length (cached: runs repeat)."""
    source, k = _block_source(block, pc, m)
    module = compile(source, f"<llamacpu block at {pc}>", "exec")
    return next(c for c in module.co_consts if isinstance(c, types.CodeType)), k


def _fault(reason: str, pc: int, undone: int) -> None:
    raise _BlockFault(reason, pc, undone)


def _halt(pc: int) -> None:
    raise _Halt(pc)


def _run_fast(program: Program, image: MemoryImage, max_steps: int, stack_size: int,
              on_limit: str) -> Result | None:
    """``run`` with trace off: the translated-block loop (see the section comment).

    Returns None, having done nothing, if the image breaks the invariants.
    """
    if _uses_weights(program):
        return None  # APPLY / WSET / WEIGHTS slots run on the readable path
    alphabet = program.alphabet
    mem = image.slots
    n, n_prog = len(mem), len(program.slots)
    # Past the program, memory_image lays out DATA slots with p0 = 0 and a symbol as val:
    # only the program's own slots (ports included) need reading, checking and kinds.
    prog = mem[:n_prog]
    vals = list(map(_VAL, mem[:image.out_base])) + [alphabet.end] * image.out_size
    ptrs = list(map(_P0, map(_ARGS, prog))) + [0] * (n - n_prog)
    if min(ptrs[:n_prog]) < 0 or max(ptrs[:n_prog]) >= n or min(vals[:n_prog]) < 0:
        return None
    vals0, ptrs0, slots = vals.copy(), ptrs.copy(), list(mem)
    promote = Kind.EMPTY in map(_KIND, prog)
    kinds = list(map(_KIND, mem)) if promote else None
    gen, specs = ops_generation(), op_specs()
    fits = _Machine(alphabet.base, stack_size, promote, None, gen)   # operands all in memory
    does_not = _Machine(alphabet.base, stack_size, promote, n, gen)  # some are not
    control = frozenset(s.op for s in specs if _ends_block(s))
    stack: list[int] = []
    code: list[Callable[[int], int]] = []
    guard = [0] * n
    covers: dict[int, set[int]] = {}  # address -> starts of the blocks covering it
    extent: dict[int, int] = {}       # block start -> its length
    # The translations' globals: the machine's state, shared by all of them.
    env = {"vals": vals, "ptrs": ptrs, "kinds": kinds, "slots": slots, "stack": stack,
           "guard": guard, "carry": 0, "left": max_steps, "N": n, "fault": _fault,
           "halt": _halt,
           "_SHORT": _Short(), "opc": {int(s.op): s.op for s in specs}, "DATA": Kind.DATA,
           "_not_digit": _not_digit, "_move_fault": _move_fault,
           "__builtins__": __builtins__}
    env.update({f"alu{int(s.op)}": s.alu for s in specs if s.alu is not None})

    def current(i: int) -> Slot:
        """Slot i as the lists hold it now."""
        s = slots[i]
        kind = kinds[i] if kinds is not None else s.kind
        if s.kind == kind and s.args[0] == ptrs[i] and s.val == vals[i]:
            return s
        a = s.args
        return Slot(kind, s.op, s.modes, (ptrs[i], a[1], a[2], a[3]), vals[i])

    def block_at(pc: int, longest: int) -> tuple[Callable[[int], int], int]:
        """A function running the block at pc (at most ``longest`` instructions), and its
        length. Faults if pc holds no instruction."""
        if pc == n:
            raise _BlockFault(f"pc {pc} outside memory of {n} slots", pc, 0)
        try:
            _check_instr(current(pc), pc)
        except StepFault as e:
            raise _BlockFault(e.reason, pc, 0) from None
        block = []
        for a in range(pc, min(pc + longest, n)):
            slot = current(a)
            try:
                _check_instr(slot, a)
            except StepFault:
                break
            block.append(slot)
            if slot.op in control:
                break
        m = fits if all(0 <= f < n for s in block for f in _fields(s)) else does_not
        code_obj, k = _translate(tuple(block), pc, m)
        return types.FunctionType(code_obj, env, f"block_{pc}"), k

    def lazy(pc: int) -> int:
        """Translate the block at pc, install it, and run it."""
        if not env["left"]:  # no step left to fault in, either
            raise _Short
        fn, k = block_at(pc, _MAX_BLOCK)
        code[pc], extent[pc] = fn, k
        for a in range(pc, pc + k):
            covers.setdefault(a, set()).add(pc)
            guard[a] = 1
        return fn(pc)

    def smc(addr: int, pc: int, undone: int) -> None:
        """A write to ``addr``, which blocks cover: discard them, leave the running block."""
        for start in covers.pop(addr, ()):
            code[start] = lazy
            for a in range(start, start + extent.pop(start)):
                if a != addr:
                    covers[a].discard(start)
                    if not covers[a]:
                        del covers[a]
                        guard[a] = 0
        guard[addr] = 0
        raise _Exit(pc, undone)

    def off_end(pc: int) -> int:
        if not env["left"]:
            raise _Short
        raise _BlockFault(f"pc {pc} outside memory of {n} slots", pc, 0)

    env["smc"] = smc
    code.extend([lazy] * n)
    code.append(off_end)

    pc = program.entry
    halted = False
    try:
        if max_steps:
            if not 0 <= pc < n:
                raise _BlockFault(f"pc {pc} outside memory of {n} slots", pc, 0)
            while True:               # whole blocks, while they fit in `left`
                try:
                    while True:
                        pc = code[pc](pc)
                except _Exit as e:
                    pc = e.pc
                    env["left"] += e.undone
                except _Short:
                    break
            while env["left"]:        # the last few steps, one instruction at a time
                try:
                    pc = block_at(pc, 1)[0](pc)
                except _Exit as e:
                    pc = e.pc
        if on_limit == "raise":
            raise _BlockFault(f"step limit of {max_steps} reached without HALT", pc, 0)
    except _Halt as e:
        halted, pc = True, e.pc
    except _BlockFault as e:
        steps = max_steps - env["left"] - e.undone
        raise MachineFault(e.pc, steps, e.reason, program.where(e.pc)) from None
    steps = max_steps - env["left"]

    # Rebuild the slots that changed; all others are as loaded.
    final = list(mem)
    changed = _differ(vals, vals0) | _differ(ptrs, ptrs0) | _differ(slots, final)
    if kinds is not None:
        changed |= _differ(kinds, list(map(_KIND, mem)))
    made: dict[tuple, Slot] = {}  # equal new slots are shared, as memory_image shares its own
    for i in changed:
        s = slots[i]
        key = (kinds[i] if kinds is not None else s.kind, s.op, s.modes, ptrs[i], s.args,
               vals[i])
        if key not in made:
            made[key] = current(i)
        final[i] = made[key]
    p = ptrs[PORT_OUT]
    try:
        stop = vals.index(alphabet.end, p)
    except ValueError:
        stop = n
    symbols = tuple(vals[p:stop])
    try:
        output = _decode(symbols, alphabet)
    except StepFault as e:
        raise MachineFault(pc, steps, e.reason, program.where(pc)) from None
    return Result(output, symbols, steps, halted, None, tuple(final), env["carry"], image)


def _fields(slot: Slot) -> tuple[int, ...]:
    """The address fields an instruction reads (those of its DIRECT and [p] operands)."""
    return tuple(slot.args[i] for i in range(SPEC[slot.op].arity)
                 if slot.modes[i] in (Mode.DIRECT, Mode.INDIRECT))


def _differ(a: list, b: list, chunk: int = 256) -> set[int]:
    """Indices where lists a and b differ; compares whole chunks first (fast when few do)."""
    out: set[int] = set()
    for s in range(0, len(a), chunk):
        if a[s:s + chunk] != b[s:s + chunk]:
            out.update(i for i in range(s, min(s + chunk, len(a))) if a[i] != b[i])
    return out


_VAL = operator.attrgetter("val")
_KIND = operator.attrgetter("kind")
_ARGS = operator.attrgetter("args")
_P0 = operator.itemgetter(0)
