"""Competence checks for the curriculum trainer: the machine runs *free* on held-out
prompts (no expert, no symbolic part) and is scored by exact match.

:func:`evaluate` gives the accuracy, :func:`screened_evaluate` stops early once a check can
no longer pass, and :func:`retention_stages` says which earlier stages a competent stage
looks back at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from llamacpu.learn import distributed
from llamacpu.learn.curriculum import STAGES, Stage
from llamacpu.learn.learned import LearnedMachine
from llamacpu.learn.tasks import Example, default_out_size

__all__ = ["Check", "evaluate", "screened_evaluate", "retention_stages"]


def retention_stages(stage: Stage, stages: Sequence[Stage] = STAGES) -> list[Stage]:
    """For each task trained before ``stage`` (other than its own), the last stage that
    trained it: the widest lengths that task has seen."""
    last: dict[str, Stage] = {}
    for s in stages[: stage.index]:
        if s.task != stage.task:
            last[s.task] = s
    return list(last.values())


class Check(NamedTuple):
    """A competence check: exact matches among the first ``solved`` held-out prompts."""

    correct: int
    solved: int
    total: int

    @property
    def accuracy(self) -> float:
        """Exact match over the prompts solved."""
        return self.correct / max(1, self.solved)

    @property
    def best(self) -> float:
        """The most the whole set can score: the unsolved prompts counted as right."""
        return (self.correct + self.total - self.solved) / max(1, self.total)


def screened_evaluate(model: LearnedMachine, examples: Sequence[Example], max_steps: int,
                      screen: int, competence: float,
                      dist: distributed.Dist | None = None) -> Check:
    """:func:`evaluate` that solves the first ``screen`` prompts and stops there when the
    whole set can no longer reach ``competence`` (:attr:`Check.best` below it); otherwise it
    solves the rest too. A stop cannot change a pass decision: only a check that could
    still pass goes on to the full set. ``screen`` 0: the full set at once."""
    n = len(examples)
    head = examples[:screen] if 0 < screen < n else examples
    correct = _count_correct(model, head, max_steps, dist=dist)
    check = Check(correct, len(head), n)
    if check.solved == n or check.best < competence:
        return check
    rest = _count_correct(model, examples[len(head):], max_steps, dist=dist)
    return Check(correct + rest, n, n)


def _count_correct(model: LearnedMachine, examples: Sequence[Example], max_steps: int,
                   batch: int = 256, dist: distributed.Dist | None = None) -> int:
    return round(evaluate(model, examples, max_steps, batch, dist) * len(examples))


def evaluate(model: LearnedMachine, examples: Sequence[Example], max_steps: int,
             batch: int = 256, dist: distributed.Dist | None = None) -> float:
    """Exact-match accuracy of the free-running machine on ``examples``; with ``dist``, each
    rank solves its stride of them and the counts are summed (the same number on every
    rank)."""
    mine = dist.take(examples) if dist is not None else list(examples)
    correct = 0
    for i in range(0, len(mine), batch):
        chunk = mine[i:i + batch]
        sizes = [default_out_size(e) for e in chunk]
        sols = model.solve([e.prompt for e in chunk], max_steps=max_steps, out_sizes=sizes)
        correct += sum(s.output == e.answer and s.fault is None for s, e in zip(sols, chunk))
    if dist is not None:
        correct = int(dist.sum(torch.tensor([correct], dtype=torch.int64)).item())
    return correct / max(1, len(examples))
