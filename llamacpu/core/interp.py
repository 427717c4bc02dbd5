"""The reference interpreter: exact semantics in plain Python ints, the ground truth.

Two implementations of the same machine live here, and the tests hold them equal:

- :func:`transition` is the readable one: one instruction, as a pure function of memory,
  pc, carry and return stack, returning a :class:`TraceStep` that says everything the step
  read and wrote. :func:`step` (over a frozen :class:`State`) and ``run(..., trace=True)``
  use it. A tensor machine that wants to match this interpreter step by step should read
  this function.
- ``run(..., trace=False)`` is the fast one. Straight-line code is translated, the first
  time it runs, into Python functions with the operand addresses as constants
  (:func:`_block_source`), and the run loop is ``pc = code[pc](pc)``. A write to
  translated code discards its translations, so self-modifying code stays exact. Programs
  with WEIGHTS slots, APPLY or WSET take the readable path (:func:`_uses_weights`).

Semantics beyond docs/lasm.md, decided here:

- Every operand of an instruction is resolved, in source order, before the op runs, and
  every effective address (DIRECT field, the pointer slot of ``[p]`` and the address it
  holds, ADDR and TARGET operands included, jumps not taken included) must lie in
  ``[0, N)``. A pointer op never leaves a pointer outside memory (LEA's address was
  checked; INC/DEC check theirs).
- Arithmetic checks its operands are digits in source order, then ``b ≠ 0``, then (DIV)
  that the quotient is a digit. The carry is always a digit.
- Step ``k`` (0-based) is the k-th instruction executed; ``Result.steps`` counts them,
  HALT included. A fault names the step that faulted; running out of steps names the step
  that would have run next.
"""

from __future__ import annotations

import functools
import operator
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llamacpu.core.isa import (
    PORT_OUT,
    SPEC,
    Alphabet,
    Kind,
    LlamacpuError,
    MemoryImage,
    Mode,
    Op,
    Program,
    Role,
    Slot,
    memory_image,
)

__all__ = [
    "MachineFault", "StepFault", "TraceStep", "Result", "State", "run", "transition", "load",
    "step",
    "read_output", "DEFAULT_STACK_SIZE", "DEFAULT_MAX_STEPS",
]

DEFAULT_STACK_SIZE = 64
"""Return-stack entries unless the runner is told otherwise (docs/lasm.md)."""
DEFAULT_MAX_STEPS = 1_000_000


class MachineFault(LlamacpuError):
    """The machine stopped on an error: a bad address, a non-digit, the step limit, ...

    ``pc`` and ``step`` say where and when; ``location`` is ``program.where(pc)``
    (``file:line:col: source``); ``reason`` is the message without them. A traced run
    leaves the steps before the fault in ``trace``.
    """

    def __init__(self, pc: int, step: int, reason: str, location: str,
                 trace: tuple[TraceStep, ...] | None = None) -> None:
        self.pc = pc
        self.step = step
        self.reason = reason
        self.location = location
        self.trace = trace
        super().__init__(f"fault at pc {pc} ({location}), step {step}: {reason}")

    def __reduce__(self):  # picklable despite the custom __init__
        return (MachineFault, (self.pc, self.step, self.reason, self.location, self.trace))


@dataclass(frozen=True)
class TraceStep:
    """What one executed instruction read and wrote.

    Per operand ``i`` (source order): ``addrs[i]`` is its effective address (None for an
    immediate) and ``values[i]`` the value the op used: SRC the symbol read (or the
    immediate), SLOT (MOV's source) that slot's val (or the immediate), PTR that slot's
    pointer p0, ADDR the effective address, TARGET the target address, DST None.
    """

    step: int                          # 0-based index of this instruction in the run
    pc: int
    op: Op
    addrs: tuple[int | None, ...]
    values: tuple[int | None, ...]
    carry_in: int
    carry_out: int
    result: int | None                 # new val (value ops, MOV) or new p0 (LEA INC DEC)
    write_addr: int | None             # the slot written, if any
    written: Slot | None               # that slot after the write
    next_pc: int                       # pc after the step; HALT: pc itself


@dataclass(frozen=True)
class Result:
    """A finished run: the answer, the final machine state and (optionally) the trace."""

    output: str                        # symbols from OUT.p0 up to END, decoded
    symbols: tuple[int, ...]           # the same, undecoded
    steps: int                         # instructions executed, HALT included
    halted: bool                       # False only for on_limit="stop" runs that ran out
    trace: tuple[TraceStep, ...] | None
    memory: tuple[Slot, ...]           # memory when the run ended
    carry: int                         # the carry register when the run ended
    image: MemoryImage                 # memory at load time


@dataclass(frozen=True)
class State:
    """The whole machine between two steps. ``step`` returns a new one."""

    memory: tuple[Slot, ...]
    pc: int
    carry: int = 0
    stack: tuple[int, ...] = ()        # return addresses, innermost last
    steps: int = 0                     # instructions executed so far
    halted: bool = False


class StepFault(LlamacpuError):
    """A fault as :func:`transition` raises it: the reason only. ``step`` and ``run`` turn
    it into a :class:`MachineFault`, adding pc, step and source location."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Halt(Exception):
    """Raised by a translated HALT at ``pc`` to leave the fast loop."""

    def __init__(self, pc: int) -> None:
        self.pc = pc


def _outside(addr: int, n: int) -> str:
    return f"address {addr} outside memory of {n} slots"


def _overflow(stack_size: int) -> str:
    return f"return stack overflow ({stack_size} entries)"


_UNDERFLOW = "return stack underflow (RET with no CALL)"


def _not_weights(op: Op, i: int, slot: Slot) -> str:
    return f"{op.name} operand {i + 1} is not a WEIGHTS slot ({Kind(slot.kind).name})"


def _weights_outside(addr: int, size: int) -> str:
    return (f"MOV would copy a WEIGHTS slot to {addr}, outside the program region "
            f"(0..{size - 1}) where WEIGHTS slots live")


def _div_fault(q: int, carry: int, a: int, b: int, base: int) -> str:
    return f"DIV quotient {q} (= ({carry}·{base} + {a}) div {b}) is not a digit of base {base}"


def _move_fault(op: Op, p: int, x: int, n: int) -> str:
    return f"{op.name} moves the pointer at {p} to {x}, outside memory of {n} slots"


def _not_digit(op: Op, values: Sequence[int | None], base: int) -> str | None:
    """The fault reason for the first operand that is not a digit, or None.

    ``values`` are the operands in source order; None (a destination) is skipped.
    """
    for i, v in enumerate(values):
        if v is not None and not 0 <= v < base:
            return f"{op.name} operand {i + 1} is {v}, not a digit of base {base}"
    return None


def _check_instr(slot: Slot, pc: int) -> None:
    """Fault unless ``slot`` is an instruction whose modes its op accepts."""
    if slot.kind != Kind.INSTR:
        raise StepFault(f"slot {pc} is not an instruction ({Kind(slot.kind).name})")
    bad = _mode_error(slot.op, slot.modes)
    if bad:
        raise StepFault(bad)


@functools.lru_cache(maxsize=4096)
def _mode_error(op: int, modes: tuple[int, ...]) -> str | None:
    """Why an instruction with this opcode and these modes cannot run, or None."""
    if op not in SPEC:
        return f"unknown opcode {op}"
    spec = SPEC[op]
    for i, role in enumerate(spec.roles):
        if modes[i] not in role.modes:
            return (f"{spec.mnemonic} operand {i + 1} ({role.value}) cannot have mode "
                    f"{Mode(modes[i]).name}")
    return None


# ----------------------------------------------------------------------------------------
# The readable implementation


def transition(memory: Sequence[Slot], pc: int, carry: int, stack: Sequence[int],
               alphabet: Alphabet, *, step: int = 0,
               stack_size: int = DEFAULT_STACK_SIZE,
               program_size: int | None = None) -> TraceStep:
    """Execute the instruction at ``pc`` without changing anything; return what it does.

    Pure: the caller applies the step (:func:`_apply`): writes ``written`` at
    ``write_addr``, sets pc to ``next_pc`` and carry to ``carry_out``, and pushes
    ``pc + 1`` for CALL / pops for RET. Raises :class:`StepFault` on a fault.
    ``program_size``: the program region, where WEIGHTS slots must stay (None: no limit).
    """
    n = len(memory)
    if not 0 <= pc < n:
        raise StepFault(f"pc {pc} outside memory of {n} slots")
    ins = memory[pc]
    _check_instr(ins, pc)
    spec = SPEC[ins.op]
    op, roles, base = spec.op, spec.roles, alphabet.base

    # 1. Resolve every operand, in source order: its effective address and its value.
    addrs: list[int | None] = []
    values: list[int | None] = []
    for i, role in enumerate(roles):
        mode, field = ins.modes[i], ins.args[i]
        if mode == Mode.IMMEDIATE:
            addrs.append(None)
            values.append(ins.val)
            continue
        if not 0 <= field < n:
            raise StepFault(_outside(field, n))
        addr = field if mode == Mode.DIRECT else memory[field].args[0]  # [p] -> p.p0
        if not 0 <= addr < n:
            raise StepFault(_outside(addr, n))
        addrs.append(addr)
        if role in (Role.SRC, Role.SLOT):
            values.append(memory[addr].val)
        elif role == Role.PTR:
            values.append(memory[addr].args[0])
        elif role in (Role.ADDR, Role.TARGET):
            values.append(addr)
        else:  # Role.DST, Role.WEIGHTS
            values.append(None)

    # 2. The op. Each branch sets what it changes; the defaults change nothing.
    next_pc = pc + 1
    carry_out = carry
    result: int | None = None     # the field written: val for value ops, p0 for pointer ops
    written: Slot | None = None
    write_addr: int | None = None
    v = values

    if op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD):
        a, b = v[1], v[2]
        bad = _not_digit(op, v, base)
        if bad:
            raise StepFault(bad)
        if op == Op.ADD:
            r = a + b + carry                               # r = a + b + C
            result, carry_out = r % base, r // base
        elif op == Op.SUB:
            r = a - b - carry                               # r = a − b − C
            result, carry_out = r % base, (1 if r < 0 else 0)
        elif op == Op.MUL:
            r = a * b + carry                               # r = a · b + C
            result, carry_out = r % base, r // base
        else:
            if b == 0:
                raise StepFault(f"{op.name} by zero")
            if op == Op.DIV:
                r = carry * base + a                        # r = C · base + a
                if r // b >= base:
                    raise StepFault(_div_fault(r // b, carry, a, b, base))
                result, carry_out = r // b, r % b
            else:
                result = a % b
    elif op == Op.EQ:
        result = 1 if v[1] == v[2] else 0
    elif op == Op.LT:
        result = 1 if v[1] < v[2] else 0
    elif op == Op.MIN:
        result = min(v[1], v[2])
    elif op == Op.MAX:
        result = max(v[1], v[2])
    elif op == Op.PEQ:
        result = 1 if v[1] == v[2] else 0
    elif op == Op.GETC:
        result = carry
    elif op == Op.SETC:
        bad = _not_digit(op, v, base)
        if bad:
            raise StepFault(bad)
        carry_out = v[0]
    elif op == Op.MOV:
        if addrs[1] is None:                                # d.val ← v
            result = v[1]
        else:                                               # d ← s, every field
            write_addr, written = addrs[0], memory[addrs[1]]
            result = written.val
            if (written.kind == Kind.WEIGHTS and program_size is not None
                    and write_addr >= program_size):
                raise StepFault(_weights_outside(write_addr, program_size))
    elif op == Op.LEA:
        result = v[1]                                       # p.p0 ← address of x
    elif op in (Op.INC, Op.DEC):
        result = v[0] + (1 if op == Op.INC else -1)         # p.p0 ← p.p0 ± 1
        if not 0 <= result < n:
            raise StepFault(_move_fault(op, addrs[0], result, n))
    elif op == Op.JMP:
        next_pc = v[0]
    elif op == Op.JZ:
        next_pc = v[1] if v[0] == 0 else next_pc
    elif op == Op.JNZ:
        next_pc = v[1] if v[0] != 0 else next_pc
    elif op == Op.JEQ:
        next_pc = v[2] if v[0] == v[1] else next_pc
    elif op == Op.JNE:
        next_pc = v[2] if v[0] != v[1] else next_pc
    elif op == Op.CALL:
        if len(stack) >= stack_size:
            raise StepFault(_overflow(stack_size))
        next_pc = v[0]
    elif op == Op.RET:
        if not stack:
            raise StepFault(_UNDERFLOW)
        next_pc = stack[-1]
    elif op == Op.HALT:
        next_pc = pc
    elif op in (Op.APPLY, Op.WSET):
        k = 1 if op == Op.APPLY else 0                      # the WEIGHTS operand
        w = memory[addrs[k]]  # type: ignore[index]
        if w.kind != Kind.WEIGHTS:
            raise StepFault(_not_weights(op, k, w))
        if op == Op.APPLY:                                  # d ← f_w(a); no table: END
            result = w.table[v[2]] if w.table is not None else alphabet.end  # type: ignore[index]
        else:
            write_addr = addrs[0]                           # f_w(a) ← b
            written = w.with_entry(v[1], v[2], alphabet.size)  # type: ignore[arg-type]
    # Op.NOP: nothing

    # 3. The write, as a whole new slot.
    if result is not None and written is None:
        write_addr = addrs[0]
        old = memory[write_addr]
        pointer_op = op in (Op.LEA, Op.INC, Op.DEC)
        written = old.with_ptr(result) if pointer_op else old.with_val(result)
    return TraceStep(step, pc, op, tuple(addrs), tuple(values), carry, carry_out, result,
                     write_addr, written, next_pc)


def _apply(t: TraceStep, memory: list[Slot], stack: list[int]) -> None:
    """Apply a step's memory write and stack effect in place."""
    if t.write_addr is not None:
        memory[t.write_addr] = t.written  # type: ignore[assignment]
    if t.op == Op.CALL:
        stack.append(t.pc + 1)
    elif t.op == Op.RET:
        stack.pop()


def load(program: Program, input_text: str, out_size: int | None = None) -> State:
    """The machine at load time: memory from ``isa.memory_image``, pc at the entry."""
    return State(memory_image(program, input_text, out_size).slots, program.entry)


def step(program: Program, state: State, *,
         stack_size: int = DEFAULT_STACK_SIZE) -> tuple[State, TraceStep]:
    """One instruction on an immutable state: (the next state, what the step did).

    Copies memory on a write (O(N)): for stepping and testing; ``run`` is the fast path.
    Raises MachineFault on a fault and ValueError on a halted state.
    """
    if state.halted:
        raise ValueError("the machine has halted")
    try:
        t = transition(state.memory, state.pc, state.carry, state.stack, program.alphabet,
                       step=state.steps, stack_size=stack_size,
                       program_size=len(program.slots))
    except StepFault as e:
        raise MachineFault(state.pc, state.steps, e.reason, program.where(state.pc)) from None
    memory, stack = state.memory, state.stack
    if t.write_addr is not None:
        a = t.write_addr
        memory = memory[:a] + (t.written,) + memory[a + 1:]  # type: ignore[operator]
    if t.op == Op.CALL:
        stack = stack + (t.pc + 1,)
    elif t.op == Op.RET:
        stack = stack[:-1]
    return State(memory, t.next_pc, t.carry_out, stack, state.steps + 1,
                 t.op == Op.HALT), t


def read_output(memory: Sequence[Slot], alphabet: Alphabet) -> tuple[int, ...]:
    """The answer: symbols from the slot OUT points to, up to END or the end of memory."""
    n, end = len(memory), alphabet.end
    p = memory[PORT_OUT].args[0]
    if not 0 <= p < n:
        raise StepFault(f"OUT points to {p}, outside memory of {n} slots")
    out = []
    while p < n and memory[p].val != end:
        out.append(memory[p].val)
        p += 1
    return tuple(out)


def _decode(symbols: Sequence[int], alphabet: Alphabet) -> str:
    """``alphabet.decode(symbols)``, through a table; a symbol outside it faults."""
    table = _decode_table(alphabet)
    try:
        if symbols and min(symbols) < 0:
            raise IndexError
        return "".join(map(table.__getitem__, symbols))
    except (IndexError, TypeError):
        bad = next(v for v in symbols if not (isinstance(v, int) and 0 <= v < len(table)))
        raise StepFault(f"the answer holds symbol {bad}, outside the alphabet "
                     f"0..{len(table) - 1}") from None


@functools.lru_cache(maxsize=64)
def _decode_table(alphabet: Alphabet) -> tuple[str, ...]:
    return tuple(alphabet.decode_symbol(v) for v in range(alphabet.size))


def _run_traced(program: Program, image: MemoryImage, max_steps: int, stack_size: int,
                on_limit: str, record: bool) -> Result:
    """``run`` on the readable implementation, recording every step if ``record``."""
    memory, stack = list(image.slots), []
    pc, carry, alphabet = program.entry, 0, program.alphabet
    trace: list[TraceStep] = []
    halted, steps = False, 0
    try:
        while steps < max_steps:
            t = transition(memory, pc, carry, stack, alphabet, step=steps,
                           stack_size=stack_size, program_size=len(program.slots))
            _apply(t, memory, stack)
            if record:
                trace.append(t)
            steps += 1
            pc, carry = t.next_pc, t.carry_out
            if t.op == Op.HALT:
                halted = True
                break
        if not halted and on_limit == "raise":
            raise StepFault(f"step limit of {max_steps} reached without HALT")
        symbols = read_output(memory, alphabet)
        output = _decode(symbols, alphabet)
    except StepFault as e:
        raise MachineFault(pc, steps, e.reason, program.where(pc),
                           tuple(trace) if record else None) from None
    return Result(output, symbols, steps, halted, tuple(trace) if record else None,
                  tuple(memory), carry, image)


# ----------------------------------------------------------------------------------------
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
# and values are digits, 0/1 or copies. So `[p]` needs no range check, a pc is never
# negative, and `x >= base` alone tells a non-digit.

_MAX_BLOCK = 16
_CONTROL = frozenset({Op.JMP, Op.JZ, Op.JNZ, Op.JEQ, Op.JNE, Op.CALL, Op.RET, Op.HALT,
                      Op.APPLY})


@dataclass(frozen=True)
class _Machine:
    """What a translation depends on besides the slots themselves (the cache key: the
    memory size N is a global of the translations, so other inputs reuse them)."""

    base: int         # digit radix
    stack_size: int   # return-stack entries
    promote: bool     # memory has EMPTY slots: writes must turn them into DATA
    n: int | None     # N if an operand field of the block lies outside memory, else None


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
    op = Op(slot.op)
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
        call = f"fault(_not_digit(Op.{op.name}, ({args},), {base}), {at})"
        if any(addr[i] is None and int(val[i]) >= base for i in idx):
            lines.append(call)                  # an immediate that is not a digit
            return
        tests = [f"{val[i]} >= {base}" for i in idx if addr[i] is not None]
        if tests:
            lines.append(f"if {' or '.join(tests)}: {call}")

    a, b = (val + ["", "", ""])[1:3]
    if op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD):
        check_digits(1, 2)
        if op in (Op.DIV, Op.MOD):
            lines.append(f"if {b} == 0: fault('{op.name} by zero', {at})")
        if op == Op.ADD:
            lines += [f"r = {a} + {b} + carry", f"carry = r // {base}"]
            write("vals", f"r % {base}")
        elif op == Op.SUB:
            lines += [f"r = {a} - {b} - carry", "carry = 1 if r < 0 else 0"]
            write("vals", f"r % {base}")
        elif op == Op.MUL:
            lines += [f"r = {a} * {b} + carry", f"carry = r // {base}"]
            write("vals", f"r % {base}")
        elif op == Op.DIV:
            lines += [f"r = carry * {base} + {a}", f"q = r // {b}",
                      f"if q >= {base}: fault(_div_fault(q, carry, {a}, {b}, {base}), {at})",
                      f"carry = r % {b}"]
            write("vals", "q")
        else:
            write("vals", f"{a} % {b}")
    elif op in (Op.EQ, Op.PEQ):
        write("vals", f"1 if {a} == {b} else 0")
    elif op == Op.LT:
        write("vals", f"1 if {a} < {b} else 0")
    elif op == Op.MIN:
        write("vals", f"{a} if {a} < {b} else {b}")
    elif op == Op.MAX:
        write("vals", f"{a} if {a} > {b} else {b}")
    elif op == Op.GETC:
        write("vals", "carry")
    elif op == Op.SETC:
        check_digits(0)
        lines.append(f"carry = {val[0]}")
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
                  f"if {bad}: fault(_move_fault(Op.{op.name}, {d}, x, N), {at})"]
        write("ptrs", "x")
    elif op == Op.JMP:
        nxt = val[0]
    elif op in (Op.JZ, Op.JNZ):
        nxt = f"{val[1]} if {val[0]} {'==' if op == Op.JZ else '!='} 0 else {nxt}"
    elif op in (Op.JEQ, Op.JNE):
        nxt = f"{val[2]} if {val[0]} {'==' if op == Op.JEQ else '!='} {val[1]} else {nxt}"
    elif op == Op.CALL:
        lines += [f"if len(stack) >= {m.stack_size}: "
                  f"fault({_overflow(m.stack_size)!r}, {at})",
                  f"stack.append({nxt})"]
        nxt = val[0]
    elif op == Op.RET:
        lines.append(f"if not stack: fault({_UNDERFLOW!r}, {at})")
        nxt = "stack.pop()"
    elif op == Op.HALT:
        lines.append(f"halt({pc})")
        nxt = None
    elif op in (Op.APPLY, Op.WSET):  # never translated: _run_fast declines such programs
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
        bodies.append([f"# pc {pc + i}: {Op(slot.op).name}"] + body)
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
    fits = _Machine(alphabet.base, stack_size, promote, None)   # operands all in memory
    does_not = _Machine(alphabet.base, stack_size, promote, n)  # some are not
    stack: list[int] = []
    code: list[Callable[[int], int]] = []
    guard = [0] * n
    covers: dict[int, set[int]] = {}  # address -> starts of the blocks covering it
    extent: dict[int, int] = {}       # block start -> its length
    # The translations' globals: the machine's state, shared by all of them.
    env = {"vals": vals, "ptrs": ptrs, "kinds": kinds, "slots": slots, "stack": stack,
           "guard": guard, "carry": 0, "left": max_steps, "N": n, "fault": _fault,
           "halt": _halt,
           "_SHORT": _Short(), "Op": Op, "DATA": Kind.DATA,
           "_not_digit": _not_digit, "_div_fault": _div_fault, "_move_fault": _move_fault,
           "__builtins__": __builtins__}

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
            if slot.op in _CONTROL:
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


def _uses_weights(program: Program) -> bool:
    """Whether a program holds WEIGHTS slots or APPLY / WSET (MOV can only copy slots the
    program already has, so this holds for the whole run)."""
    return any(s.kind == Kind.WEIGHTS or (s.kind == Kind.INSTR and s.op in (Op.APPLY, Op.WSET))
               for s in program.slots)


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


def run(program: Program, input_text: str, max_steps: int = DEFAULT_MAX_STEPS, *,
        trace: bool = False, out_size: int | None = None,
        stack_size: int = DEFAULT_STACK_SIZE, on_limit: str = "raise") -> Result:
    """Load ``input_text`` and run ``program`` until HALT, a fault or ``max_steps``.

    ``trace`` records a :class:`TraceStep` per instruction (slower). ``on_limit``:
    "raise" (a MachineFault if HALT has not run after ``max_steps`` instructions) or
    "stop" (return with ``halted=False``). Raises MachineFault on a fault and InputError
    for input outside the program's alphabet.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if stack_size < 0:
        raise ValueError(f"stack_size must be >= 0, got {stack_size}")
    if on_limit not in ("raise", "stop"):
        raise ValueError(f"on_limit must be 'raise' or 'stop', got {on_limit!r}")
    image = memory_image(program, input_text, out_size)
    if not trace:
        result = _run_fast(program, image, max_steps, stack_size, on_limit)
        if result is not None:
            return result
    return _run_traced(program, image, max_steps, stack_size, on_limit, record=trace)
