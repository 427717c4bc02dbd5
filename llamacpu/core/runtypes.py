"""What both implementations of the reference interpreter share: the types a run returns
and raises, the fault reasons, and the checks and decoding both make.

:mod:`llamacpu.core.interp` (the readable implementation and ``run``) and
:mod:`llamacpu.core.fastinterp` (the translated fast path) import these, so neither imports
the other's internals; interp re-exports the public names.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from llamacpu.core.isa import (
    SPEC,
    Alphabet,
    Kind,
    LlamacpuError,
    MemoryImage,
    Mode,
    Op,
    Program,
    Slot,
    ops_generation,
)

__all__ = ["MachineFault", "StepFault", "TraceStep", "Result"]


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


class StepFault(LlamacpuError):
    """A fault as :func:`transition` raises it: the reason only. ``step`` and ``run`` turn
    it into a :class:`MachineFault`, adding pc, step and source location."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _outside(addr: int, n: int) -> str:
    return f"address {addr} outside memory of {n} slots"


def _overflow(stack_size: int) -> str:
    return f"return stack overflow ({stack_size} entries)"


_UNDERFLOW = "return stack underflow (RET with no CALL)"


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
    bad = _mode_error(slot.op, slot.modes, ops_generation())
    if bad:
        raise StepFault(bad)


@functools.lru_cache(maxsize=4096)
def _mode_error(op: int, modes: tuple[int, ...], generation: int) -> str | None:
    """Why an instruction with this opcode and these modes cannot run, or None (cached per
    ``generation`` of the op registry: ``isa.define_op`` may add or remove opcodes)."""
    if op not in SPEC:
        return f"unknown opcode {op}"
    spec = SPEC[op]
    for i, role in enumerate(spec.roles):
        if modes[i] not in role.modes:
            return (f"{spec.mnemonic} operand {i + 1} ({role.value}) cannot have mode "
                    f"{Mode(modes[i]).name}")
    return None


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


def _uses_weights(program: Program) -> bool:
    """Whether a program holds WEIGHTS slots or APPLY / WSET (MOV can only copy slots the
    program already has, so this holds for the whole run)."""
    return any(s.kind == Kind.WEIGHTS
               or (s.kind == Kind.INSTR and s.op in SPEC and SPEC[s.op].uses_weights)
               for s in program.slots)
