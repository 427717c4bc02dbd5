"""The closing review (curriculum stage ``review``): every task trained before it, drawn
uniformly, for a whole cosine from a fraction of the peak rate under a slower average, judged
once at its end (docs/training.md)."""

import random
from collections import Counter
from dataclasses import replace

import pytest

from llamacpu.learn.curriculum import (
    EVERY_TASK,
    STAGES,
    Stage,
    competence_set,
    eval_set,
    is_heldout,
    last_stages,
    parse_stage,
    sample_batch,
    trained_tasks,
)
from llamacpu.learn.tasks import heldout_key

REVIEW = STAGES[parse_stage("review")]
SKIPPED = {parse_stage("fmap5_data")}  # the grammar curricula skip the channel-off baseline
TRAINED = set(range(REVIEW.index)) - SKIPPED


def test_the_review_is_last_and_reviews_every_task_the_run_trained():
    assert REVIEW.reviews_all and REVIEW.index == len(STAGES) - 1
    assert REVIEW.lr_scale < 1 and REVIEW.train_steps and REVIEW.ema
    assert REVIEW.max_steps >= max(s.max_steps for s in STAGES[:-1])  # any task's budget
    names = [s.name for s in last_stages(REVIEW, trained=TRAINED)]
    assert names == ["add4", "sub4", "cmp4", "copy8", "reverse8", "max8", "sort6", "mul3",
                     "revstr8", "dupstr8", "odds8", "binadd8", "bsort8", "binmul8", "sqrt8",
                     "declnum4", "decllist6", "decltext8", "fmap5", "expr4", "chain4"]
    # it teaches no task of its own: a checkpoint of it knows what its stages knew
    assert trained_tasks(REVIEW.index) == trained_tasks(REVIEW.index - 1)
    with pytest.raises(ValueError, match="cannot be first"):
        Stage(0, "r", EVERY_TASK, 1, 1, 0.0, 10, "x")
    with pytest.raises(ValueError, match="draw its examples"):
        REVIEW.sample(random.Random(0))


@pytest.mark.parametrize("split", ["train", "grammar_train"])
def test_its_batches_are_every_trained_task_uniformly_and_never_held_out(split):
    rng = random.Random(3)
    batch = [e for _ in range(40) for e in sample_batch(REVIEW, rng, 32, split=split,
                                                        trained=TRAINED)]
    counts = Counter(e.task for e in batch)
    tasks = {s.task for s in last_stages(REVIEW, trained=TRAINED)}
    assert set(counts) == tasks  # fmap_data never trained, so never reviewed
    assert min(counts.values()) > 0.5 * len(batch) / len(tasks)  # uniform over tasks
    assert not any(is_heldout(heldout_key(e)) for e in batch)
    # weights move the share, as a consolidating stage's do
    heavy = [e for e in sample_batch(REVIEW, random.Random(4), 400, weights={"mul": 50.0},
                                     trained=TRAINED)]
    assert Counter(e.task for e in heavy).most_common(1)[0][0] == "mul"


def test_its_check_holds_every_task_in_held_out_prompts_and_recombined_wordings():
    checked = competence_set(REVIEW, seed=1, split="grammar_train", trained=TRAINED)
    per_task = Counter(e.task for e in checked)
    assert set(per_task) == {s.task for s in last_stages(REVIEW, trained=TRAINED)}
    each = REVIEW.eval_size // len(per_task)
    assert all(n <= each * 3 // 2 for n in per_task.values())
    assert per_task["add"] == each + each // 2  # held-out prompts, then recombined wordings
    from llamacpu.learn.tasks import TASKS

    add = [e for e in checked if e.task == "add"]
    recombined = set(TASKS["add"].templates("recombined"))
    assert sum(e.template in recombined for e in add) == each // 2
    # the same prompts as that task's last stage's own check: nothing new to train on
    add4 = STAGES[parse_stage("add4")]
    own = competence_set(replace(add4, eval_size=each), seed=1, split="grammar_train")
    assert [e.prompt for e in add] == [e.prompt for e in own]
    some = eval_set(REVIEW, seed=5, size=42, trained={0, 1, 4})  # add and sub only
    assert Counter(e.task for e in some) == {"add": 21, "sub": 21}


def test_the_trainer_settles_it_for_its_own_steps_and_judges_it_once(tmp_path, monkeypatch):
    """A review of add and sub (the table's review row moved to index 5, 6 steps): it
    trains all 6 steps although --steps is 4 and --eval-every 2, on add and sub only, at a
    tenth of the rate, under the stage's slower average; the first check, of every task (no
    separate look back), is at the cosine's end. Failed there, it goes on at the floor rate
    and is judged every --eval-every steps. ``evaluate`` is stubbed (below the bar at the
    first check, then right): the test is about the schedule."""
    from llamacpu.learn import evaluation
    from llamacpu.learn import trainer as train_mod
    from llamacpu.learn.trainer import TrainConfig, Trainer

    review = replace(REVIEW, index=5, train_steps=6)
    monkeypatch.setattr(train_mod, "STAGES", (*STAGES[:5], review))
    checks: list[set] = []

    def fake_evaluate(model, examples, max_steps, batch=256, dist=None):
        checks.append({e.task for e in examples})
        return 0.5 if len(checks) == 1 else 1.0

    tasks: Counter = Counter()
    real = train_mod.sample_batch

    def spy(stage, rng, n, *a, **k):
        out = real(stage, rng, n, *a, **k)
        tasks.update(e.task for e in out)
        return out

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(train_mod, "sample_batch", spy)
    cfg = TrainConfig(stages=(5,), steps=4, eval_every=2, batch_size=16, seed=0, ema=0.99,
                      warmup=0, retention_size=6, out=tmp_path, progress=False, answer_loss=False,
                      certify=False)
    trainer = Trainer(cfg, log=lambda s: None)
    st = trainer.run()[5]
    assert st.passed and st.step == 8
    assert [m["step"] for m in st.metrics if "accuracy" in m] == [6, 8]
    assert checks[0] == {"add", "sub"}  # the stage's own check; then the retention report
    assert set(tasks) == {"add", "sub"}
    lrs = [m["lr"] for m in st.metrics]
    peak = cfg.lr * review.lr_scale
    assert lrs[0] == pytest.approx(peak) and lrs == sorted(lrs, reverse=True)
    assert lrs[5] > 0.15 * peak  # a cosine over its 6 steps (over --steps 4: at 0.1 by now)
    assert lrs[6:] == pytest.approx([0.1 * peak] * 2)  # then its floor
    assert trainer.average.decay == review.ema
    assert trainer._cert_sets(review).keys() == {"add", "sub"}
