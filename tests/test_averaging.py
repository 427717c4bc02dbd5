"""``train --ema``: the machine checked, certified and saved is the moving average of the
trained weights.

- a checkpoint's machine (``model.*``, what ``from_checkpoint`` loads) is the average, the
  trained weights go beside it (``train.*``), and the two differ;
- a run stopped mid-stage and resumed ends bit for bit where an unstopped run ends (the
  trained weights, the average and its count all come back);
- a checkpoint written without ``--ema`` resumes with the average starting at its weights;
- one written with it and resumed without goes on from its trained weights.
"""

from __future__ import annotations

import torch

from llamacpu.learn.averaging import TRAIN_PREFIX, WeightAverage
from llamacpu.learn.checkpoint import load_checkpoint
from llamacpu.learn.learned import LearnedMachine
from llamacpu.learn.trainer import TrainConfig, Trainer

STEPS = 6


def _cfg(out, **kw) -> TrainConfig:
    return TrainConfig(**{"stages": (0,), "steps": STEPS, "seed": 5, "out": out,
                          "progress": False, "batch_size": 8, "eval_every": 100,
                          "ckpt_every": 2, "answer_loss": False, "ema": 0.9, **kw})


def _split(state):
    model = {k: v for k, v in state.items() if k.startswith("model.")}
    trained = {k: v for k, v in state.items() if k.startswith(TRAIN_PREFIX)}
    return model, trained


def test_the_saved_machine_is_the_average_and_the_trained_weights_go_beside_it(tmp_path):
    trainer = Trainer(_cfg(tmp_path / "run"), log=lambda s: None)
    trainer.run()
    c = load_checkpoint(tmp_path / "run" / "stage_0")
    model, trained = _split(c.model_state)
    average = trainer.average.model.trainable_state()
    weights = trainer.model.trainable_state()
    assert set(average) == {k[len("model."):] for k in model}
    assert set(weights) == {k[len(TRAIN_PREFIX):] for k in trained}
    assert all(torch.equal(model[f"model.{k}"], v) for k, v in average.items())
    assert all(torch.equal(trained[f"{TRAIN_PREFIX}{k}"], v) for k, v in weights.items())
    assert any(not torch.equal(average[k], weights[k]) for k in weights)  # it lags
    assert c.extra["ema_updates"] == STEPS
    loaded = LearnedMachine.from_checkpoint(c).trainable_state()
    assert all(torch.equal(loaded[k], v) for k, v in average.items())


def _stop_after(step: int):
    """A Trainer whose run stops (as on Ctrl-C) once ``step`` steps are done."""
    class Stopping(Trainer):
        def _train_step(self, stage, model, opt, rng, at, *rest):
            out = super()._train_step(stage, model, opt, rng, at, *rest)
            if at + 1 == step:
                self.interrupted = True  # what the Ctrl-C handler sets
            return out
    return Stopping


def test_a_stopped_and_resumed_run_ends_where_an_unstopped_one_does(tmp_path):
    Trainer(_cfg(tmp_path / "once"), log=lambda s: None).run()
    _stop_after(3)(_cfg(tmp_path / "twice"), log=lambda s: None).run()
    stopped = load_checkpoint(tmp_path / "twice" / "stage_0")
    assert stopped.step == 3 and stopped.extra["ema_updates"] == 3
    logs: list[str] = []
    Trainer(_cfg(tmp_path / "twice"), log=logs.append).run()
    assert any("resuming at step 3" in line for line in logs)
    once = load_checkpoint(tmp_path / "once" / "stage_0").model_state
    twice = load_checkpoint(tmp_path / "twice" / "stage_0").model_state
    assert set(once) == set(twice)
    for k in once:
        if k.startswith(("model.", TRAIN_PREFIX)):
            assert torch.equal(once[k], twice[k]), k


def test_a_checkpoint_without_an_average_starts_one_at_its_weights(tmp_path):
    _stop_after(2)(_cfg(tmp_path / "run", ema=0.0), log=lambda s: None).run()
    c = load_checkpoint(tmp_path / "run" / "stage_0")
    assert not _split(c.model_state)[1] and "ema_updates" not in c.extra
    model = LearnedMachine.from_checkpoint(c)
    average = WeightAverage.resume(model, c.model_state, 0, 0.9)
    average.update(model)  # the first update copies the weights as they are
    got, want = average.model.trainable_state(), model.trainable_state()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    trainer = Trainer(_cfg(tmp_path / "run"), log=lambda s: None)
    trainer.run()  # resumes with --ema: the trained weights are the checkpoint's
    assert trainer.average.updates == STEPS - 2


def test_resumed_without_ema_a_stage_goes_on_from_the_trained_weights(tmp_path):
    # the optimizer state is the trained weights': going on from their average would be a
    # different run. Checks off in this window, so the average does not feed back into
    # training, and the weights end where an unstopped --ema run's trained weights end
    Trainer(_cfg(tmp_path / "once"), log=lambda s: None).run()
    _stop_after(3)(_cfg(tmp_path / "twice"), log=lambda s: None).run()
    logs: list[str] = []
    Trainer(_cfg(tmp_path / "twice", ema=0.0), log=logs.append).run()
    assert any("was trained with --ema" in line for line in logs)
    once = load_checkpoint(tmp_path / "once" / "stage_0").model_state
    twice = load_checkpoint(tmp_path / "twice" / "stage_0").model_state
    assert not _split(twice)[1]  # no average now: its checkpoint has one set of weights
    for k, v in _split(once)[1].items():
        assert torch.equal(v, twice["model." + k[len(TRAIN_PREFIX):]]), k
