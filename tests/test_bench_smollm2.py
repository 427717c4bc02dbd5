"""benchmarks/bench_smollm2.py: SmolLM2 alone on the problems llamacpu is measured on.

- a composed task's problems are ``draw_examples``' for the same arguments (those of
  ``python -m llamacpu.eval``), in its cells' order; add keeps its problems and its rows;
- the few-shot chat: solved shots (Python's answer) before the question, never a test
  problem; "Q:"/"A:" lines for a tokenizer without a chat template;
- a bad flag is one ``error:`` line and exit code 2;
- the llamacpu half runs a checkpoint that never trained expr (and scores it).

No model is downloaded or loaded: the module is imported by its path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from _bench import load_bench  # tests/_bench.py

from llamacpu.core import compose
from llamacpu.learn.evaluation import draw_examples
from llamacpu.learn.tasks import TASKS

bench = load_bench("bench_smollm2")


def _python_answer(e) -> int:
    """Python's own reading of a composed problem: ``eval`` of the expression, the chain
    folded left to right."""
    if e.task == "expr":
        return eval(e.operands[0], {"__builtins__": {}})  # digits, + - * and parentheses
    return compose.evaluate_chain(e.operands[1::2], [int(x) for x in e.operands[0::2]])


def test_composed_problems_are_those_llamacpu_eval_draws():
    a = bench.parse_args(["--task", "chain", "--ops", "1,8", "--digits", "4,100", "--n", "3",
                          "--split", "recombined", "--seed", "7"])
    assert [(c.ops, c.digits) for c in a.cells] == [(1, 4), (1, 100), (8, 4), (8, 100)]
    assert all(c.split == "recombined" and c.shots == 3 for c in a.cells)
    cell = bench.Cell("expr", 20, 4, True, "heldout", 3)
    assert bench.cell_problems(cell, 4, 7) == draw_examples("expr", 20, 4, 7, "heldout",
                                                            ops=4, parens=True)
    assert bench.cell_problems(bench.Cell("expr", 4), 4, 0) == draw_examples("expr", 4, 4, 0)


def test_add_keeps_its_problems_and_its_rows():
    a = bench.parse_args([])
    assert a.cells == [bench.Cell("add", n) for n in (2, 3, 5, 20)]
    assert (a.n, a.json) == (200, Path("benchmarks/results_smollm2.json"))
    rng = random.Random("bench_smollm2/add/5/0")
    assert bench.problems(5, 4, 0) == [TASKS["add"].sample(rng, 5) for _ in range(4)]
    assert [e.operands for e in bench.problems(1, 3, 0)] == [("9", "4"), ("9", "0"),
                                                            ("6", "7")]
    sets = bench.cell_sets(a.cells[:1], 5, 0)
    assert sets[0].examples == bench.problems(2, 5, 0) and sets[0].shots == []
    assert a.cells[0].fields() == {"digits": 2}
    e = sets[0].examples[0]
    assert bench.few_shot_messages([], e) == [
        {"role": "user", "content": bench.QUESTION.format(a=e.operands[0], b=e.operands[1])}]


@pytest.mark.parametrize("argv", [
    ["--task", "expr", "--ops", "4", "--digits", "20", "--parens", "with"],
    ["--task", "chain", "--ops", "2", "--digits", "100", "--split", "heldout"],
])
def test_the_shots_are_solved_problems_before_the_question_and_never_test_problems(argv):
    a = bench.parse_args([*argv, "--n", "6"])
    (cell, tests, shots), = bench.cell_sets(a.cells, a.n, a.seed)
    assert len(shots) == 3 and not {s.operands for s in shots} & {e.operands for e in tests}
    for s in shots:
        assert s.length <= bench.SHOT_DIGITS and s.answer == str(_python_answer(s))
        ops = sum(map(s.operands[0].count, "+-*")) if s.task == "expr" else \
            len(s.operands) // 2
        assert ops in (1, 2)
    msgs = bench.few_shot_messages(shots, tests[0])
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
    assert [m["content"] for m in msgs[1::2]] == [s.answer for s in shots]
    assert msgs[-1]["content"] == f"{tests[0].prompt}\n{bench.ASK}"
    assert msgs[0]["content"] == f"{shots[0].prompt}\n{bench.ASK}"


def test_shots_avoid_the_test_problems_when_few_are_left():
    cell = bench.Cell("add", 1, shots=3)
    tests = [TASKS["add"].make((str(a), str(b))) for a in range(10) for b in range(10)
             if (a, b) not in {(1, 2), (3, 4), (5, 6)}]
    shots = bench.draw_shots(cell, tests, 0)
    assert sorted(s.operands for s in shots) == [("1", "2"), ("3", "4"), ("5", "6")]
    with pytest.raises(ValueError, match="found only 3 of 4 shots"):
        bench.draw_shots(cell._replace(shots=4), tests, 0)


def test_without_a_chat_template_the_shots_are_q_and_a_lines():
    class Plain:  # a tokenizer without a chat template (the tiny model's)
        chat_template = None

    msgs = [{"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"},
            {"role": "user", "content": "4 + 5"}]
    assert bench.chat_prompt(Plain(), msgs) == "Q: 1 + 2\nA: 3\nQ: 4 + 5\nA:"
    assert bench.chat_prompt(Plain(), msgs[-1:]) == "4 + 5"


def test_the_reply_has_room_for_the_longest_answer():
    for task in ("expr", "chain"):
        cell = bench.Cell(task, 100, 8)
        assert max(len(e.answer) for e in bench.cell_problems(cell, 5, 0)) \
            <= bench.answer_digits(cell)


@pytest.mark.parametrize("argv, message", [
    (["--ops", "2"], "--ops: task add has no operation count"),
    (["--parens", "with"], "--parens: task add has no parentheses"),
    (["--task", "chain", "--parens", "with"], "--parens: task chain has no parentheses"),
    (["--split", "heldout"], "--split: task add has one question"),
    (["--task", "expr", "--split", "someday"], "--split must be one of"),
    (["--task", "expr", "--ops", "0"], "--ops must list numbers of at least 1"),
    (["--task", "expr", "--ops", "two"], "--ops must be comma-separated integers"),
    (["--task", "expr", "--shots", "-1"], "--shots must be at least 0"),
    (["--task", "sum"], "invalid choice"),
])
def test_a_bad_flag_is_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_llamacpu_half_runs_a_checkpoint_that_never_trained_expr(two_step_run, tmp_path,
                                                                     capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--task", "expr", "--ops", "1", "--digits", "4", "--n", "2",
                       "--skip-alone", "--checkpoint", str(two_step_run / "stage_0"),
                       "--json", str(out)]) == 0
    row, = json.loads(out.read_text())["rows"]
    assert (row["task"], row["digits"], row["ops"], row["shots"], row["n"]) == \
        ("expr", 4, 1, 0, 2)
    assert 0.0 <= row["exact_match"] <= 1.0
    assert "expr (1 ops), train, 0-shot" in capsys.readouterr().out
