"""llamacpu.evaluate's task strategies and check_learned, and the check CLI's input errors.

The acceptance test of the checker: a machine with ONE wrong OEU entry (ADD of 7 and 8,
carry 0) must be caught, and hypothesis must shrink the counterexample to operands of at
most two digits holding that pair, with the divergence step naming that ADD. The learned
machine itself is checked in tests/test_train.py, which trains one.
"""

from __future__ import annotations

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from llamacpu import check
from llamacpu.core.golden import load_program
from llamacpu.core.interp import run
from llamacpu.core.isa import PRINTABLE_ALPHABET, Op
from llamacpu.evaluate.properties import (
    ExpertMachine,
    check_learned,
    corrupt_oeu,
    draw_examples,
    first_divergence,
    learned_check,
)
from llamacpu.evaluate.report import report_lengths, trained_tasks
from llamacpu.evaluate.strategies import number_pair, task_examples, task_operands
from llamacpu.learn.curriculum import STAGES
from llamacpu.learn.tasks import TASKS, default_out_size, expert_program

CURRICULUM_TASKS = sorted(trained_tasks(len(STAGES) - 1))  # the review trains none


def _aligned_pair(a: str, b: str, da: str, db: str) -> bool:
    """Whether A and B hold digits da and db in the same column (right-aligned)."""
    return any(a[-i] == da and b[-i] == db for i in range(1, min(len(a), len(b)) + 1))


def test_a_broken_oeu_entry_is_found_and_shrunk_to_the_pair():
    broken = ExpertMachine(corrupt_oeu("ADD", 7, 8, carry=0))
    # plain (uniform) operands: hypothesis's own draws favour simple values and met this
    # entry in 0 to 4 of 1000 additions, depending on the seed
    report = check_learned(broken, "add", lengths={1: 500, 2: 500}, plain_from=1, seed=0)
    assert not report.ok
    assert 0 < report.passed < report.n  # most additions never meet 7 + 8 with carry 0
    c = report.counterexample
    assert c is not None
    a, b = c.example.operands
    assert len(a) <= 2 and len(b) <= 2, c.describe()
    assert _aligned_pair(a, b, "7", "8"), c.describe()
    assert c.got != c.example.answer and c.reference == c.example.answer
    d = c.divergence
    assert d is not None and d.field == "result", c.describe()
    assert d.expected.op == d.got.op == Op.ADD
    assert (7, 8) == tuple(v for v in d.got.values if v is not None)
    assert (d.expected.result, d.got.result) == (5, 6)
    assert c.program_differs_at is None  # the expert program ran: only the OEU is wrong
    text = report.describe()
    assert "counterexample" in text and "step" in text and "ADD" in text


def test_the_exact_machine_passes_every_curriculum_task():
    """The expert programs on the tensor machine with the exact OEU: no counterexample, so
    every drawn example is in the task's contract and Python agrees with the interpreter."""
    exact = ExpertMachine()
    for task in CURRICULUM_TASKS:
        report = check_learned(exact, task, max_length=3, examples=60, seed=1)
        assert report.ok and report.n >= 50, report.describe()
        assert {b.length for b in report.buckets} == {1, 2, 3}


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(TASKS)), st.integers(1, 6), st.data())
def test_task_examples_have_the_drawn_length_and_the_reference_answer(task, length, data):
    length = min(length, TASKS[task].max_length or length)
    ex = data.draw(task_examples(task, length, length))
    assert ex.task == task and ex.length == length
    assert ex.prompt == TASKS[task].make(ex.operands, ex.template).prompt
    result = run(expert_program(ex), ex.prompt, 10_000_000,
                 out_size=default_out_size(ex))
    assert result.output == ex.answer


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(TASKS)), st.integers(1, 6),
       st.sampled_from(("train", "heldout", "grammar_train", "recombined", "new_words")),
       st.data())
def test_printable_task_examples_run_their_experts_and_answer_as_python(task, length, split,
                                                                         data):
    """Drawn in the printable alphabet: capitalised wordings and payloads of any printable
    character but ':', which the expert program, assembled in that alphabet, answers as
    Python does."""
    length = min(length, TASKS[task].max_length or length)
    ex = data.draw(task_examples(task, length, length, split, alphabet=PRINTABLE_ALPHABET))
    assert ex.task == task and ex.length == length and ex.alphabet == PRINTABLE_ALPHABET
    assert ex.template in TASKS[task].templates(split, PRINTABLE_ALPHABET)
    PRINTABLE_ALPHABET.encode(ex.prompt)
    program = expert_program(ex)
    assert program.alphabet == PRINTABLE_ALPHABET
    result = run(program, ex.prompt, 10_000_000, out_size=default_out_size(ex))
    assert result.output == ex.answer, ex.prompt


def test_the_exact_machine_in_the_printable_alphabet_passes_what_people_type():
    """check_learned draws in the machine's alphabet: the expert programs on the tensor
    machine of the printable alphabet pass on prompts with capitals and punctuation."""
    exact = ExpertMachine(alphabet=PRINTABLE_ALPHABET)
    for task in ("add", "copy", "reverse"):
        report = check_learned(exact, task, max_length=4, examples=40, seed=1)
        assert report.ok and report.n >= 30, report.describe()
    drawn = draw_examples("copy", 8, 40, seed=0, alphabet=PRINTABLE_ALPHABET)
    assert any(c.isupper() for e in drawn for c in e.operands[0])
    assert any(c.isupper() for e in draw_examples("add", 2, 40, seed=0, split="recombined",
                                                  alphabet=PRINTABLE_ALPHABET)
               for c in e.prompt)


@pytest.mark.parametrize("wanted", [
    ("999", "1"),                 # a carry through every digit
    ("100", "1"),                 # a borrow through every digit
    ("000", "000"),               # zeros and leading zeros
])
def test_number_pairs_reach_the_edge_cases(wanted):
    found = find(number_pair(3), lambda p: set(p) == set(wanted),
                 settings=settings(max_examples=2000, database=None))
    assert set(found) == set(wanted)


def test_list_and_text_strategies_reach_their_edge_cases():
    cfg = settings(max_examples=2000, database=None)
    assert find(task_operands("sort", 5), lambda xs: list(xs) == sorted(xs, reverse=True)
                and len(set(xs)) > 1, settings=cfg)
    assert find(task_operands("sort", 5), lambda xs: len(set(xs)) == 2, settings=cfg)
    pal = find(task_operands("reverse", 5), lambda t: t[0] == t[0][::-1] and len(set(t[0])) > 1,
               settings=cfg)
    assert pal[0] == pal[0][::-1]
    assert find(task_operands("sub", 3), lambda ab: ab[0] == ab[1], settings=cfg)


def test_sub_operands_keep_the_contract():
    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(task_operands("sub", 1, 8))
    def prop(ab):
        assert int(ab[0]) >= int(ab[1])
    prop()


def test_task_strategies_refuse_bad_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        task_operands("nope")
    with pytest.raises(ValueError, match="length"):
        task_operands("fib", 1, 5)  # fib supports lengths up to 2
    with pytest.raises(ValueError, match="max_length"):
        task_operands("add", 3, 2)


def test_first_divergence_names_the_first_differing_step_and_field():
    program = load_program("add")
    ex = TASKS["add"].make(("12", "35"))
    trace = run(program, ex.prompt, trace=True, out_size=default_out_size(ex)).trace
    assert first_divergence(trace, trace) is None
    bad = list(trace)
    bad[5] = bad[5].__class__(**{**bad[5].__dict__, "next_pc": bad[5].next_pc + 1})
    d = first_divergence(trace, tuple(bad))
    assert (d.step, d.field) == (5, "next_pc")
    d = first_divergence(trace, trace[:7])
    assert (d.step, d.field, d.got) == (7, "length", None)


def test_learned_check_decorator_fails_with_the_counterexample():
    broken = ExpertMachine(corrupt_oeu("ADD", 9, 1, carry=0))

    @learned_check("add", max_length=1, examples=200, seed=0)
    def user_test(machine):
        pass

    user_test(ExpertMachine())  # passes
    with pytest.raises(AssertionError, match=r"counterexample[^\n]*9[^\n]*1"):
        user_test(broken)


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{tmp}", "--task", "nope"], "--task must be one of add"),
    (["--checkpoint", "{tmp}", "--task", "add", "--max-digits", "0"], "--max-digits"),
    (["--checkpoint", "{tmp}", "--task", "fib", "--max-digits", "9"], "in 1..2"),
    (["--checkpoint", "{tmp}/missing", "--task", "add"], "no such checkpoint directory"),
    (["--task", "add"], "--checkpoint is required"),
    (["--report", "--task", "add"], "--task does not go with --report"),
    (["--checkpoint", "{tmp}", "--task", "add", "--examples", "0"], "--examples"),
    (["--checkpoint", "{tmp}", "--task", "add", "--split", "dev"], "--split must be one of"),
    (["--checkpoint", "{tmp}", "--task", "add"], "error:"),  # an empty directory
])
def test_check_cli_bad_input_exits_2_naming_the_flag(tmp_path, capsys, args, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as e:
        code = check.main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_report_lengths_cover_one_to_ten_times_the_trained_length():
    lengths = report_lengths("add", 4)
    assert lengths[:4] == [1, 2, 3, 4] and 40 in lengths and 1000 in lengths
    assert report_lengths("mul", 3)[-1] == 30  # quadratic: no 1000-digit products
    assert trained_tasks(5) == {"add": 4, "sub": 4, "cmp": 4}


def test_the_baselines_budget_counts_only_the_stages_a_checkpoint_trained(tmp_path):
    """A run that skipped stages (``--stages 24-25`` from a stage-18 machine) has no time
    for the skipped ones: the baselines' budget is the trained stages' time, and asks for
    no other."""
    import json

    from llamacpu.evaluate.baselines import stage_seconds

    lines = [{"stage": s, "step": k, "time": t, "run": "r"}
             for s, k, t in ((0, 1, 10.0), (0, 2, 12.0), (1, 1, 5.0), (24, 1, 7.5))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    ck = tmp_path / "stage_24"
    assert stage_seconds(ck, [0, 1, 24]) == [(0, 12.0), (1, 5.0), (24, 7.5)]
    with pytest.raises(ValueError, match=r"no timing for stages \[2\]"):
        stage_seconds(ck, [0, 1, 2, 24])


def test_a_resumed_stage_took_the_time_of_each_run_that_counted(tmp_path):
    """A run killed past its last checkpoint repeats those steps when resumed: its records
    past the checkpoint are superseded (``read_curve``), and the stage's time is the sum of
    each run's last kept time (each counts from its own start)."""
    import json

    from llamacpu.learn.logs import stage_seconds

    records = [{"stage": 3, "step": 25, "time": 10.0, "run": "a"},
               {"stage": 3, "step": 50, "time": 20.0, "run": "a"},   # killed after this
               {"stage": 3, "step": 50, "time": 8.0, "run": "b", "resumed_from": 25},
               {"stage": 4, "step": 25, "time": 3.0, "run": "b", "resumed_from": 0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                            + '{"stage": 4, "st')
    assert stage_seconds(tmp_path) == {3: 18.0, 4: 3.0}
