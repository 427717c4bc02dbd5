"""A free-running answer of the learned machine, and its default step budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from llamacpu.core.isa import Program

__all__ = ["Solution", "default_max_steps", "CANNOT_COMPILE", "is_decline", "declined"]


CANNOT_COMPILE = "cannot compile"
"""The fault of a solution whose plan was not run: its confidence was below ``solve``'s
threshold, or the plan is the decline program (:func:`declined`)."""


class Solution(NamedTuple):
    """One free-running answer. Its repr is short (``Solution('47', steps=85)``, plus
    ``halted=False`` or the fault when there is one); the emitted program is ``.program``.
    ``confidence`` is the plan's (``Controller.emit_scored``) when it was asked for; a plan
    below ``solve``'s ``abstain_below`` is not run: ``Solution(cannot compile,
    confidence=0.31)``, its fault :data:`CANNOT_COMPILE`; so is a plan that is the decline
    program (:func:`declined`)."""

    output: str
    steps: int
    halted: bool
    fault: str | None
    program: Program
    confidence: float | None = None

    @property
    def abstained(self) -> bool:
        """The machine declined to run its plan (``fault == CANNOT_COMPILE``)."""
        return self.fault == CANNOT_COMPILE

    def __repr__(self) -> str:
        if self.abstained:
            if self.confidence is None:
                return "Solution(cannot compile)"
            return f"Solution(cannot compile, confidence={self.confidence:.2f})"
        extra = "" if self.halted else ", halted=False"
        extra += "" if self.fault is None else f", fault={self.fault!r}"
        return f"Solution({self.output!r}, steps={self.steps}{extra})"


def is_decline(program: Program) -> bool:
    """Whether ``program`` is ``decline.lasm``'s (the program a controller emits for a
    request it has no program for): the same instructions after the two ports."""
    from llamacpu.core.golden import load_program

    return program.slots[2:] == load_program("decline").slots[2:]


def declined(solution: Solution) -> Solution:
    """``solution`` as the machine reports it: a run of the decline program is "cannot
    compile" (``Solution.abstained``), not an empty answer."""
    if not is_decline(solution.program):
        return solution
    return Solution("", 0, False, CANNOT_COMPILE, solution.program, solution.confidence)


def default_max_steps(prompts: Sequence[str]) -> int:
    """The machine-step budget of :meth:`LearnedMachine.solve` when none is given, from the
    longest prompt's length P: the evaluation core's ``step_budget`` (double, plus 100) of
    4P² + 20P, a bound on what every curriculum task's expert program takes on a P-character
    prompt (mul and sort grow quadratically; a test checks the bound). A run that halts
    stops there, so the budget only limits a machine that does not: give ``max_steps`` to
    cap that sooner on long prompts."""
    P = max((len(p) for p in prompts), default=0)
    return 2 * (4 * P * P + 20 * P) + 100
