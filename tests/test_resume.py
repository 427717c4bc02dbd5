"""Exact resume: a run killed (SIGKILL) or interrupted (SIGINT) at random moments, and
resumed each time, ends with the same checkpoint and training curve as a run that was never
stopped, bit for bit.

The run trains stage 4 (subtraction) from the suite's stage-0 checkpoint with a low
competence bar, so the window covers free-running checks, retention checks, certified checks
whose failures feed the next batches (plan replay, failing execute rows) and learning-rate
annealing: every piece of state a step depends on must be in the checkpoint. The stops are
SIGKILLs and Ctrl-Cs (SIGINT) in a seeded random order, and the never-stopped reference trains
at the same time on the other core (the trainers use one thread each). The trainers run in
processes forked from a forkserver that imported the trainer once, so a restart costs a
fraction of a second, not an interpreter start.
"""

import multiprocessing as mp
import os
import random
import shutil
import signal
import time

import pytest
import torch

from llamacpu.learn.checkpoint import load_checkpoint
from llamacpu.learn.logs import read_curve
from llamacpu.learn.trainer import TrainConfig

KILLS = 20
STEPS = 60
VOLATILE = {"time", "run", "resumed_from"}  # wall clock and which process wrote the record


def _train(cfg: TrainConfig, started=None) -> None:
    from llamacpu.learn.trainer import Trainer

    if started is not None:
        started.set()
    Trainer(cfg, log=lambda s: None).run()


@pytest.fixture(scope="module")
def ctx():
    # Ctrl-C as in a terminal. A test run started in the background by a non-interactive
    # shell (CI) has SIGINT ignored, and the forkserver and every trainer would inherit
    # that: a SIGINT while a trainer starts would then do nothing. A handler (not SIG_IGN)
    # here makes the forkserver start with SIGINT's default.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    c = mp.get_context("forkserver")
    c.set_forkserver_preload(["llamacpu.learn.trainer"])
    yield c
    signal.signal(signal.SIGINT, before)


def _config(out) -> TrainConfig:
    return TrainConfig(stages=(4,), steps=STEPS, seed=3, out=out, progress=False,
                       batch_size=8, eval_every=4, eval_size=32, ckpt_every=2,
                       retention_size=8, certify_views=4, competence=0.05,
                       answer_loss=False)


def _start_from_stage0(stage0, out):
    shutil.copytree(stage0[0] / "stage_0", out / "stage_0")
    return _config(out)


def _finished(out) -> bool:
    path = out / "stage_4"
    if not (path / "state.json").exists():
        return False
    c = load_checkpoint(path)
    return c.passed or c.step >= STEPS


@pytest.fixture
def reference(stage0, ctx, tmp_path_factory):
    """The never-stopped run, started in the background: (its process, its directory)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    p = ctx.Process(target=_train, args=(_start_from_stage0(stage0, out),))
    p.start()
    yield p, out
    if p.is_alive():
        p.kill()


def _records(out) -> int:
    f = out / "metrics.jsonl"
    return len(f.read_text().splitlines()) if f.exists() else 0


def _same(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE}


def test_a_run_stopped_at_random_moments_ends_as_if_never_stopped(stage0, ctx, reference,
                                                                  tmp_path):
    cfg = _start_from_stage0(stage0, tmp_path)
    rng = random.Random(3)
    stops = runs = 0
    signals = [signal.SIGKILL, signal.SIGINT] * (KILLS // 2)  # as many of each, in an
    random.Random(KILLS).shuffle(signals)                      # order mixing both
    while not _finished(tmp_path):
        runs += 1
        assert runs <= 4 * KILLS, "the run makes no progress between stops"
        before = _records(tmp_path)
        started = ctx.Event()
        p = ctx.Process(target=_train, args=(cfg, started))
        p.start()
        stopped = False
        if stops < KILLS:  # a random moment: while starting, stepping, checking or saving
            # not before the process runs _train: the forkserver forks it with SIGINT
            # ignored and restores the handler after, and a Ctrl-C in between is lost
            # (the run then went on to its end unstopped, with 13 of the 20 stops made)
            assert started.wait(120), "the trainer process did not start"
            wait_for = rng.choice((0, 0, 1, 2))  # records of this run first (0: starting)
            deadline = time.time() + 120
            while (_records(tmp_path) < before + wait_for and p.is_alive()
                   and time.time() < deadline):
                time.sleep(0.005)
            # then a random delay, cut short by the run's next record. A run so adds at most
            # two records past the ones it waited for: the one that cut the delay short, and
            # the step a Ctrl-C lets finish (a Ctrl-C while starting: the first step)
            until = time.time() + rng.uniform(0.0, 0.3)
            while (time.time() < until and _records(tmp_path) <= before + wait_for
                   and p.is_alive()):
                time.sleep(0.002)
            if p.is_alive():
                os.kill(p.pid, signals[stops])
                stops, stopped = stops + 1, True
        p.join(600)
        assert p.exitcode is not None, "a stopped trainer did not exit"
        if stopped:  # a Ctrl-C while the trainer imported once landed in a finalizer,
            # which swallowed it, and the run went on to its end
            assert _records(tmp_path) <= before + wait_for + 2, "a Ctrl-C was lost"
    assert stops == KILLS

    ref_process, reference = reference
    ref_process.join(600)
    assert ref_process.exitcode == 0 and _finished(reference)
    assert any(m.get("certified") == 0.0 for m in read_curve(reference))  # certified checks
    want, got = load_checkpoint(reference / "stage_4"), load_checkpoint(tmp_path / "stage_4")
    assert (got.step, got.passed) == (want.step, want.passed)
    assert want.model_state.keys() == got.model_state.keys()
    for k, v in want.model_state.items():  # weights and the OEU replay buffer
        assert torch.equal(v, got.model_state[k]), k
    for k, v in want.optimizer_state["state"].items():
        for name, t in v.items():
            assert torch.equal(t, got.optimizer_state["state"][k][name]), (k, name)
    assert len(got.metrics) == len(want.metrics) == want.step
    for a, b in zip(want.metrics, got.metrics):
        assert _same(a, b), (a["step"], a, b)
    curve, ref_curve = read_curve(tmp_path), read_curve(reference)
    assert [(m["stage"], m["step"]) for m in curve] == [(m["stage"], m["step"])
                                                        for m in ref_curve]
    assert all(_same(a, b) for a, b in zip(ref_curve, curve))
    assert len({m["run"] for m in curve}) > 1  # the curve was written by several runs
