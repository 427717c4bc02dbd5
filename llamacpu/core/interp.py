"""The reference interpreter: exact semantics in plain Python ints, the ground truth.

Two implementations of the same machine, and the tests hold them equal:

- :func:`transition` is the readable one: one instruction, as a pure function of memory,
  pc, carry and return stack, returning a :class:`TraceStep` that says everything the step
  read and wrote. :func:`step` (over a frozen :class:`State`) and ``run(..., trace=True)``
  use it. A tensor machine that wants to match this interpreter step by step should read
  this function.
- ``run(..., trace=False)`` is the fast one, in :mod:`llamacpu.core.fastinterp`:
  straight-line code translated into Python functions on first use. Programs with WEIGHTS
  slots, APPLY or WSET take the readable path.

What the two share (:class:`Result`, :class:`TraceStep`, :class:`MachineFault`, the fault
reasons) lives in :mod:`llamacpu.core.runtypes`; this module re-exports the public names.

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

from collections.abc import Sequence
from dataclasses import dataclass

from llamacpu.core.fastinterp import _run_fast
from llamacpu.core.isa import (
    PORT_OUT,
    SPEC,
    Alphabet,
    Jump,
    Kind,
    MemoryImage,
    Mode,
    Op,
    Program,
    Role,
    Slot,
    Write,
    memory_image,
)
from llamacpu.core.runtypes import (
    _UNDERFLOW,
    MachineFault,
    Result,
    StepFault,
    TraceStep,
    _check_instr,
    _decode,
    _move_fault,
    _not_digit,
    _outside,
    _overflow,
)

__all__ = [
    "MachineFault", "StepFault", "TraceStep", "Result", "State", "run", "transition", "load",
    "step",
    "read_output", "DEFAULT_STACK_SIZE", "DEFAULT_MAX_STEPS",
]

DEFAULT_STACK_SIZE = 64
"""Return-stack entries unless the runner is told otherwise (docs/lasm.md)."""
DEFAULT_MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class State:
    """The whole machine between two steps. ``step`` returns a new one."""

    memory: tuple[Slot, ...]
    pc: int
    carry: int = 0
    stack: tuple[int, ...] = ()        # return addresses, innermost last
    steps: int = 0                     # instructions executed so far
    halted: bool = False


def _not_weights(op: Op, i: int, slot: Slot) -> str:
    return f"{op.name} operand {i + 1} is not a WEIGHTS slot ({Kind(slot.kind).name})"


def _weights_outside(addr: int, size: int) -> str:
    return (f"MOV would copy a WEIGHTS slot to {addr}, outside the program region "
            f"(0..{size - 1}) where WEIGHTS slots live")


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

    if spec.alu is not None:                                # ALU ops: the op table's semantics
        if spec.digits:
            bad = _not_digit(op, v, base)
            if bad:
                raise StepFault(bad)
        ia, ib = spec.operand(0), spec.operand(1)           # a, b: 0 where the op has none
        out = spec.alu(v[ia] if ia is not None else 0, v[ib] if ib is not None else 0,
                       carry if spec.reads_carry else 0, base)
        if isinstance(out, str):
            raise StepFault(out)
        if spec.writes == Write.VAL:
            result = out[0]
        if spec.writes_carry:
            carry_out = out[1]
    elif op == Op.PEQ:
        result = 1 if v[1] == v[2] else 0
    elif op == Op.MOV:
        if addrs[1] is None:                                # d.val ← v
            result = v[1]
        else:                                               # d ← s, every field
            write_addr, written = addrs[0], memory[addrs[1]]
            result = written.val
            if (written.kind == Kind.WEIGHTS and program_size is not None
                    and write_addr >= program_size):
                raise StepFault(_weights_outside(write_addr, program_size))
    elif spec.writes == Write.PTR:
        if spec.ptr_delta:                                  # p.p0 ← p.p0 ± 1 (INC, DEC)
            result = v[0] + spec.ptr_delta
            if not 0 <= result < n:
                raise StepFault(_move_fault(op, addrs[0], result, n))
        else:
            result = v[1]                                   # p.p0 ← address of x (LEA)
    elif op == Op.RET:
        if not stack:
            raise StepFault(_UNDERFLOW)
        next_pc = stack[-1]
    elif spec.jump != Jump.NEVER:                           # JMP JZ JNZ JEQ JNE CALL
        if op == Op.CALL and len(stack) >= stack_size:
            raise StepFault(_overflow(stack_size))
        a, b = (v + [None, None])[:2]                       # the condition's operands
        if spec.jump.taken(a == 0, a == b):
            next_pc = v[roles.index(Role.TARGET)]
    elif op == Op.HALT:
        next_pc = pc
    elif spec.uses_weights:                                 # APPLY, WSET
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
        written = old.with_ptr(result) if spec.writes == Write.PTR else old.with_val(result)
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
