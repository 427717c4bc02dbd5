"""benchmarks/bench_compile_ablation.py: the compile head's bounded view against the whole
prompt prefix.

- the prefix views follow ``compile_main``'s token order: for the expert's decisions, the
  wrapper's prefix views carry the token and the top ``compile_main`` passes, their text is
  the prompt's up to the token (the bounded head its last word run), and the expert's
  decisions rebuilt offline give the same views;
- a tiny run writes JSON covering both variants and every cell;
- a bad flag is one ``error:`` line naming it and exit code 2.

The module is imported by its path.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from _bench import load_bench  # tests/_bench.py

from llamacpu.core.link import main_calls
from llamacpu.learn.compiling import (
    SKIP,
    CompileError,
    Decision,
    Kind,
    View,
    compile_main,
    expert_actions,
    lex,
    neural_policy,
)
from llamacpu.learn.evaluation import draw_examples
from llamacpu.learn.tasks import expert_program
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.controller import Controller

bench = load_bench("bench_compile_ablation")


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded here (``main`` sets its ``--threads``), as it was after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _examples():
    """Composed prompts of 1-8 operations, both wordings, short and long numbers."""
    out = []
    for task, parens in (("expr", False), ("expr", True), ("chain", None)):
        for ops in (1, 2, 8):
            for split in ("train", "heldout"):
                out += draw_examples(task, 4 if ops < 8 else 20, 2, 5, split, ops=ops,
                                     parens=parens)
    return out


def _replay(decisions):
    """A policy taking ``decisions``' actions in order (chain's expert is no function of a
    view)."""
    actions = iter(d.action for d in decisions)
    return lambda view: next(actions)


@pytest.mark.parametrize("numbers", ["zero", "raw"])
def test_the_prefix_views_follow_compile_mains_token_order(numbers):
    for ex in _examples():
        expert = expert_actions(ex, None)  # the prefix variant's token: the whole word run
        seen: list[View] = []
        trace: list[Decision] = []
        policy = bench.prefix_policy(ex.prompt, _replay(expert), numbers, seen)
        assert compile_main(ex.prompt, policy, trace, words=None) == main_calls(
            expert_program(ex))
        # stripped to the bounded fields, the prefix views are the views compile_main passed
        assert [(v.token, v.top) for v in seen] == [(d.view.token, d.view.top) for d in trace]
        # and the offline reconstruction of the expert's decisions agrees
        offline = bench.prefix_decisions(ex.prompt, expert, numbers)
        assert [d.view for d in offline] == seen
        assert [d.action for d in offline] == [d.action for d in trace]
        raw = bench.prefix_decisions(ex.prompt, expert, "raw")
        for d, r, pv in zip(trace, raw, seen):
            # the raw prefix is the prompt up to the current token, which comes next
            assert ex.prompt.startswith(r.view.head)
            assert lex(ex.prompt[len(r.view.head):])[0].shown() == d.view.token
            assert pv.head == (re.sub("[0-9]+", "0", r.view.head) if numbers == "zero"
                               else r.view.head)
            if d.view.head:  # the bounded head: the prefix's last word run
                words = [t.text for t in lex(r.view.head) if t.kind is Kind.WORDS]
                assert words[-1] == d.view.head
    assert bench.prefixes("add 12 and 345") == ["", "add ", "add 0", "add 0 and ",
                                                "add 0 and 0"]


def test_a_wrong_policy_is_a_compile_error_not_an_index_error():
    ex = draw_examples("chain", 4, 1, 0, ops=2)[0]
    with pytest.raises(CompileError):
        compile_main(ex.prompt, bench.prefix_policy(ex.prompt, lambda v: SKIP))


def test_the_batched_head_policy_is_the_head_on_each_view():
    torch.manual_seed(0)
    ctl = Controller(ControllerConfig()).eval()
    ex = draw_examples("expr", 4, 1, 3, ops=2, parens=True)[0]
    views = [d.view for d in bench.variant_decisions(ex, "prefix")]
    views += [d.view for d in bench.variant_decisions(ex, "view")]
    head = bench.HeadPolicy(ctl, batch=4)
    head.prefill(views)
    single = neural_policy(ctl)
    assert [head(v) for v in views] == [single(v) for v in views]


def test_a_tiny_run_covers_both_variants_and_every_cell(tmp_path, capsys):
    out = tmp_path / "ablation.json"
    argv = ["--seeds", "0", "--steps", "3", "--batch", "4", "--ops", "1,2", "--digits", "4",
            "--n", "3", "--json", str(out)]
    assert bench.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["command"].endswith(" ".join(argv))
    assert data["config"]["steps"] == 3 and data["config"]["numbers"] == "zero"
    assert [(t["seed"], t["variant"]) for t in data["training"]] == [
        (0, "view"), (0, "runs"), (0, "prefix")]
    assert all(t["steps"] == 3 and t["train_seconds"] > 0 for t in data["training"])
    assert set(data["training"][0]["view_certificate"]) == {"expr", "chain"}
    assert data["training"][1]["view_certificate"] is data["training"][2][
        "view_certificate"] is None
    # the same prompts: whole runs tell more views apart than their last words, and the
    # prefix variant makes each decision a view of its own
    views = [t["distinct_views"] for t in data["training"]]
    assert views[0] <= views[1] <= views[2]
    cells = {(f, s, o, 4) for f in ("expr", "expr_parens", "chain")
             for s in ("train", "heldout") for o in (1, 2)}
    for variant in ("view", "runs", "prefix"):
        rows = [r for r in data["rows"] if r["variant"] == variant]
        assert {(r["form"], r["split"], r["ops"], r["digits"]) for r in rows} == cells
        assert len(rows) == len(cells)
        assert all(r["n"] == 3 and 0 <= r["exact"] <= 1 and 0 <= r["decision_acc"] <= 1
                   for r in rows)
    assert len(data["summary"]) == 3 * len(cells)
    assert all(set(s["exact_per_seed"]) == {"0"} for s in data["summary"])
    printed = capsys.readouterr().out
    assert "| view | all |" in printed and "| prefix | all |" in printed


@pytest.mark.parametrize("argv, flag", [
    (["--ops", "0,2"], "--ops"),
    (["--digits", "four"], "--digits"),
    (["--variants", "view,whole"], "--variants"),
    (["--forms", "expr,sum"], "--forms"),
    (["--splits", "recombined"], "--splits"),
    (["--numbers", "digits"], "--numbers"),
    (["--n", "abc"], "--n"),
    (["--steps", "-1"], "--steps"),
    (["--lr", "0"], "--lr"),
    (["--filler", "1.5"], "--filler"),
    (["--threads", "0"], "--threads"),
    (["--bogus"], "--bogus"),
])
def test_a_bad_flag_is_one_line_and_exit_2(capsys, argv, flag):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and flag in err and len(err.strip().splitlines()) == 1
