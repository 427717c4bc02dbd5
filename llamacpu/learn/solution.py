"""A free-running answer of the learned machine, and its default step budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from llamacpu.core.isa import Program

__all__ = ["Solution", "default_max_steps"]


class Solution(NamedTuple):
    """One free-running answer. Its repr is short (``Solution('47', steps=85)``, plus
    ``halted=False`` or the fault when there is one); the emitted program is ``.program``."""

    output: str
    steps: int
    halted: bool
    fault: str | None
    program: Program

    def __repr__(self) -> str:
        extra = "" if self.halted else ", halted=False"
        extra += "" if self.fault is None else f", fault={self.fault!r}"
        return f"Solution({self.output!r}, steps={self.steps}{extra})"


def default_max_steps(prompts: Sequence[str]) -> int:
    """The machine-step budget of :meth:`LearnedMachine.solve` when none is given, from the
    longest prompt's length P: the evaluation core's ``step_budget`` (double, plus 100) of
    4P² + 20P, a bound on what every curriculum task's expert program takes on a P-character
    prompt (mul and sort grow quadratically; a test checks the bound). A run that halts
    stops there, so the budget only limits a machine that does not: give ``max_steps`` to
    cap that sooner on long prompts."""
    P = max((len(p) for p in prompts), default=0)
    return 2 * (4 * P * P + 20 * P) + 100
