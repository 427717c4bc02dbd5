"""``python -m llamacpu.eval --protocol chomsky``: the benchmark's per-token accuracy on
hand-made answers, its pooling and summary, the command line end to end (on a scripted
machine, whose answers are known, and on the stage-0 checkpoint), and its bad input.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from llamacpu import eval as eval_cli
from llamacpu.learn.evaluation import (
    CHOMSKY,
    draw_examples,
    evaluate_lengths,
    per_token_accuracy,
    protocol_summary,
    token_score,
)
from llamacpu.learn.solution import Solution
from llamacpu.learn.tasks import TASKS

# ------------------------------------------------------------------ the metric

PAIRS = [
    # (answer, target, terminated, (right, positions))
    ("0110", "0110", False, (4, 4)),
    ("0100", "0110", False, (3, 4)),
    ("1011", "0110", False, (1, 4)),      # position by position, no alignment
    ("01", "0110", False, (2, 4)),        # shorter: the missing positions are wrong
    ("", "0110", False, (0, 4)),
    ("011011", "0110", False, (4, 4)),    # longer: the extra symbols are on no position
    (None, "0110", False, (0, 4)),        # a faulted run has no answer
    ("011", "011", True, (4, 4)),         # + the termination position
    ("01", "011", True, (2, 4)),          # stops early: its END where a bit belongs
    ("0110", "011", True, (3, 4)),        # runs on: a bit where the END belongs
    ("", "", True, (1, 1)),               # binary_multiplication at length 1: END only
    ("0", "", True, (0, 1)),
    (None, "011", True, (0, 4)),
]


@pytest.mark.parametrize("answer, target, terminated, expected", PAIRS)
def test_token_score_counts_the_targets_positions(answer, target, terminated, expected):
    assert token_score(answer, target, terminated) == expected


def test_per_token_accuracy_pools_within_a_sub_batch_and_averages_the_sub_batches():
    assert per_token_accuracy([(0, 1), (3, 3)]) == 0.75          # pooled, not (0 + 1) / 2
    assert per_token_accuracy([(0, 1), (3, 3)], sub_batch=1) == 0.5
    assert per_token_accuracy([(1, 2)] * 64 + [(8, 8)] * 64) == 0.75
    assert per_token_accuracy([(1, 2)] * 64 + [(8, 8)] * 64, sub_batch=128) == 0.9
    assert per_token_accuracy([]) == 1.0


def test_the_chomsky_protocol_is_the_benchmarks():
    assert CHOMSKY.lengths == tuple(range(41, 501)) and CHOMSKY.trained == 40
    assert (CHOMSKY.problems, CHOMSKY.sub_batch) == (512, 64)
    terminated = {name for name, t in TASKS.items() if t.terminated}
    assert terminated == {"binary_addition", "binary_multiplication"}


def test_the_summary_weighs_every_length_alike():
    rows = [{"task": "add", "length": 41, "n": 10, "per_token_accuracy": 1.0,
             "exact_match": 1.0},
            {"task": "add", "length": 42, "n": 30, "per_token_accuracy": 0.5,
             "exact_match": 0.0},
            {"task": "sub", "length": 41, "n": 10, "per_token_accuracy": 0.25,
             "exact_match": 0.0}]
    s = protocol_summary(rows, CHOMSKY)
    assert s["add"] == {"score": 0.75, "exact_match": 0.5, "lengths": 2, "min_length": 41,
                        "max_length": 42, "problems": 40, "protocol_lengths": False}
    assert s["sub"]["score"] == 0.25
    full = [{"task": "add", "length": n, "n": 1, "per_token_accuracy": 1.0,
             "exact_match": 1.0} for n in CHOMSKY.lengths]
    assert protocol_summary(full, CHOMSKY)["add"]["protocol_lengths"] is True


# ------------------------------------------------------------------ a scripted machine


class Echo:
    """A machine that answers every prompt with its payload (what follows the ':'): right
    where a reversed bit string reads the same, wrong elsewhere."""

    def solve(self, prompts, max_steps=None, out_sizes=None, **kwargs):
        return [Solution(p.split(":", 1)[1].strip(), 1, True, None, None) for p in prompts]


def _expected(task: str, length: int, n: int, seed: int = 0,
              uniform: bool = False) -> tuple[float, float]:
    """(per-token accuracy, exact match) of :class:`Echo` on the problems eval draws (the
    protocol's: ``uniform``)."""
    examples = draw_examples(task, length, n, seed, uniform=uniform)
    answers = [e.prompt.split(":", 1)[1].strip() for e in examples]
    scores = [token_score(a, e.answer, TASKS[task].terminated)
              for a, e in zip(answers, examples)]
    return per_token_accuracy(scores), sum(a == e.answer for a, e in zip(answers, examples)) / n


def test_evaluate_lengths_scores_a_wrong_machine_per_token():
    rows = evaluate_lengths(Echo(), "reverse_string", [9, 12], n=6)
    for r in rows:
        token, exact = _expected("reverse_string", r["length"], 6)
        assert (r["per_token_accuracy"], r["exact_match"]) == (token, exact)
    assert any(0 < r["per_token_accuracy"] < 1 for r in rows)   # the metric is exercised


def _cli(argv, capsys, monkeypatch, machine=None, stage=0):
    """``python -m llamacpu.eval ARGV`` in this process, on ``machine`` when given:
    (exit code, stdout, stderr)."""
    if machine is not None:
        monkeypatch.setattr(eval_cli, "load_checkpoint_machine",
                            lambda path: (SimpleNamespace(stage=stage, config={}), machine))
    try:
        code = eval_cli.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_protocol_on_a_scripted_machine_per_task_and_length(tmp_path, capsys,
                                                                monkeypatch):
    argv = ["--checkpoint", str(tmp_path), "--protocol", "chomsky", "--task",
            "reverse_string,binary_addition", "--digits", "41-60", "--stride", "10", "--n",
            "3", "--json", "-q"]
    code, out, err = _cli(argv, capsys, monkeypatch, Echo())
    notes = err.strip().splitlines()                   # a note per task the machine never saw
    assert code == 0 and [n.split(":")[1] for n in notes] == [
        " the machine never trained on reverse_string",
        " the machine never trained on binary_addition"], err
    *rows, summary = [json.loads(line) for line in out.splitlines()]
    assert [(r["task"], r["length"]) for r in rows] == [
        ("reverse_string", 41), ("reverse_string", 51), ("binary_addition", 41),
        ("binary_addition", 51)]
    for r in rows:
        assert (r["per_token_accuracy"], r["exact_match"]) == _expected(
            r["task"], r["length"], 3, uniform=True)  # the protocol draws uniformly
    for task in ("reverse_string", "binary_addition"):
        mine = [r["per_token_accuracy"] for r in rows if r["task"] == task]
        assert summary["summary"][task]["score"] == pytest.approx(sum(mine) / len(mine))
        assert summary["summary"][task]["protocol_lengths"] is False
    assert summary["meta"]["lengths"] == [41, 51] and summary["meta"]["n"] == 3


def test_the_default_lengths_are_the_benchmarks_and_stride_subsamples_them(tmp_path, capsys,
                                                                           monkeypatch):
    argv = ["--checkpoint", str(tmp_path), "--protocol", "chomsky", "--task", "reverse_string",
            "--stride", "100", "--n", "1", "--json", "-q"]
    code, out, _ = _cli(argv, capsys, monkeypatch, Echo())
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["length"] for r in lines[:-1]] == [41, 141, 241, 341, 441]
    assert lines[-1]["summary"]["reverse_string"]["lengths"] == 5


# ------------------------------------------------------------------ the stage-0 checkpoint


def test_the_protocol_end_to_end_on_the_stage0_checkpoint(stage0, tmp_path, capsys,
                                                          monkeypatch):
    from llamacpu.learn.evaluation import load_learned, solve_examples

    out_dir, _, _ = stage0
    ck = out_dir / "stage_0"
    plot = tmp_path / "chomsky.png"
    argv = ["--checkpoint", str(ck), "--protocol", "chomsky", "--task", "add", "--digits",
            "2,3", "--n", "4", "--seed", "3", "--json", "--plot", str(plot), "-q"]
    code, out, err = _cli(argv, capsys, monkeypatch)
    assert code == 0 and err == "", err
    *rows, summary = [json.loads(line) for line in out.splitlines()]
    assert [r["length"] for r in rows] == [2, 3]
    assert set(rows[0]) >= {"task", "length", "n", "per_token_accuracy", "exact_match",
                            "seconds", "max_machine_steps", "wordings", "failures"}
    model = load_learned(ck)                # the same problems, scored here by hand
    for r in rows:
        examples = draw_examples("add", r["length"], 4, seed=3)
        assert r["wordings"] == len({e.template for e in examples}) >= 1
        sols = [s for _, s in solve_examples(model, examples)]
        scores = [token_score(None if s.fault else s.output, e.answer)
                  for e, s in zip(examples, sols)]
        assert r["per_token_accuracy"] == per_token_accuracy(scores)
        assert r["exact_match"] == sum(s.output == e.answer and s.fault is None
                                       for e, s in zip(examples, sols)) / 4
    assert summary["protocol"] == "chomsky"
    add = summary["summary"]["add"]
    assert add["score"] == pytest.approx(sum(r["per_token_accuracy"] for r in rows) / 2)
    assert (add["lengths"], add["min_length"], add["max_length"]) == (2, 2, 3)
    meta = summary["meta"]
    assert meta["checkpoint"] == str(ck) and meta["seed"] == 3 and meta["n"] == 4
    assert {"command", "torch", "threads"} <= set(meta)
    assert meta["command"].startswith("python -m llamacpu.eval --checkpoint")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000

    code, table, _ = _cli(argv[:-4] + ["-q"], capsys, monkeypatch)   # no --json: a table
    lines = table.splitlines()
    assert code == 0 and lines[0].startswith("| task | length | problems | per-token accuracy")
    assert sum(line.startswith("| add | ") for line in lines) == 3   # two lengths, a summary


# ------------------------------------------------------------------ per wording


class WrongIn:
    """A machine right on every problem (Python's answer) except those asked in one
    wording, and on half of another's."""

    def __init__(self, examples, wrong: str, half: str) -> None:
        self.answer = {e.prompt: e.answer for e in examples}
        self.template = {e.prompt: e.template for e in examples}
        self.wrong, self.half, self.seen = wrong, half, 0

    def solve(self, prompts, max_steps=None, out_sizes=None, **kwargs):
        out = []
        for p in prompts:
            t = self.template[p]
            self.seen += t == self.half
            bad = t == self.wrong or (t == self.half and self.seen % 2)
            out.append(Solution("x" if bad else self.answer[p], 1, True, None, None))
        return out


def test_per_wording_draws_n_problems_in_each_of_k_wordings_of_the_split():
    k, n = 5, 6
    every = set(TASKS["sub"].templates("recombined"))
    drawn = draw_examples("sub", 4, n, 3, "recombined", wordings=k)
    picked = list(dict.fromkeys(e.template for e in drawn))
    assert len(drawn) == k * n and len(picked) == k and set(picked) <= every
    assert all(sum(e.template == t for e in drawn) == n for t in picked)
    assert all(len(e.operands[0]) == 4 or len(e.operands[1]) == 4 for e in drawn)
    # the same wordings at every length and seeded; a wording's problems are its own
    assert list(dict.fromkeys(e.template for e in draw_examples(
        "sub", 2, n, 3, "recombined", wordings=k))) == picked
    assert draw_examples("sub", 4, n, 3, "recombined", wordings=k) == drawn
    more = draw_examples("sub", 4, n, 3, "recombined", wordings=k + 3)
    for t in picked:
        if t in {e.template for e in more}:
            assert [e for e in more if e.template == t] == [e for e in drawn
                                                            if e.template == t]
    few = draw_examples("reverse", 8, 2, 0, "heldout", wordings=50)  # all when fewer
    assert {e.template for e in few} == set(TASKS["reverse"].heldout_templates)


def test_eval_reports_every_wordings_exact_match_and_the_worst(tmp_path, capsys,
                                                               monkeypatch):
    drawn = draw_examples("sub", 4, 8, 0, "recombined", wordings=4)
    picked = list(dict.fromkeys(e.template for e in drawn))
    machine = WrongIn(drawn, wrong=picked[2], half=picked[0])
    code, out, err = _cli(["--checkpoint", str(tmp_path), "--task", "sub", "--digits", "4",
                           "--n", "8", "--wordings", "4", "--split", "recombined", "--json",
                           "-q"], capsys, monkeypatch, machine, stage=4)
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and row["n"] == 32 and row["wordings"] == 4
    assert row["per_wording"] == {picked[0]: 0.5, picked[1]: 1.0, picked[2]: 0.0,
                                  picked[3]: 1.0}
    assert row["worst_wording"] == {"template": picked[2], "exact_match": 0.0}
    assert row["exact_match"] == (8 + 4 + 8) / 32


# ------------------------------------------------------------------ bad input


BAD = [
    (["--protocol", "nope"], ["--protocol 'nope'", "chomsky"]),
    (["--protocol", "chomsky", "--digits", "0"], ["--digits", "at least 1"]),
    (["--protocol", "chomsky", "--digits", "-3"], ["--digits", "at least 1"]),
    (["--protocol", "chomsky", "--digits", "50-41"], ["--digits", "at least 1"]),
    (["--protocol", "chomsky", "--digits", "a,b"], ["--digits", "41-500"]),
    (["--protocol", "chomsky", "--stride", "0"], ["--stride", "at least 1"]),
    (["--protocol", "chomsky", "--n", "0"], ["--n", "at least 1"]),
    (["--protocol", "chomsky", "--task", "reverse_string,nope"], ["--task 'nope'"]),
    (["--protocol", "chomsky", "--plot", "/proc/nope/chomsky.png"],
     ["--plot /proc/nope/chomsky.png", "writable directory"]),
    (["--protocol", "chomsky", "--plot", "{dir}"], ["--plot", "is a directory"]),
    (["--protocol", "chomsky", "--task", "compute_sqrt", "--digits", "501"],
     ["--digits", "compute_sqrt", "1..500"]),
    (["--wordings", "0"], ["--wordings", "at least 1"]),
    (["--protocol", "chomsky", "--wordings", "20"], ["--wordings", "--protocol"]),
]


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_error_line_before_any_work(tmp_path, capsys, monkeypatch, argv,
                                                     words):
    def no_work(path):
        raise AssertionError("eval started its work before checking its input")

    monkeypatch.setattr(eval_cli, "load_checkpoint_machine", no_work)
    argv = ["--checkpoint", str(tmp_path), *(a.replace("{dir}", str(tmp_path)) for a in argv)]
    code, out, err = _cli(argv, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_the_protocol_draws_uniformly_and_plain_eval_keeps_edge_cases():
    """The benchmark draws its inputs uniformly: the protocol's problems are the task's
    draws without edge cases (all-ones strings are an edge case of reverse_string)."""
    from llamacpu.learn.evaluation import CHOMSKY, draw_examples

    assert CHOMSKY.uniform
    plain = draw_examples("bucket_sort", 8, 400, seed=0)
    uniform = draw_examples("bucket_sort", 8, 400, seed=0, uniform=True)
    def monotone(es):
        return sum(e.answer == e.operands[0] for e in es)  # already sorted: an edge case
    assert monotone(plain) > 3 * max(1, monotone(uniform))


def test_the_step_budget_covers_the_costliest_example_not_the_longest():
    """A binary product's cost depends on its operands, not only on the prompt's length:
    at 60 bits the longest prompt of these ten is far from the costliest, and a budget
    measured on it stopped correct runs short (they were scored wrong)."""
    from llamacpu.learn.evaluation import reference_run, solve_examples, step_budget

    examples = draw_examples("binary_multiplication", 60, 10, seed=0, uniform=True)
    costs = [reference_run(e).steps for e in examples]
    longest = max(examples, key=lambda e: len(e.prompt))
    assert step_budget(reference_run(longest).steps) < max(costs)  # the old budget's trap
    budgets = []

    class Budget:  # records the budget each batch gets
        def solve(self, prompts, max_steps, out_sizes):
            budgets.append(max_steps)
            return [Solution("", 0, True, None, None) for _ in prompts]

    list(solve_examples(Budget(), examples, batch=4))
    assert budgets == [step_budget(max(costs[i:i + 4])) for i in range(0, 10, 4)]
    list(solve_examples(Budget(), examples, max_steps=7))
    assert budgets[-1] == 7
