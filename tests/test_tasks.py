"""Task generators and the curriculum: every wording runs, answers are Python's, eval is held out.

The answers here are computed by this file's own ORACLE from the operands, not by
``Task.solve`` (which they check) and not only by ``tasks.reference``; the interpreter runs
every template of every task at the output-region size ``default_out_size`` gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core import golden
from llamacpu.core.interp import MachineFault, run
from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, InputError, Op
from llamacpu.learn.curriculum import (
    HOLDOUT_BUCKETS,
    STAGES,
    Decision,
    Stage,
    check_stages,
    competence_set,
    decide,
    eval_set,
    is_heldout,
    last_stages,
    parse_stage,
    parse_stages,
    review_weights,
    sample_batch,
    stages_table,
    trained_stages,
    trained_tasks,
)
from llamacpu.learn.supervise import FILLER_PLACES
from llamacpu.learn.tasks import (
    TASKS,
    Example,
    ExpertRun,
    Operands,
    TaskError,
    default_out_size,
    expert,
    expert_program,
    reference,
    with_template,
)


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _rel(a: int, b: int) -> str:
    return "<" if a < b else ">" if a > b else "="


def _chain(ops: tuple[str, ...]) -> str:
    """A chain's left-to-right fold, by hand: n0, then per step op(result, n)."""
    acc = int(ops[0])
    for op, n in zip(ops[1::2], map(int, ops[2::2])):
        acc = {"add": acc + n, "sub": acc - n, "mul": acc * n, "rsub": n - acc}[op]
    return str(acc)


ORACLE = {
    "add": lambda ops: str(int(ops[0]) + int(ops[1])),
    "sub": lambda ops: str(int(ops[0]) - int(ops[1])),
    "mul": lambda ops: str(int(ops[0]) * int(ops[1])),
    "cmp": lambda ops: _rel(int(ops[0]), int(ops[1])),
    "gcd": lambda ops: str(math.gcd(int(ops[0]), int(ops[1]))),
    "fib": lambda ops: str(_fib(int(ops[0]))),
    "copy": lambda ops: ops[0],
    "reverse": lambda ops: ops[0][::-1],
    "sort": lambda ops: "".join(sorted(ops)),
    "max": lambda ops: max(ops),
    "fmap": lambda ops: "".join(dict(p.split(">") for p in ops[0].split())[d] for d in ops[1]),
    "fmap_data": lambda ops: "".join(dict(p.split(">") for p in ops[0].split())[d]
                                     for d in ops[1]),
    "reverse_string": lambda ops: "".join(reversed(ops[0])),
    "duplicate_string": lambda ops: ops[0] * 2,
    "odds_first": lambda ops: "".join(c for i, c in enumerate(ops[0]) if i % 2)
                              + "".join(c for i, c in enumerate(ops[0]) if i % 2 == 0),
    "bucket_sort": lambda ops: "".join(d * ops[0].count(d) for d in "0123456789"),
    # little-endian "N+M" / "N*M" (no '*': the benchmark's fixed len − 1 zeros); big-endian X
    "binary_addition": lambda ops: bin(sum(int(x[::-1] or "0", 2)
                                           for x in ops[0].split("+")))[2:][::-1],
    "binary_multiplication": lambda ops: bin(math.prod(int(x[::-1], 2)
                                                       for x in ops[0].split("*")))[2:][::-1]
                                         if "*" in ops[0] else "0" * (len(ops[0]) - 1),
    "compute_sqrt": lambda ops: bin(math.isqrt(int(ops[0], 2)))[2:].zfill(-(-len(ops[0]) // 2)),
    # the composed tasks: Python's own arithmetic on the expression, a fold of the chain
    "expr": lambda ops: str(eval(ops[0])),
    "chain": _chain,
    # requests the machine has no program for: it declines, writing nothing
    "foreign_numbers": lambda ops: "",
    "foreign_list": lambda ops: "",
    "foreign_text": lambda ops: "",
}
REQUIRED = {"add", "sub", "cmp", "mul", "copy", "reverse", "sort", "max"}


def _lengths(name: str, top: int = 4) -> range:
    cap = TASKS[name].max_length
    return range(1, min(top, cap or top) + 1)


def _measure(ex: Example) -> int:
    """The example's length, recomputed from the prompt alone."""
    kind = TASKS[ex.task].operands
    if kind in (Operands.NUMBERS, Operands.EXPRESSION, Operands.CHAIN):
        return max(len(x) for x in re.findall(r"\d+", ex.prompt))
    if kind is Operands.DIGITS:
        return len(re.findall(r"\d", ex.prompt))
    if kind is Operands.FUNCTION:
        return len(re.findall(r"\d", ex.prompt.split(";", 1)[1]))
    return len(ex.prompt.split(":", 1)[1].lstrip(" "))


def _check(ex: Example) -> None:
    """Everything an example promises, checked against the interpreter and the oracle."""
    assert ex.answer == ORACLE[ex.task](ex.operands)
    kind = TASKS[ex.task].operands
    # fmap's program holds the function (tasks.expert_program writes it in); its contract
    # is apply.lasm's, which reads the definitions from the text. expr's is the expression
    # in the text; a chain's operations are words of its wording, not read from the text.
    if kind is Operands.EXPRESSION:
        assert ex.answer == TASKS[ex.task].reference(ex.prompt)
    elif kind is not Operands.CHAIN:
        assert ex.answer == reference("apply" if kind is Operands.FUNCTION else ex.program,
                                      ex.prompt)
    ex.alphabet.encode(ex.prompt)  # raises InputError outside the example's alphabet
    assert _measure(ex) == ex.length
    kind = TASKS[ex.task].operands
    if kind is Operands.NUMBERS:  # the operands are the prompt's numbers, in order
        assert tuple(re.findall(r"\d+", ex.prompt)) == ex.operands
    elif kind is Operands.DIGITS:
        assert tuple(re.findall(r"\d", ex.prompt)) == ex.operands
    elif kind is Operands.EXPRESSION:
        assert ex.operands[0] in ex.prompt
        assert re.findall(r"\d+", ex.prompt) == re.findall(r"\d+", ex.operands[0])
    elif kind is Operands.CHAIN:
        assert tuple(re.findall(r"\d+", ex.prompt)) == ex.operands[0::2]
    elif kind is Operands.FUNCTION:
        defs, _, payload = ex.prompt.partition(";")
        assert re.findall(r"\d>\d", defs) == ex.operands[0].split()
        assert "".join(re.findall(r"\d", payload)) == ex.operands[1]
    else:
        assert ex.prompt.split(":", 1)[1].lstrip(" ") == ex.operands[0]
    program = expert_program(ex)
    assert program.alphabet == ex.alphabet
    result = run(program, ex.prompt, 100_000, out_size=default_out_size(ex))
    assert result.output == ex.answer, ex


# ---------------------------------------------------------------------------- tasks


def test_tasks_cover_the_required_set() -> None:
    assert REQUIRED <= set(TASKS)
    for name, task in TASKS.items():
        assert task.name == name
        # expr and chain name their program's directory: the library's, programs/lib
        assert ((task.directory or golden.PROGRAMS_DIR) / f"{task.program}.lasm").is_file()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_template_runs_and_matches_python(name: str) -> None:
    task = TASKS[name]
    rng = random.Random(f"templates/{name}")
    for template in task.templates("train") + task.templates("heldout"):
        for length in _lengths(name):
            for _ in range(2):
                ex = task.make(task.draw(rng, length, 0.5), template)
                assert ex.length == length and ex.template == template
                _check(ex)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sample_gives_exact_lengths_and_is_seeded(name: str) -> None:
    task = TASKS[name]
    for length in _lengths(name, top=7):
        a = [task.sample(random.Random(length), length) for _ in range(1)]
        rng = random.Random(f"len/{name}/{length}")
        exs = [task.sample(rng, length) for _ in range(25)]
        for ex in exs:
            assert ex.length == length == _measure(ex)
            assert ex.answer == ORACLE[name](ex.operands)
            assert ex.template in task.train_templates
            assert not any(ch.isdigit() for ch in re.sub(r"\{[^}]*\}", "", ex.template))
        assert a == [task.sample(random.Random(length), length)]  # same seed, same example


def test_heldout_split_uses_only_heldout_wordings() -> None:
    rng = random.Random(0)
    for task in TASKS.values():
        assert not set(task.templates("train")) & set(task.templates("heldout"))
        for _ in range(10):
            assert task.sample(rng, 1, "heldout").template in task.heldout_templates
        with pytest.raises(ValueError, match="split"):
            task.templates("test")


def test_length_outside_the_supported_range_is_an_error() -> None:
    with pytest.raises(TaskError, match="length"):
        TASKS["add"].sample(random.Random(0), 0)
    with pytest.raises(TaskError, match="1..2"):
        TASKS["fib"].sample(random.Random(0), 3)


def _sample_many(name: str, length: int, n: int, edge_rate: float | None = None) -> list[Example]:
    task = TASKS[name]
    if edge_rate is not None:
        task = dataclasses.replace(task, edge_rate=edge_rate)
    rng = random.Random(f"edges/{name}/{length}/{edge_rate}")
    return [task.sample(rng, length) for _ in range(n)]


def test_edge_cases_appear_and_vanish_with_edge_rate_zero() -> None:
    adds = _sample_many("add", 4, 400)
    assert any({"9999"} & set(e.operands) and e.answer.startswith("1000") for e in adds)
    assert any(e.operands[0] == e.operands[1] for e in adds)
    assert any(x.startswith("0") and len(x) > 1 for e in adds for x in e.operands)
    uniform = _sample_many("add", 4, 400, edge_rate=0.0)
    assert not any(x.startswith("0") and len(x) > 1 for e in uniform for x in e.operands)

    subs = _sample_many("sub", 4, 400)
    assert all(int(e.operands[0]) >= int(e.operands[1]) for e in subs)  # sub's contract
    assert any(e.operands[0] == "1000" and e.answer.startswith("99") for e in subs)
    assert any(e.answer == "0" for e in subs)

    cmps = _sample_many("cmp", 3, 600)
    for rel in "<=>":  # balanced classes: "=" is not left to chance
        assert 0.2 < sum(e.answer == rel for e in cmps) / len(cmps) < 0.5
    assert any(e.answer == "=" and e.operands[0] != e.operands[1] for e in cmps)  # 007?7

    muls = _sample_many("mul", 3, 300)
    assert any(e.answer == "0" for e in muls) and any("999" in e.operands for e in muls)
    sorts = _sample_many("sort", 6, 300)
    assert any(list(e.operands) == sorted(e.operands, reverse=True) and len(set(e.operands)) > 2
               for e in sorts)
    revs = _sample_many("reverse", 7, 300)
    assert any(e.answer == e.operands[0] and len(set(e.operands[0])) > 1 for e in revs)


def test_sub_templates_must_name_the_minuend_first() -> None:
    # Why "subtract {b} from {a}" is not a template: the program takes the first number
    # of the text as A, so that wording computes b − a.
    sub = golden.load_program("sub")
    assert run(sub, "subtract 3 from 8", 10_000).output == "-5"
    with pytest.raises(ValueError, match="order"):
        dataclasses.replace(TASKS["sub"], train_templates=("subtract {b} from {a}",))


@pytest.mark.parametrize("name, template, match", [
    ("add", "add {a} and {b} twice ", None),            # valid: checked not to raise
    ("add", "add {a} and {b} in base 10", "digits"),
    ("add", "Add {a} and {b}", "not in the alphabet"),
    ("add", "{a}{b}", "non-digit between"),
    ("add", "add {a}", "placeholders"),
    ("sort", "sort {items} and {digits}", "exactly one"),
    ("copy", "copy {text}", "':'"),
    ("copy", "copy: {text} now", "':'"),
    ("reverse", "a: b: {text}", "':'"),
])
def test_template_checks(name: str, template: str, match: str | None) -> None:
    if match is None:
        dataclasses.replace(TASKS[name], heldout_templates=(template,))
        return
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TASKS[name], heldout_templates=(template,))


def test_repeated_template_across_splits_is_rejected() -> None:
    add = TASKS["add"]
    with pytest.raises(ValueError, match="repeated"):
        dataclasses.replace(add, heldout_templates=add.train_templates[:1])
    with pytest.raises(InputError):
        DEFAULT_ALPHABET.encode("What")  # the error the alphabet check relies on


# ---------------------------------------------------------------------------- expert


@pytest.mark.parametrize("name", sorted(TASKS))
def test_default_out_size_is_enough_and_frugal(name: str) -> None:
    """Runs at exactly default_out_size; two slots fewer is too few (at most one spare)."""
    task = TASKS[name]
    rng = random.Random(f"out/{name}")
    for length in _lengths(name):
        ex = task.sample(rng, length)
        program = expert_program(ex)
        size = default_out_size(ex)
        assert run(program, ex.prompt, 100_000, out_size=size).output == ex.answer
        if size > 2:
            try:
                short = run(program, ex.prompt, 100_000, out_size=size - 2).output
            except MachineFault:
                continue
            assert short != ex.answer, (ex, size)


def test_expert_returns_the_trace_and_rejects_a_wrong_answer() -> None:
    ex = TASKS["add"].make(("999", "1"), "what is {a} plus {b}?")
    assert ex.prompt == "what is 999 plus 1?" and ex.answer == "1000"
    er = expert(ex)
    assert isinstance(er, ExpertRun) and er.example == ex
    assert er.out_size == default_out_size(ex) == len("9991") + 1
    assert er.result.output == "1000" and er.result.trace is not None
    assert len(er.result.trace) == er.result.steps and er.result.trace[-1].op == Op.HALT
    assert er.program == golden.load_program("add")
    with pytest.raises(TaskError, match="1001"):
        expert(dataclasses.replace(ex, answer="1001"))
    with pytest.raises(MachineFault):
        expert(ex, out_size=1)


@pytest.mark.parametrize("name, operands", [
    ("add", ("12",)), ("add", ("1", "x")), ("sort", ("12", "3")), ("max", ()),
    ("copy", (" lead",)), ("copy", ("",)),
])
def test_make_rejects_malformed_operands(name: str, operands: tuple[str, ...]) -> None:
    with pytest.raises(TaskError, match="operands must be"):
        TASKS[name].make(operands)


def test_with_template_keeps_the_operands() -> None:
    ex = TASKS["cmp"].make(("007", "7"), "{a}?{b}")
    other = with_template(ex, "compare {a} with {b}")
    assert other.prompt == "compare 007 with 7"
    assert (other.answer, other.operands, other.length) == ("=", ex.operands, 3)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(TASKS)), length=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1), split=st.sampled_from(["train", "heldout"]))
def test_property_sampled_examples_are_right(name: str, length: int, seed: int,
                                              split: str) -> None:
    length = min(length, TASKS[name].max_length or length)
    ex = TASKS[name].sample(random.Random(seed), length, split)
    assert ex.length == length and ex.task == name and ex.program == TASKS[name].program
    _check(ex)


# ---------------------------------------------------------------------------- alphabets
#
# A run draws in its alphabet (``train --alphabet``). The default alphabet's draws are pinned
# by a fixed hash, so no other alphabet can change what a default run trains and is judged
# on; the printable alphabet's draws hold capitals and any printable character, and their
# expert programs (assembled in it) still answer as Python.

DEFAULT_DRAWS_SHA256 = "6230fa0219c2b19335c38d9680515b47ec9f6a6763e76fb37974449d0da3efed"
"""sha256 of :func:`_default_draws`: a default run's batches (with filler words), evaluation
and competence sets, evaluation draws and hypothesis examples. A legitimate change of a
task's draws or wordings changes it; recompute it then (print ``_default_draws()``'s hash)."""


def _default_draws() -> str:
    """What a default-alphabet run draws, made with calls that name no alphabet."""
    from llamacpu.evaluate.properties import draw_examples as hypothesis_examples
    from llamacpu.learn.evaluation import draw_examples
    from llamacpu.learn.supervise import _with_filler

    def row(e: Example) -> list:
        return [e.task, e.prompt, e.answer, e.template, list(e.operands), e.length]

    out: dict[str, list] = {}
    for i in (0, 6, 7, 21, 22):
        for split in ("train", "grammar_train"):
            rng = random.Random(i)
            batch = sample_batch(STAGES[i], rng, 16, split=split)
            out[f"batch/{i}/{split}"] = [row(_with_filler(e, rng)) for e in batch]
    for split in ("recombined", "new_words"):
        out[f"eval/6/{split}"] = [row(e) for e in eval_set(STAGES[6], seed=1, size=10,
                                                           split=split)]
    out["competence/0"] = [row(e) for e in competence_set(STAGES[0], seed=1)]
    for task in ("copy", "reverse", "foreign_text"):
        out[f"draw/{task}"] = [row(e) for e in draw_examples(task, 7, 10, seed=3)]
        out[f"hypothesis/{task}"] = [row(e) for e in hypothesis_examples(task, 6, 5, seed=0)]
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()


def test_the_default_alphabets_draws_are_pinned() -> None:
    assert _default_draws() == DEFAULT_DRAWS_SHA256
    explicit = sample_batch(STAGES[7], random.Random(5), 32, split="grammar_train",
                            alphabet=DEFAULT_ALPHABET)
    assert explicit == sample_batch(STAGES[7], random.Random(5), 32, split="grammar_train")
    for e in explicit:  # the expert programs are the files as the default alphabet reads them
        assert e.alphabet == DEFAULT_ALPHABET
        assert expert_program(e) == golden.load_program(e.program, TASKS[e.task].directory)


def test_printable_draws_hold_capitals_and_any_printable_character_but_the_colon() -> None:
    P = PRINTABLE_ALPHABET
    rng = random.Random(0)
    for name in ("copy", "reverse", "foreign_text"):
        task = TASKS[name]
        payloads = [task.sample(rng, 12, alphabet=P).operands[0] for _ in range(300)]
        chars = set("".join(payloads))
        assert chars & set(string.ascii_uppercase), name  # capitals, in words and anywhere
        assert chars & set("#$&@[]^`{|}~"), name  # punctuation the default lacks
        assert ":" not in chars and not any(p.startswith(" ") for p in payloads)
        with pytest.raises(InputError):  # such a prompt is beyond the default alphabet
            DEFAULT_ALPHABET.encode("".join(payloads))
    batch = sample_batch(STAGES[7], random.Random(1), 64, split="grammar_train", alphabet=P)
    assert all(e.alphabet == P for e in batch)
    assert any(e.template[:1].isupper() for e in batch)  # the grammar's capitalised wordings
    assert {e.prompt for e in batch} != {e.prompt for e in sample_batch(
        STAGES[7], random.Random(1), 64, split="grammar_train")}
    held = eval_set(STAGES[6], seed=0, size=50, split="recombined", alphabet=P)
    assert all(e.template in TASKS["copy"].templates("recombined", P) for e in held)
    bits = TASKS["reverse_string"].sample(rng, 8, alphabet=P)  # its own draw: bits only
    assert set(bits.operands[0]) <= {"0", "1"} and bits.alphabet == P


@settings(max_examples=80, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(TASKS)), length=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1),
       split=st.sampled_from(["train", "heldout", "grammar_train", "recombined",
                              "new_words"]),
       filler=st.booleans(), where=st.sampled_from(FILLER_PLACES), letters=st.booleans())
def test_property_printable_examples_run_their_experts_and_answer_as_python(
        name: str, length: int, seed: int, split: str, filler: bool, where: str,
        letters: bool) -> None:
    """Examples drawn in the printable alphabet — capitalised wordings, payloads of any
    printable character, filler words of its characters (or letters) in front or anywhere
    in the wording — are right, and their expert programs, assembled in it, answer them as
    Python does."""
    from llamacpu.learn.supervise import _with_filler

    length = min(length, TASKS[name].max_length or length)
    rng = random.Random(seed)
    ex = TASKS[name].sample(rng, length, split, alphabet=PRINTABLE_ALPHABET)
    assert ex.alphabet == PRINTABLE_ALPHABET
    _check(ex)
    if filler:
        worded = _with_filler(ex, rng, where, letters)
        out = run(expert_program(worded), worded.prompt, 100_000,
                  out_size=default_out_size(worded))
        assert out.output == ex.answer, worded.prompt


# ---------------------------------------------------------------------------- curriculum


def test_stage_table_is_well_formed() -> None:
    check_stages(STAGES)
    assert [s.index for s in STAGES] == list(range(len(STAGES)))
    assert len({s.name for s in STAGES}) == len(STAGES)
    first = STAGES[0]
    assert (first.task, first.min_length, first.max_length, first.review) == ("add", 1, 1, 0.0)
    assert [(s.task, s.max_length) for s in STAGES[1:4]] == [("add", 2), ("add", 3), ("add", 4)]
    assert {s.task for s in STAGES} >= REQUIRED
    for s in STAGES:
        if s.reviews_all:  # the closing review: tests/test_review_stage.py
            continue
        t = TASKS[s.task]  # the expert program (a composed task's: the library) assembles
        golden.load_program(t.program, t.directory)
    table = stages_table()
    assert table.count("\n") == len(STAGES) + 2 and "| 0 | add1 | add | 1 digits |" in table


def test_docs_carry_the_generated_stage_table() -> None:
    from pathlib import Path

    training = Path(__file__).resolve().parents[1] / "docs" / "training.md"
    assert stages_table() in training.read_text()


def test_stage_step_budgets_leave_slack_over_the_expert() -> None:
    """max_steps ≥ 1.25 × the expert's steps at the stage's longest length, all wordings."""
    for stage in STAGES:
        if stage.reviews_all:  # any task's budget: tests/test_review_stage.py
            continue
        task = TASKS[stage.task]
        rng = random.Random(f"budget/{stage.name}")
        for template in task.train_templates + task.heldout_templates:
            for _ in range(3):
                ex = task.make(task.draw(rng, stage.max_length, 0.5), template)
                r = run(expert_program(ex), ex.prompt, stage.max_steps, out_size=default_out_size(ex))
                assert 1.25 * r.steps <= stage.max_steps, (stage.name, ex.prompt, r.steps)


@pytest.mark.parametrize("change, match", [
    (dict(task="div"), "unknown task"),
    (dict(min_length=3, max_length=2), "min_length"),
    (dict(review=1.0), "review"),
    (dict(competence=0.0), "competence"),
    (dict(max_steps=0), "max_steps"),
    (dict(task="fib", max_length=3), "up to 2"),
])
def test_stage_checks(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(STAGES[1], **change)


def test_check_stages_rejects_bad_tables() -> None:
    with pytest.raises(ValueError, match="index"):
        check_stages(STAGES[1:])
    with pytest.raises(ValueError, match="repeat"):
        check_stages((STAGES[0], dataclasses.replace(STAGES[1], name="add1")))
    with pytest.raises(ValueError, match="review"):
        check_stages((dataclasses.replace(STAGES[0], review=0.5),))


def test_sample_batch_mixes_review_and_never_trains_on_heldout() -> None:
    rng = random.Random(1)
    sub = STAGES[4]
    assert sub.task == "sub" and {s.task for s in STAGES[:4]} == {"add"}
    for _ in range(20):
        batch = sample_batch(sub, rng, 40)
        assert len(batch) == 40
        assert sum(e.task == "add" for e in batch) == round(sub.review * 40)
        assert not any(is_heldout(e.prompt) for e in batch)
        for e in batch:
            if e.task == "sub":
                assert sub.min_length <= e.length <= sub.max_length
    first = sample_batch(STAGES[0], rng, 16)
    assert all(e.task == "add" and e.length == 1 for e in first)  # stage 0: nothing to review
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch(sub, rng, 0)


def test_a_run_that_skipped_stages_reviews_and_certifies_only_what_it_learned() -> None:
    """A stage started from an earlier stage's checkpoint (``--stages 24`` after stage 18)
    reviews, retains and certifies the stages that checkpoint's machine trained on, as its
    record says; a checkpoint without the record trained every stage up to its own."""
    from types import SimpleNamespace

    expr = STAGES[parse_stage("expr4")]
    learned = set(range(19))  # stages 0-18, not the decline and fmap stages 19-23
    rng = random.Random(2)
    tasks = {e.task for _ in range(10) for e in sample_batch(expr, rng, 40, trained=learned)}
    assert "expr" in tasks and tasks <= {s.task for s in STAGES[:19]} | {"expr"}
    assert {s.index for s in last_stages(expr, trained=learned)} <= learned
    assert "fmap" not in trained_tasks(expr.index, trained=learned | {expr.index})
    assert "fmap" in trained_tasks(expr.index)  # without a record: every earlier stage
    old = SimpleNamespace(stage=5, passed=False, extra={"sampler": None})
    assert trained_stages(old) == [0, 1, 2, 3, 4, 5]
    new = SimpleNamespace(stage=24, passed=True, extra={"trained_stages": [*range(19), 24]})
    assert trained_stages(new) == [*range(19), 24]


def test_eval_set_is_deterministic_heldout_and_disjoint_from_training() -> None:
    stage = STAGES[1]
    a, b = eval_set(stage, seed=3), eval_set(stage, seed=3)
    assert a == b and len(a) == stage.eval_size
    assert eval_set(stage, seed=4) != a
    prompts = [e.prompt for e in a]
    assert len(set(prompts)) == len(prompts) and all(is_heldout(p) for p in prompts)
    assert all(e.task == stage.task and 1 <= e.length <= 2 for e in a)
    rng = random.Random(3)  # the same seed on the training side changes nothing
    trained = {e.prompt for _ in range(100) for e in sample_batch(stage, rng, 32)}
    assert len(trained) > 300 and not trained & set(prompts)
    # `seen` rejects prompts known from elsewhere
    fresh = eval_set(stage, seed=3, seen=set(prompts[:50]))
    assert not {e.prompt for e in fresh} & set(prompts[:50]) and len(fresh) == stage.eval_size


def test_eval_set_on_a_small_stage_and_on_heldout_wordings() -> None:
    tiny = eval_set(STAGES[0], seed=0)  # 100 pairs × 6 wordings: ~1/10 held out
    n_prompts = 100 * len(TASKS["add"].train_templates)
    assert 0.5 * n_prompts / HOLDOUT_BUCKETS < len(tiny) < 2 * n_prompts / HOLDOUT_BUCKETS
    assert len({e.prompt for e in tiny}) == len(tiny)
    worded = eval_set(STAGES[5], seed=0, size=30, split="heldout")
    assert len(worded) == 30 and len({e.prompt for e in worded}) == 30
    assert all(e.template in TASKS["cmp"].heldout_templates for e in worded)
    assert not all(is_heldout(e.prompt) for e in worded)  # unseen wordings: no partition
    n_worded = 100 * len(TASKS["add"].heldout_templates)
    assert len(eval_set(STAGES[0], seed=0, split="heldout")) > 0.75 * min(n_worded, 200)
    with pytest.raises(ValueError, match="split"):
        eval_set(STAGES[0], seed=0, split="dev")


def test_competence_set_tops_up_small_stages_with_unseen_wordings() -> None:
    """The trainer's check: the training wordings' held-out prompts; a stage with fewer than
    ``eval_size`` of them (stage 0: 67) is topped up with held-out wordings, no prompt twice,
    so the check sees almost every digit pair. Larger stages are left as they were."""
    stage = STAGES[0]
    checked = competence_set(stage, seed=1)
    assert checked == competence_set(stage, seed=1)  # deterministic
    trained_wordings = eval_set(stage, seed=1)
    n = len(trained_wordings)
    assert n < stage.eval_size and checked[:n] == trained_wordings
    assert len(checked) == stage.eval_size
    assert all(e.template in TASKS["add"].heldout_templates for e in checked[n:])
    assert len({e.prompt for e in checked}) == len(checked)
    pairs = {tuple(re.findall(r"\d", e.prompt)) for e in checked}
    assert len(pairs) >= 90 and len({tuple(re.findall(r"\d", e.prompt))
                                     for e in trained_wordings}) < 70
    assert STAGES[0].competence == 1.0  # a 100-entry table: exact, not 99%
    sub = STAGES[4]
    assert competence_set(sub, seed=1) == eval_set(sub, seed=1)


def test_decide_is_a_pure_rule() -> None:
    s = STAGES[2]
    assert decide(s, s.competence, 0, 100) is Decision.ADVANCE
    assert decide(s, 1.0, 100, 100) is Decision.ADVANCE  # competence wins over the budget
    assert decide(s, 0.5, 10, 100) is Decision.STAY
    assert decide(s, 0.98, 99, 100) is Decision.STAY
    assert decide(s, 0.98, 100, 100) is Decision.GIVE_UP
    lenient = dataclasses.replace(s, competence=0.9)
    assert decide(lenient, 0.95, 1, 100) is Decision.ADVANCE
    for bad in [(-0.1, 0, 10), (1.5, 0, 10), (0.5, -1, 10), (0.5, 0, 0)]:
        with pytest.raises(ValueError):
            decide(s, *bad)


def test_decide_looks_back_at_earlier_tasks() -> None:
    s = STAGES[5]
    forgot, kept = {"add": 0.96, "sub": 0.0}, {"add": 0.96, "sub": 0.92}
    assert decide(s, 1.0, 10, 100, forgot, 0.9) is Decision.CONSOLIDATE
    assert decide(s, 1.0, 10, 100, kept, 0.9) is Decision.ADVANCE
    assert decide(s, 1.0, 100, 100, forgot, 0.9) is Decision.ADVANCE  # budget spent
    assert decide(s, 1.0, 10, 100, forgot, 0.0) is Decision.ADVANCE   # floor 0: off
    assert decide(s, 1.0, 10, 100, None, 0.9) is Decision.ADVANCE     # nothing measured
    assert decide(s, 0.5, 10, 100, forgot, 0.9) is Decision.STAY      # own check first
    assert decide(s, 0.5, 100, 100, forgot, 0.9) is Decision.GIVE_UP
    with pytest.raises(ValueError, match="retained accuracy of sub"):
        decide(s, 1.0, 10, 100, {"sub": 1.5}, 0.9)
    with pytest.raises(ValueError, match="retention"):
        decide(s, 1.0, 10, 100, kept, -0.1)


def test_review_weights_steer_the_review_share() -> None:
    assert review_weights({"add": 1.0, "sub": 0.0}) == {"add": 1.0, "sub": 10.0}
    cmp4 = STAGES[5]  # earlier: add1..add4 and sub4
    rng = random.Random(0)
    only_sub = sample_batch(cmp4, rng, 40, review=0.5, weights={"add": 0.0, "sub": 1.0})
    assert sorted(e.task for e in only_sub) == ["cmp"] * 20 + ["sub"] * 20
    counts = {"add": 0, "sub": 0}
    for _ in range(50):
        for e in sample_batch(cmp4, rng, 20, review=0.5, weights={"add": 1.0, "sub": 8.0}):
            counts[e.task] = counts.get(e.task, 0) + 1
    # P(sub) = 8 / (4·1 + 8) = 2/3 of the 500 review examples (add has 4 stages, sub 1)
    assert 290 < counts["sub"] < 380 and counts["add"] + counts["sub"] == 500
    plain = [e.task for e in sample_batch(cmp4, random.Random(1), 200)]
    assert plain.count("cmp") == 150  # the stage's own 25% review, as before
    with pytest.raises(ValueError, match="review"):
        sample_batch(cmp4, rng, 8, review=1.0)
    with pytest.raises(ValueError, match="weights"):
        sample_batch(cmp4, rng, 8, weights={"add": 0.0, "sub": 0.0})


@pytest.mark.parametrize("text, want", [
    ("0-3", [0, 1, 2, 3]),
    ("3", [3]),
    (" 2 , 0 ", [0, 2]),
    ("add2", [1]),
    ("1-3,mul2", [1, 2, 3, 10]),
    ("add1-add3", [0, 1, 2]),
    ("2-2", [2]),
    ("all", list(range(len(STAGES)))),
])
def test_parse_stages(text: str, want: list[int]) -> None:
    assert parse_stages(text) == want


@pytest.mark.parametrize("text, match", [
    (str(len(STAGES)), f"out of range: stages are 0-{len(STAGES) - 1}"),
    ("0-99", "stage 99 is out of range"),
    ("3-1", "backwards: write 1-3"),
    ("", "no stages given"),
    ("1,,2", "empty item"),
    ("div", "unknown stage 'div'"),
    ("-1", "unknown stage"),
])
def test_parse_stages_errors_name_the_allowed_range(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)) as info:
        parse_stages(text)
    assert f"0-{len(STAGES) - 1}" in str(info.value) or "backwards" in str(info.value)


def test_parse_stage() -> None:
    assert parse_stage("0") == 0 and parse_stage("mul3") == 11
    assert parse_stage("fmap5") == 22 and parse_stage("fmap5_data") == 23
    with pytest.raises(ValueError, match="out of range"):
        parse_stage(str(len(STAGES)))
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stage("0-3")
    custom = (Stage(0, "c", "copy", 1, 3, 0.0, 100, "copy"),)
    assert parse_stages("all", custom) == [0]
    with pytest.raises(ValueError, match="stages are 0-0"):
        parse_stage("1", custom)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(t for t in TASKS if TASKS[t].grammar is not None
                                   and TASKS[t].operands.name not in ("EXPRESSION",
                                                                      "CHAIN"))),
       seed=st.integers(0, 2**32 - 1))
def test_filler_anywhere_adds_words_at_a_boundary_of_the_wording_only(name, seed) -> None:
    """Filler "anywhere" inserts whole words at one word boundary and changes nothing
    else: the prompt with those words taken out is the original, a text task's payload
    (after its first ':') is untouched, and letters-only words hold lower-case letters."""
    from llamacpu.learn.supervise import _with_filler

    rng = random.Random(seed)
    ex = TASKS[name].sample(rng, min(3, TASKS[name].max_length or 3), "grammar_train")
    worded = _with_filler(ex, rng, "anywhere", letters=True)
    old, new = ex.prompt, worded.prompt
    n = len(new) - len(old)
    pieces = [new[k:k + n] for k in range(len(old) + 1) if new[:k] + new[k + n:] == old]
    assert any((p.startswith(" ") or p.endswith(" ")) and 1 <= len(p.split()) <= 2
               and set(p.replace(" ", "")) <= set("abcdefghijklmnopqrstuvwxyz")
               for p in pieces), (old, new)
    if ":" in old and TASKS[name].operands.name in ("TEXT",):
        assert new.split(":", 1)[1] == old.split(":", 1)[1]
    with pytest.raises(ValueError, match="where must be one of front, anywhere"):
        _with_filler(ex, rng, "middle")
