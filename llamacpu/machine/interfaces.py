"""The machine's interfaces: the protocols of its pluggable parts and the types they
exchange, in one small module that the machine (``llamacpu.machine.machine``), the symbolic
parts (``llamacpu.machine.symbolic``), the neural OEU (``llamacpu.machine.oeu``) and the LLM
controller (``llamacpu.llm.controller``) all import.

The OEU and the control decisions are pluggable (:class:`OEU`, :class:`Sequencer`), so a
neural OEU or an LLM controller replaces the symbolic ones without touching the machine.
Jump targets always come from the instruction's target field, never from the sequencer.

The pluggable parts of one step (the whole step: ``llamacpu.machine.machine``)::

    OEU       (result, carry) = oeu(op, a, b, carry, ptr_eq)          (pluggable)
    decide    (p_taken, write_gate, p_halt) = sequencer(StepView)     (pluggable)

APPLY (the weight-token channel) computes its result outside the OEU, by :func:`apply_result`.
What a batched run returns per row is a :class:`MachineResult` (an ``interp.Result`` plus a
fault).

Shape letters::

    B  batch rows                F  address fields (4) O  opcodes (27)
    M  operand modes (4)         V  alphabet symbols   C  carry digits (= base)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from llamacpu.core.interp import MachineFault, Result, TraceStep
from llamacpu.core.isa import MemoryImage, Program, Slot

__all__ = [
    "OEU", "HardOEU", "OEUOutput", "StepView", "Decisions", "Sequencer", "HardSequencer",
    "APPLY_SCALE", "apply_result", "MachineResult",
]

APPLY_SCALE = 10.0
"""s in APPLY's logits s · Δ a: a crisp Δ (0/1 entries) gives the result ~0.9995 mass."""


def apply_result(delta: Tensor, a: Tensor) -> Tensor:
    """APPLY's result distribution: ``softmax(APPLY_SCALE · Δ a)``.

    ``delta [B, V, V]`` (``Δ = U Vᵀ``, the delta of a zero-base linear layer V → V), ``a [B, V]``
    the operand's distribution. Hard mode takes its argmax: ``table[a]``.
    """
    return (APPLY_SCALE * torch.einsum("bvx,bx->bv", delta, a)).softmax(-1)


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


# ====================================================================== results

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
