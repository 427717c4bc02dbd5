"""Fixtures shared by several test modules."""

import pytest
import torch

from llamacpu.learn.trainer import TrainConfig, Trainer


@pytest.fixture(scope="session")
def stage0(tmp_path_factory):
    """Stage 0 trained once for the whole suite (about half a minute): (out directory, the
    trainer, the stage's final state). Tests that write into a run directory copy it."""
    out = tmp_path_factory.mktemp("ckpt")
    threads = torch.get_num_threads()
    cfg = TrainConfig(stages=(0,), steps=400, seed=0, out=out, progress=False)
    trainer = Trainer(cfg, log=lambda s: None)
    try:
        done = trainer.run()
    finally:
        torch.set_num_threads(threads)
    return out, trainer, done[0]


@pytest.fixture(scope="session")
def two_step_run(tmp_path_factory):
    """A run directory whose ``stage_0`` trained two steps (it answers nothing right), with
    no ``.lock``: for tests of command lines that need a checkpoint, not a machine."""
    out = tmp_path_factory.mktemp("two_step_run")
    threads = torch.get_num_threads()
    cfg = TrainConfig(stages=(0,), steps=2, eval_size=8, threads=1, seed=0, out=out,
                      progress=False)
    try:
        Trainer(cfg, log=lambda s: None).run()
    finally:
        torch.set_num_threads(threads)
    (out / ".lock").unlink(missing_ok=True)
    return out
