"""benchmarks/bench_wordings.py: filler words against the plan's unseen wordings.

- the variants train on the same prompts, with filler where the variant says and nowhere
  else;
- a tiny run writes JSON with every seed, variant, task and split, each view scored;
- word dropout deletes a letter word, never makes a held-out wording, and keeps the answer;
- fit rounds end on the count of wrong training views the scores report;
- a bad flag is one ``error:`` line naming it and exit code 2.

The module is imported by its path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _bench import load_bench  # tests/_bench.py

from llamacpu.core.isa import DEFAULT_ALPHABET
from llamacpu.learn.controller_tables import every_view
from llamacpu.learn.train_config import TrainConfig

bench = load_bench("bench_wordings")


def test_the_variants_share_their_prompts_and_differ_only_in_filler():
    tasks = ["add", "copy", "sort"]
    base = bench.training_prompts(tasks, 21, 0, 40, DEFAULT_ALPHABET)
    assert {e.task for e in base} == set(tasks)
    assert base == bench.training_prompts(tasks, 21, 0, 40, DEFAULT_ALPHABET)
    assert bench.with_filler(base, "none", 1.0, 0) == base
    for variant in ("front", "anywhere", "front_letters", "anywhere_letters"):
        worded = bench.with_filler(base, variant, 1.0, 0)
        assert [(e.task, e.answer, e.template) for e in worded] == [
            (e.task, e.answer, e.template) for e in base]
        assert all(len(w.prompt) > len(e.prompt) for w, e in zip(worded, base))
        if variant.startswith("front"):
            assert all(w.prompt.endswith(" " + e.prompt) for w, e in zip(worded, base))
        else:  # somewhere: at the end or inside too, on some of 40 prompts
            assert any(not w.prompt.endswith(e.prompt) for w, e in zip(worded, base))


def test_word_dropout_deletes_a_letter_word_and_never_makes_a_held_out_wording():
    from llamacpu.learn.evaluation import reference_run  # the expert on the interpreter

    tasks = ["add", "sub", "copy", "sort", "mul"]
    base = bench.training_prompts(tasks, 21, 1, 300, DEFAULT_ALPHABET)
    dropped = bench.with_filler(base, "front_drop", 0.0, 1, drop=1.0)
    changed = [(e, d) for e, d in zip(base, dropped) if d.prompt != e.prompt]
    assert len(changed) > 200  # most training wordings have two letter words or more
    for e, d in changed:
        assert len(d.template.split(" ")) == len(e.template.split(" ")) - 1
        assert d.template not in bench.held_out(e.task, DEFAULT_ALPHABET)
        assert (d.task, d.answer, d.operands) == (e.task, e.answer, e.operands)
        assert reference_run(d).output == d.answer  # the expert still reads it right
    kept = [e for e, d in zip(base, dropped) if d.prompt == e.prompt]
    assert kept  # one letter word, or the only deletions make held-out wordings
    assert bench.with_filler(base, "front_drop", 0.0, 1, drop=0.0) == base


def test_a_tiny_run_scores_every_view_of_each_split(tmp_path, capsys):
    out = tmp_path / "wordings.json"
    argv = ["--seeds", "0", "--variants", "none,anywhere_letters", "--steps", "2",
            "--batch", "4", "--tasks", "copy,reverse", "--splits", "recombined",
            "--json", str(out)]
    assert bench.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["command"].endswith(" ".join(argv))
    assert data["config"]["tasks"] == ["copy", "reverse"]
    assert [(r["seed"], r["variant"]) for r in data["rows"]] == [(0, "none"),
                                                               (0, "anywhere_letters")]
    view = TrainConfig(wordings="grammar").model_config().controller.view
    for row in data["rows"]:
        for task in ("copy", "reverse"):
            got = row["scores"][task]["recombined"]
            assert got["views"] == len(every_view(task, view, ("recombined",)).examples)
            assert 0 <= got["wrong_views"] <= got["views"]
            assert got["wrong_wordings"] <= got["wordings"]
    printed = capsys.readouterr().out
    assert "| all |" in printed and "none: recombined" in printed


ROOT = Path(__file__).resolve().parents[1]
CURRICULUM = max((ROOT / "checkpoints" / "grammar0").glob("stage_*/"),  # committed: a grammar
                 key=lambda d: int(d.name.split("_")[1]))               # curriculum's latest


def test_from_a_checkpoint_trains_its_controller_and_scores_it_before(tmp_path):
    """--from: the start is the checkpoint's controller (a trained one: most views right,
    where a fresh one emits no task's program), and at a negligible rate two steps leave
    its scores as they were: the training went on from it."""
    out = tmp_path / "from.json"
    argv = ["--from", str(CURRICULUM), "--stage", "7", "--tasks", "copy,reverse",
            "--seeds", "0", "--variants", "front", "--steps", "2", "--batch", "4",
            "--lr", "1e-12", "--splits", "recombined", "--json", str(out)]
    assert bench.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["from"] == str(CURRICULUM)
    start, after = data["start"], data["rows"][0]["scores"]
    for task in ("copy", "reverse"):
        got = start[task]["recombined"]
        assert got["views"] > 0 and got["wrong_views"] < got["views"] / 2
    assert after == start


def test_from_a_checkpoint_is_refused_tasks_it_never_trained(capsys):
    from llamacpu.learn.checkpoint import load_checkpoint
    from llamacpu.learn.curriculum import STAGES

    later = [s for s in STAGES[load_checkpoint(CURRICULUM).stage + 1:] if not s.reviews_all]
    if not later:
        pytest.skip("the committed checkpoint trained every stage")
    with pytest.raises(SystemExit) as e:
        bench.main(["--from", str(CURRICULUM), "--stage", str(later[-1].index)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "never trained" in err and len(err.strip().splitlines()) == 1


def test_a_view_sample_is_seeded_and_drawn_from_every_view():
    view = TrainConfig(wordings="grammar").model_config().controller.view
    every = bench.views_of("sub", "recombined", view, DEFAULT_ALPHABET)
    some = bench.views_of("sub", "recombined", view, DEFAULT_ALPHABET, sample=40)
    assert len(some) == 40 and len({e.prompt for e in some}) == 40
    assert {e.prompt for e in some} <= {e.prompt for e in every}
    assert some == bench.views_of("sub", "recombined", view, DEFAULT_ALPHABET, sample=40)
    assert bench.views_of("sub", "recombined", view, DEFAULT_ALPHABET,
                          sample=10 ** 6) == every  # a sample as large as all is all


def test_fit_rounds_end_on_the_count_the_scores_report(tmp_path):
    """--fit-rounds replays wrong training views; its last round counts the training views
    wrong on the controller that is then scored, so the two agree."""
    out = tmp_path / "fit.json"
    argv = ["--seeds", "0", "--variants", "none", "--steps", "2", "--batch", "4",
            "--tasks", "copy", "--splits", "grammar_train", "--fit-rounds", "2",
            "--fit-steps", "2", "--json", str(out)]
    assert bench.main(argv) == 0
    row = json.loads(out.read_text())["rows"][0]
    rounds = row["fit"]
    assert 1 <= len(rounds) <= 3 and [r["round"] for r in rounds] == list(range(len(rounds)))
    assert rounds[-1]["wrong_training_views"] == row["scores"]["copy"]["grammar_train"][
        "wrong_views"]
    assert all(r["wrong_training_views"] > 0 for r in rounds[:-1])


def test_ema_averages_the_trained_weights():
    """--ema: the average starts as the first step's weights and then trails them by its
    decay, so two steps at decay 0.5 give the midpoint of the two steps' weights."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from llamacpu.llm.controller import Controller

    torch.manual_seed(0)
    ctl = Controller(TrainConfig(wordings="grammar").model_config().controller)
    ema = AveragedModel(ctl, multi_avg_fn=get_ema_multi_avg_fn(0.5))
    examples = bench.training_prompts(["copy"], 21, 0, 8, DEFAULT_ALPHABET)
    seen = []
    bench.train(ctl, examples[:4], 4, 1e-2, ema=ema)
    seen.append({n: p.detach().clone() for n, p in ctl.named_parameters()})
    bench.train(ctl, examples[4:], 4, 1e-2, ema=ema)
    averaged = dict(ema.module.named_parameters())
    moved = 0
    for n, p in ctl.named_parameters():
        want = 0.5 * seen[0][n] + 0.5 * p.detach()
        assert torch.allclose(averaged[n], want, atol=1e-6), n
        moved += not torch.equal(p.detach(), seen[0][n])
    assert moved  # the second step changed weights, so the average is not either step's


@pytest.mark.parametrize("argv, flag", [
    (["--variants", "none,middle"], "--variants"),
    (["--splits", "heldout"], "--splits"),
    (["--tasks", "add,expr"], "--tasks"),
    (["--stage", "99"], "--stage"),
    (["--seeds", "a"], "--seeds"),
    (["--steps", "0"], "--steps"),
    (["--fit-rounds", "-1"], "--fit-rounds"),
    (["--fit-steps", "0"], "--fit-steps"),
    (["--ema", "1"], "--ema"),
    (["--views", "-1"], "--views"),
    (["--model", "gpt9"], "--model"),
    (["--lr", "0"], "--lr"),
    (["--filler", "2"], "--filler"),
    (["--drop", "-0.5"], "--drop"),
    (["--threads", "0"], "--threads"),
    (["--bogus"], "--bogus"),
    (["--from", "no/such/checkpoint"], "--from"),
    (["--from", "no/such/checkpoint", "--stage", "3"], "--from"),
])
def test_a_bad_flag_is_one_line_and_exit_2(capsys, argv, flag):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and flag in err and len(err.strip().splitlines()) == 1
