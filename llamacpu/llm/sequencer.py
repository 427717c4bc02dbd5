"""The execute phase as the machine's ``Sequencer`` (part of layer 8 of docs/architecture.md).

:class:`ControllerSequencer` plugs the controller's execute phase
(:meth:`~llamacpu.llm.controller.Controller.step`) into ``llamacpu.machine.machine.Machine``
as its ``Sequencer``: at every machine step it turns the machine's
``llamacpu.machine.machine.StepView`` into the controller's
:class:`~llamacpu.llm.heads.StepView` and the step head's logits into ``Decisions``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from llamacpu.llm.controller import Controller
from llamacpu.llm.heads import PromptCache, StepView
from llamacpu.machine.interfaces import Decisions
from llamacpu.machine.interfaces import StepView as MachineView

__all__ = ["ControllerSequencer"]


class ControllerSequencer(nn.Module):
    """The execute phase as the machine's ``Sequencer``: ``machine.StepView → Decisions``.

    One per run: it encodes the run's prompts once (one row per machine row) and counts its
    calls as the step index, which only the ``absolute_positions`` ablation uses. Pass it
    as ``Machine(sequencer=...)``. A machine that steps only its still-running rows says
    which through :meth:`select_rows` before each call. :meth:`reset` starts a new run.
    """

    def __init__(self, controller: Controller, prompts: Sequence[str]) -> None:
        super().__init__()
        self.controller = controller
        self.cache = controller.encode_prompt(prompts)
        self.steps = 0
        self._rows: Tensor | None = None
        self._selected: PromptCache | None = None

    def reset(self, prompts: Sequence[str]) -> None:
        """Encode new prompts (e.g. with autograd on, for training) and restart the count."""
        self.cache = self.controller.encode_prompt(prompts)
        self.steps = 0
        self._rows = self._selected = None

    def select_rows(self, rows: Tensor | None) -> None:
        """The machine rows the next calls are about (None: all of them, in order)."""
        if rows is None:
            self._rows = self._selected = None
            return
        if self._rows is not None and torch.equal(rows, self._rows):
            return  # same rows as before: keep the selected cache
        self._rows = rows.clone()
        self._selected = self.cache.select(rows.to(self.cache.mask.device))

    def forward(self, view: MachineView) -> Decisions:
        mine = StepView(view.op, view.modes, view.values, view.carry)
        cache = self._selected if self._selected is not None else self.cache
        logits = self.controller.step(cache, mine, self.steps)
        self.steps += 1
        return logits.decisions()
