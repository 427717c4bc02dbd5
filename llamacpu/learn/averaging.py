"""The machine that is judged: an exponential moving average of the trained weights.

``python -m llamacpu.train --ema DECAY`` keeps, beside the weights the optimizer moves, their
exponential moving average (Polyak averaging; ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn(DECAY)``, updated after every training step). The competence
checks, the certificates and the retention report look at the average, and a checkpoint's
machine (its ``model.*`` tensors, what ``LearnedMachine.from_checkpoint`` loads) is the
average: the machine a stage certified is the one it saves. The trained weights go beside
it as ``train.*`` tensors, so a resumed run goes on from both exactly.

Why: a plan fitted on thousands of wordings flickers at a constant learning rate (a step
that fixes one wording breaks another), so a stage that must have every training view right
at one check (``--certify-all-views``) waits for a lucky step. The average moves a
thousandth of the way per step (DECAY 0.999) and does not flicker
(``benchmarks/bench_wordings.py --ema``, docs/wordings.md).

Only the tiny controller: a pretrained one's copy would hold a second base model.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from llamacpu.learn.learned import LearnedMachine

__all__ = ["TRAIN_PREFIX", "WeightAverage", "load_trained"]

TRAIN_PREFIX = "train."  # a checkpoint's trained weights, beside the average's "model."


class WeightAverage:
    """The exponential moving average of ``model``'s weights (its constant buffers, lookup
    tables and the like, are copied once)."""

    def __init__(self, model: LearnedMachine, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                  use_buffers=False)

    @property
    def model(self) -> LearnedMachine:
        """The averaged machine: the one checked, certified and saved."""
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged)

    def update(self, model: LearnedMachine) -> None:
        """After a training step: the first copies ``model``'s weights, each later one moves
        the average ``1 - decay`` of the way to them."""
        self._avg.update_parameters(model)

    def checkpoint_state(self, model: LearnedMachine) -> dict[str, Tensor]:
        """The trained weights, as ``train.*`` tensors beside the average's ``model.*``."""
        return {f"{TRAIN_PREFIX}{k}": v for k, v in model.trainable_state().items()}

    @classmethod
    def resume(cls, model: LearnedMachine, model_state: dict[str, Tensor], updates: int,
               decay: float) -> WeightAverage:
        """From a checkpoint: ``model`` was loaded from its ``model.*`` tensors (the average);
        the average is that, and ``model`` gets the ``train.*`` weights to train on, when the
        checkpoint has them (one written without ``--ema`` has not: both start equal)."""
        avg = cls(model, decay)
        if load_trained(model, model_state):
            avg._avg.n_averaged.fill_(updates)
        return avg


def load_trained(model: LearnedMachine, model_state: dict[str, Tensor]) -> bool:
    """Copies a checkpoint's trained weights (``train.*``) into ``model``, which was loaded
    from its ``model.*`` tensors (the average); False when it has none (written without
    ``--ema``). A run resumed without ``--ema`` goes on from these: they are the weights its
    optimizer state belongs to."""
    trained = {k[len(TRAIN_PREFIX):]: v for k, v in model_state.items()
               if k.startswith(TRAIN_PREFIX)}
    with torch.no_grad():
        current = model.state_dict()
        for k, v in trained.items():
            current[k].copy_(v)
    return bool(trained)
