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
