"""pytest plugin: test your own checkpoints with hypothesis.

Installed with llamacpu (a ``pytest11`` entry point), so in any project::

    pytest --llamacpu-checkpoint checkpoints/stage_5 tests/test_my_model.py

    # tests/test_my_model.py
    from llamacpu.evaluate.properties import check_learned, learned_check

    @learned_check("add", max_length=8, examples=500)
    def test_my_adder(learned_machine):
        pass  # the decorator runs the machine free on 500 drawn additions

    def test_my_subtractor(learned_machine):
        report = check_learned(learned_machine, "sub", max_length=4, examples=200)
        assert report.buckets[0].rate == 1.0, report.describe()

Fixtures:

- ``learned_machine``: the ``LearnedMachine`` of ``--llamacpu-checkpoint`` (or the
  ``LLAMACPU_CHECKPOINT`` environment variable), loaded once per session; the test is
  skipped, with the reason, when neither is given.
- ``learned_checkpoint``: that checkpoint (``llamacpu.learn.checkpoint.Checkpoint``): its stage,
  config and metrics.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "LLAMACPU_CHECKPOINT"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llamacpu")
    group.addoption("--llamacpu-checkpoint", default=None, metavar="DIR",
                    help=f"checkpoint directory (stage_N) for the learned_machine fixture "
                         f"(default: ${ENV})")


def _path(config: pytest.Config) -> Path | None:
    value = config.getoption("--llamacpu-checkpoint") or os.environ.get(ENV)
    return Path(value) if value else None


@pytest.fixture(scope="session")
def learned_checkpoint(request: pytest.FixtureRequest):
    from llamacpu.learn.checkpoint import load_checkpoint

    path = _path(request.config)
    if path is None:
        pytest.skip(f"no checkpoint: pass --llamacpu-checkpoint DIR or set ${ENV}")
    if not path.is_dir():
        raise pytest.UsageError(f"--llamacpu-checkpoint {path}: no such checkpoint directory")
    return load_checkpoint(path)


@pytest.fixture(scope="session")
def learned_machine(learned_checkpoint):
    from llamacpu.learn.learned import LearnedMachine

    return LearnedMachine.from_checkpoint(learned_checkpoint).eval()
