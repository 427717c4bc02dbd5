"""The learning-rate schedule of a stage: linear warmup, cosine decay, and annealing while a
competent stage's tables are not certified (``Trainer._train_step`` multiplies the rate by
``anneal ** uncertified``, never below ``ANNEAL_FLOOR``)."""

from __future__ import annotations

import math

from llamacpu.learn.train_config import TrainConfig

ANNEAL_FLOOR = 1 / 32  # the lowest learning-rate factor annealing reaches


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup to ``peak``, then cosine decay to a tenth of it at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _schedule_change(trained: dict, cfg: TrainConfig, step: int) -> str:
    """What a resume changes in the learning-rate schedule, said in one sentence, or "".

    The cosine spans ``--steps`` and peaks at ``--lr``: resuming a stage with either changed
    moves the rate at once (from what the interrupted run had at ``step`` to what the new
    schedule has there), which can undo a stage that had nearly converged."""
    keys = {"steps": "--steps", "lr": "--lr", "warmup": "warmup"}
    old = {k: trained.get(k) for k in keys}
    if any(v is None for v in old.values()):  # a checkpoint that did not record them
        return ""
    changed = [f"{flag} {old[k]:g} -> {getattr(cfg, k):g}" for k, flag in keys.items()
               if old[k] != getattr(cfg, k)]
    if not changed:
        return ""
    was = lr_at(step, old["steps"], old["lr"], old["warmup"])
    now = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
    return (f"the learning-rate schedule differs from the interrupted run's ("
            f"{', '.join(changed)}): the rate at step {step} moves from {was:.3g} to {now:.3g}")
