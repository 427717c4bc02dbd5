"""benchmarks/bench_composed_baseline.py: the transformer baseline on expr and chain.

- a run writes one row per model and cell (task × split × combinations × parentheses ×
  operations × digits; chain without parentheses), a held-out combination that cannot
  exist recorded as skipped, and the training seconds and steps per stage;
- a cell's problems are those ``python -m llamacpu.eval`` draws for the same arguments;
- ``--run-dir``: each stage trains for the last ``time`` llamacpu logged for it;
- a bad flag is one ``error:`` line and exit code 2.

Training runs a second or two per stage on one thread; no checkpoint is loaded.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from _bench import load_bench  # tests/_bench.py

from llamacpu.learn.evaluation import draw_examples

bench = load_bench("bench_composed_baseline")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cell(r: dict) -> tuple:
    return (r["model"], r["task"], r["split"], r["combinations"], r["parens"], r["ops"],
            r["digits"])


def test_a_run_scores_every_cell_and_records_its_training(tmp_path, capsys):
    out = tmp_path / "composed.json"
    argv = ["--budget", "2", "--ops", "1,2", "--digits", "4", "--n", "3", "--tasks",
            "expr,chain", "--model", "transformer", "--json", str(out)]
    assert bench.main(argv) == 0
    d = json.loads(out.read_text())
    assert d["command"] == "python benchmarks/bench_composed_baseline.py " + " ".join(argv)
    assert d["budget_seconds"] == {"expr4": 1.0, "chain4": 1.0}
    assert d["python"] and d["torch"] == torch.__version__
    t = d["train"]["transformer"]
    assert [s["stage"] for s in t["stages"]] == ["expr4", "chain4"]
    assert all(s["steps"] >= 1 and s["seconds"] >= 1.0 for s in t["stages"])
    assert t["steps"] == sum(s["steps"] for s in t["stages"]) and t["params"] > 0

    splits, combos, ops = ("train", "heldout"), ("any", "held_out"), (1, 2)
    want = {("transformer", "expr", s, c, p, k, 4)
            for s, c, p, k in itertools.product(splits, combos, (True, False), ops)}
    want |= {("transformer", "chain", s, c, None, k, 4)
             for s, c, k in itertools.product(splits, combos, ops)}
    rows = d["rows"]
    assert len(rows) == len(want) and {_cell(r) for r in rows} == want
    for r in rows:
        if r["exact_match"] is None:  # only a held-out combination that cannot exist
            assert r["combinations"] == "held_out" and r["skipped"] and r["n"] == 0
            assert r["ops"] == 1 or (r["task"], r["parens"]) == ("expr", True)
        else:
            assert r["n"] == 3 and 0.0 <= r["exact_match"] <= 1.0
    scored = {_cell(r) for r in rows if r["exact_match"] is not None}
    assert ("transformer", "expr", "heldout", "held_out", False, 2, 4) in scored
    assert ("transformer", "chain", "train", "held_out", None, 2, 4) in scored
    assert len(scored) == 16
    table = capsys.readouterr().out
    assert "| transformer | expr | train | any | with | 1 | 4 | 3 |" in table
    assert "| transformer | chain | heldout | held_out | - | 1 | 4 | 0 | skipped |" in table


def test_the_problems_are_those_llamacpu_eval_draws(tmp_path):
    a = bench.parse_args(["--json", str(tmp_path / "x.json"), "--budget", "1",
                          "--tasks", "chain,expr", "--ops", "4", "--digits", "20",
                          "--n", "2", "--splits", "heldout", "--combinations", "held_out",
                          "--parens", "without", "--seed", "7"])
    assert [s.name for s in a.stages] == ["expr4", "chain4"]  # curriculum order
    drawn = bench.draw_cells(a.cells, 2, 7, bench.matched_controller(None, a.stages))
    assert drawn == {
        bench.Cell("chain", "heldout", "held_out", None, 4, 20): draw_examples(
            "chain", 20, 2, 7, "heldout", ops=4, combinations="held_out"),
        bench.Cell("expr", "heldout", "held_out", False, 4, 20): draw_examples(
            "expr", 20, 2, 7, "heldout", ops=4, parens=False, combinations="held_out")}


def _metrics(run: Path, records: list[dict], tail: str = "") -> None:
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_run_dir_trains_each_stage_for_the_time_llamacpu_logged(tmp_path):
    """The trainer's records: each run's ``time`` counts from its own start of the stage,
    so a stage resumed after an interruption took the sum of its runs' last times."""
    run = tmp_path / "run"
    _metrics(run, [{"stage": 23, "step": 9, "time": 99.0, "run": "a"},
                   {"stage": 24, "step": 1, "time": 0.1, "run": "a"},
                   {"stage": 24, "step": 2, "time": 0.2, "run": "a"},
                   {"stage": 24, "step": 2, "retained": {"add": 1.0}},  # no time, no run
                   {"stage": 24, "step": 3, "time": 0.2, "run": "b", "resumed_from": 2},
                   {"stage": 25, "step": 1, "time": 0.6, "run": "b", "resumed_from": 0}],
             tail='{"stage": 25, "step": 2, "ti')  # a line still being written
    out = tmp_path / "composed.json"
    assert bench.main(["--run-dir", str(run), "--ops", "1", "--digits", "4", "--n", "1",
                       "--splits", "train", "--combinations", "any", "--parens", "any",
                       "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["budget_seconds"] == {"expr4": 0.4, "chain4": 0.6}
    stages = d["train"]["transformer"]["stages"]
    assert [(s["stage"], s["budget_seconds"]) for s in stages] == [("expr4", 0.4),
                                                                    ("chain4", 0.6)]
    assert all(s["seconds"] >= s["budget_seconds"] for s in stages)
    assert {(r["task"], r["parens"]) for r in d["rows"]} == {("expr", None), ("chain", None)}


def test_run_dir_needs_only_the_stages_of_the_tasks_asked_for(tmp_path, capsys):
    run = tmp_path / "run"
    _metrics(run, [{"stage": 24, "step": 3, "time": 12.5, "run": "a"}])
    a = bench.parse_args(["--run-dir", str(run), "--tasks", "expr", "--json",
                          str(tmp_path / "x.json")])
    assert a.budget_seconds == {"expr4": 12.5}
    with pytest.raises(SystemExit) as e:
        bench.main(["--run-dir", str(run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "no time for stage 25 (chain4)" in err


@pytest.mark.parametrize("argv, message", [
    ([], "exactly one of --run-dir DIR"),
    (["--budget", "2", "--run-dir", "."], "exactly one of --run-dir DIR"),
    (["--budget", "0"], "--budget must be a positive number of seconds"),
    (["--budget", "2", "--tasks", "sum"], "--tasks: unknown value 'sum': choose from expr, "
                                          "chain"),
    (["--budget", "2", "--ops", "two"], "--ops must be comma-separated integers"),
    (["--budget", "2", "--ops", "0,1"], "--ops must list integers of at least 1"),
    (["--budget", "2", "--digits", "4,x"], "--digits must be comma-separated integers"),
    (["--budget", "2", "--splits", "someday"], "--splits: unknown value 'someday'"),
    (["--budget", "2", "--combinations", "all"], "--combinations: unknown value 'all'"),
    (["--budget", "2", "--parens", "maybe"], "argument --parens: invalid choice"),
    (["--budget", "2", "--model", "gpt"], "argument --model: invalid choice"),
    (["--budget", "2", "--n", "0"], "--n must be at least 1"),
    (["--budget", "2", "--threads", "0"], "--threads must be a whole number"),
    (["--run-dir", "/nonexistent/run"], "--run-dir /nonexistent/run: no such directory"),
])
def test_a_bad_flag_is_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_run_dir_without_a_training_log_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"--run-dir {tmp_path}: no metrics.jsonl" in err and "--budget" in err
