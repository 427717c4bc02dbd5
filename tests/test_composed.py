"""The composed tasks: expr ("calculate (12 + 345) * 6 - 78") and chain ("add 12 and 345,
then multiply by 6, then subtract the result from 3000").

Their sizes are two: the digits of the longest number (the length) and the number of
operations (the draw's ``ops=``; expr also ``parens=``). What is checked, for drawn examples
of 1–8 operations and 1–30 digits in every split's wordings: the expert program (a main
program linked to programs/lib/lib.lasm) answers on the reference interpreter at the task's
``out_size``, and the answer is Python's own arithmetic on the expression, or on the
expression a chain spells; drawn expressions and chains keep the promises of their sizes and
of the library's contract; a main program's slots depend only on the operations, and the
library under it is the same Program for every example; held-out wordings never reach
training, and a chain wording renders k clauses for k steps.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core import compose
from llamacpu.core.compose import Num, parse_expr
from llamacpu.core.interp import MachineFault, run
from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET
from llamacpu.core.link import load_library, main_calls, main_slots
from llamacpu.learn.supervise import _with_filler
from llamacpu.learn.tasks import (
    TASKS,
    TaskError,
    chain_phrasings,
    default_out_size,
    expert,
    expert_program,
    expression_in,
)

EXPR, CHAIN = TASKS["expr"], TASKS["chain"]
SPLITS = ("train", "heldout", "grammar_train", "recombined", "new_words")
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def numbers(text: str) -> list[str]:
    return re.findall(r"[0-9]+", text)


def chain_expression(operands: tuple[str, ...]) -> str:
    """The expression a chain spells, fully parenthesised, left to right."""
    text = operands[0]
    for op, n in zip(operands[1::2], operands[2::2]):
        text = f"{n} - ({text})" if op == "rsub" else \
            f"({text}) {dict(add='+', sub='-', mul='*')[op]} {n}"
    return text


def products_have_a_small_factor(e, limit: int = 10**4) -> bool:
    if isinstance(e, Num):
        return True
    if e.op == "*" and min(compose.evaluate(e.left), compose.evaluate(e.right)) >= limit:
        return False
    return products_have_a_small_factor(e.left, limit) and \
        products_have_a_small_factor(e.right, limit)


@st.composite
def examples(draw, task: str, max_ops: int = 8, max_digits: int = 30):
    """(example, ops, parens) of ``task``: 1..max_ops operations, 1..max_digits digits, a
    wording of any split, written in the default or the printable alphabet."""
    spec = TASKS[task]
    ops = draw(st.integers(1, max_ops))
    digits = draw(st.integers(1, max_digits))
    parens = draw(st.booleans()) if task == "expr" else None
    split = draw(st.sampled_from(SPLITS))
    alphabet = draw(st.sampled_from((DEFAULT_ALPHABET, PRINTABLE_ALPHABET)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    ex = spec.sample(rng, digits, split, alphabet, ops=ops, parens=parens)
    assert ex.length == digits and ex.alphabet == alphabet
    return ex, ops, parens


# ------------------------------------------------------------------ answers


@PROPERTY
@given(examples("expr"))
def test_expr_experts_answer_python_in_every_split(drawn):
    ex, ops, parens = drawn
    assert ex.answer == str(eval(ex.operands[0]))  # Python's own arithmetic
    result = run(expert_program(ex), ex.prompt, 200_000, out_size=default_out_size(ex))
    assert result.halted and result.output == ex.answer, ex.prompt
    assert EXPR.reference(ex.prompt) == ex.answer  # the expression read back from the text
    # the trainer's filler words never hold + - * ( ): the expression reads back the same
    worded = _with_filler(ex, random.Random(len(ex.prompt)))
    assert EXPR.parse(worded.prompt) == ex.operands
    result = run(expert_program(worded), worded.prompt, 200_000,
                 out_size=default_out_size(worded))
    assert result.output == ex.answer


@PROPERTY
@given(examples("chain"))
def test_chain_experts_answer_the_left_to_right_fold_in_every_split(drawn):
    ex, ops, _ = drawn
    spelled = chain_expression(ex.operands)
    assert compose.is_valid(spelled)  # a valid expression of the same answer
    assert ex.answer == str(eval(spelled)) == str(compose.evaluate(spelled))
    result = run(expert_program(ex), ex.prompt, 200_000, out_size=default_out_size(ex))
    assert result.halted and result.output == ex.answer, ex.prompt


def test_the_evaluation_grid_runs_near_its_step_budget():
    """The cells the composed tasks are measured in (1, 2, 4, 8 operations × 4, 20, 100
    digits; expr with and without parentheses): every drawn example answers, well under
    10^5 steps, at its out_size, which never exceeds what compose.out_size gives."""
    rng = random.Random(0)
    for ops in (1, 2, 4, 8):
        for digits in (4, 20, 100):
            for task, parens in (("expr", False), ("expr", True), ("chain", None)):
                ex = TASKS[task].sample(rng, digits, ops=ops, parens=parens)
                run_ = expert(ex)  # raises unless the answer is Python's
                assert run_.result.steps < 100_000, (ex.prompt, run_.result.steps)
                calls = main_calls(run_.program)
                assert run_.out_size <= compose.out_size(calls, ex.prompt)


def test_out_size_is_what_the_library_needs():
    """The task's out_size is compose.scratch_size of the example's calls: the run fits in
    it, and not in one slot less."""
    rng = random.Random(1)
    for task in ("expr", "chain"):
        for ops in (1, 3, 8):
            ex = TASKS[task].sample(rng, 12, ops=ops)
            size = default_out_size(ex)
            calls = main_calls(expert_program(ex))
            assert size == compose.scratch_size(calls, ex.prompt)
            assert run(expert_program(ex), ex.prompt, out_size=size).output == ex.answer
            try:
                short = run(expert_program(ex), ex.prompt, out_size=size - 1).output
            except MachineFault:
                continue
            assert short != ex.answer


# ------------------------------------------------------------------ sizes


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(1, 8), st.integers(1, 30), st.booleans(), st.integers(0, 2**32 - 1))
def test_drawn_expressions_keep_the_promises_of_their_sizes(ops, digits, parens, seed):
    (text,) = EXPR.draw_operands(random.Random(seed), digits, ops=ops, parens=parens)
    tree = parse_expr(text)
    assert sum(t in "+-*" for t in compose.to_postfix(tree)) == ops
    widths = [len(n) for n in numbers(text)]
    assert max(widths) == digits  # at most the digits asked for, and one exactly
    assert all(n == "0" or not n.startswith("0") for n in numbers(text))
    assert min(compose.intermediates(tree)) >= 0
    if digits > 4:
        assert products_have_a_small_factor(tree)
    assert ("(" in text) == (parens and ops >= 2)
    calls = compose.postfix_calls(text)
    assert compose.stack_depth(calls) <= compose.STACK_ENTRIES


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(1, 8), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_drawn_chains_keep_the_promises_of_their_sizes(ops, digits, seed):
    operands = CHAIN.draw_operands(random.Random(seed), digits, ops=ops)
    assert len(operands) == 2 * ops + 1
    steps, values = operands[1::2], [int(n) for n in operands[0::2]]
    assert set(steps) <= {"add", "sub", "mul", "rsub"}
    assert max(len(n) for n in operands[0::2]) == digits
    assert all(n == "0" or not n.startswith("0") for n in operands[0::2])
    acc = values[0]
    for op, n in zip(steps, values[1:]):
        if op == "mul" and digits > 4:
            assert min(acc, n) < 10**4, (acc, n)
        acc = {"add": acc + n, "sub": acc - n, "mul": acc * n, "rsub": n - acc}[op]
        assert acc >= 0


def test_the_default_draw_has_one_or_two_operations_and_both_kinds_of_expression():
    rng = random.Random(2)
    exprs = [EXPR.sample(rng, 3).operands[0] for _ in range(200)]
    counts = {sum(c in "+-*" for c in t) for t in exprs}
    assert counts == {1, 2}
    assert any("(" in t for t in exprs) and any("(" not in t and t.count(" ") == 4
                                                for t in exprs)
    chains = [CHAIN.sample(rng, 3).operands for _ in range(200)]
    assert {len(c) // 2 for c in chains} == {1, 2}
    assert {op for c in chains for op in c[1::2]} == {"add", "sub", "mul", "rsub"}


def test_sizes_reach_only_the_draws_that_take_them():
    assert EXPR.draw_options == ("ops", "parens") and CHAIN.draw_options == ("ops",)
    assert TASKS["add"].draw_options == ()
    with pytest.raises(TaskError, match="takes no ops="):
        TASKS["add"].sample(random.Random(0), 3, ops=2)
    with pytest.raises(TaskError, match="takes no parens="):
        CHAIN.sample(random.Random(0), 3, ops=2, parens=True)
    # without the keywords every other task draws as it always did
    assert TASKS["add"].sample(random.Random(7), 4) == TASKS["add"].sample(random.Random(7), 4)
    with pytest.raises(ValueError, match="at least 1 operation"):
        EXPR.sample(random.Random(0), 3, ops=0)


# ------------------------------------------------------------------ programs


def renumbered(operands: tuple[str, ...], rng: random.Random) -> tuple[str, ...]:
    """The same chain steps over other numbers of up to 40 digits, every difference still
    non-negative."""
    acc = rng.randrange(10**40)
    out = [str(acc)]
    for op in operands[1::2]:
        n = {"sub": rng.randint(0, acc), "rsub": acc + rng.randrange(10**40)}.get(
            op, rng.randrange(10**40))
        acc = {"add": acc + n, "sub": acc - n, "mul": acc * n, "rsub": n - acc}[op]
        out += [op, str(n)]
    return tuple(out)


def test_main_slots_depend_only_on_the_operations_and_the_library_is_shared():
    rng = random.Random(3)
    for alphabet in (DEFAULT_ALPHABET, PRINTABLE_ALPHABET):
        lib = load_library(alphabet=alphabet)
        for task in ("expr", "chain"):
            spec = TASKS[task]
            for ops in (1, 2, 4, 8):
                for parens in ((False, True) if task == "expr" else (None,)):
                    ex = spec.sample(rng, rng.randint(1, 30), alphabet=alphabet, ops=ops,
                                     parens=parens)
                    program = expert_program(ex)
                    assert program.slots[:len(lib)] == lib.slots
                    assert program.linkage.main == len(lib) == program.entry
                    swaps = ex.operands[1::2].count("rsub") if task == "chain" else 0
                    assert len(main_slots(program)) == 2 * ops + 3 + swaps
                    # the same operations over other numbers of other lengths: the same main
                    if task == "expr":
                        other = (re.sub(r"[0-9]+", lambda _: str(rng.randrange(10**40)),
                                        ex.operands[0]),)
                    else:
                        other = renumbered(ex.operands, rng)
                    again = spec.make(other, ex.template, alphabet)
                    assert main_slots(expert_program(again)) == main_slots(program)


def test_parse_reads_the_expression_and_declines_a_chain():
    ex = EXPR.make(("(12 + 345) * 6 - 78",), "calculate {expr}")
    assert ex.prompt == "calculate (12 + 345) * 6 - 78" and ex.answer == "2064"
    assert EXPR.parse("so what is 2 * (3 + 4)?") == ("2 * (3 + 4)",)
    assert EXPR.reference("what is 2*(3+4) ?") == "14"
    with pytest.raises(ValueError, match="no arithmetic expression"):
        EXPR.parse("what is it")
    with pytest.raises(ValueError, match="unmatched"):
        EXPR.parse("what is 2 + 3) now")
    chain = CHAIN.make(("12", "add", "345", "mul", "6", "rsub", "3000"))
    assert chain.prompt == ("add 12 and 345, then multiply by 6, then subtract the result "
                            "from 3000") and chain.answer == "858"
    with pytest.raises(TaskError, match="not read from the text"):
        CHAIN.parse(chain.prompt)
    with pytest.raises(TaskError, match="operands must be"):
        CHAIN.make(("12", "div", "3"))
    with pytest.raises(TaskError, match="operands must be"):
        EXPR.make(("12 + x",))


# ------------------------------------------------------------------ wordings


@pytest.mark.parametrize("task", ["expr", "chain"])
def test_held_out_wordings_never_reach_training(task):
    spec = TASKS[task]
    trained = set(spec.templates("grammar_train")) | set(spec.train_templates)
    for split in ("heldout", "recombined", "new_words"):
        held = spec.templates(split)
        assert held and trained.isdisjoint(held), split
    for alphabet in (DEFAULT_ALPHABET, PRINTABLE_ALPHABET):
        rng = random.Random(4)
        for split in ("train", "grammar_train"):
            for _ in range(50):
                ex = spec.sample(rng, 3, split, alphabet, ops=3)
                assert ex.template in spec.templates(split, alphabet)
                assert ex.template not in spec.templates("recombined", alphabet)
                assert ex.template not in spec.templates("new_words", alphabet)


def test_chain_new_words_hold_phrasings_and_connectors_training_never_has():
    words = CHAIN.grammar_wordings()
    trained = [w for w in words if w.split == "train"]
    seen_conns = {p for w in trained for p in w.parts if p.startswith("conn:")}
    new_conns = {p for w in words for p in w.parts if p.startswith("conn:")} - seen_conns
    assert {"conn:; next, ", "conn:, after that "} <= new_conns
    trained_texts = " ".join(w.text for w in trained)
    for phrasing in ("increase that by {n}", "deduct that from {n}", "scale that by {n}"):
        assert phrasing not in trained_texts
        assert any(phrasing in t for t in CHAIN.templates("new_words"))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 8), st.sampled_from(SPLITS), st.integers(0, 2**32 - 1))
def test_a_chain_of_k_steps_renders_k_clauses_in_its_wording(k, split, seed):
    ex = CHAIN.sample(random.Random(seed), 5, split, ops=k)
    head, phrasings, tail = chain_phrasings(ex.template)
    conn = phrasings["conn"]
    assert ex.prompt.startswith(head) and ex.prompt.endswith(tail)
    body = ex.prompt[len(head):len(ex.prompt) - len(tail)]
    clauses = body.split(conn)  # the connector occurs only between clauses
    assert len(clauses) == k
    nums, steps = ex.operands[0::2], ex.operands[1::2]
    first = phrasings[f"first_{steps[0]}"].replace("{a}", nums[0]).replace("{b}", nums[1])
    assert clauses[0] == first
    for clause, op, n in zip(clauses[1:], steps[1:], nums[2:]):
        assert clause == phrasings[op].replace("{n}", n)


def test_a_capitalised_chain_wording_starts_with_a_capital_whichever_clause_is_first():
    capital = [t for t in CHAIN.templates("grammar_train", PRINTABLE_ALPHABET)
               if t[:1] == "{" and any(c.isupper() for c in t)]
    assert capital
    for template in capital[:5]:
        for first in ("add", "sub", "mul", "rsub"):
            ex = CHAIN.make(("50", first, "50", "add", "3"), template, PRINTABLE_ALPHABET)
            letters = [c for c in ex.prompt if c.isalpha()]
            assert letters[0].isupper() and not any(c.isupper() for c in letters[1:]), \
                ex.prompt


@pytest.mark.parametrize("template, match", [
    ("calculate {expr} + x", r"no \+ - \* \( \) of its own"),
    ("calculate ({expr})", r"no \+ - \* \( \) of its own"),
    ("calculate {expr} in base ten", None),
    ("calculate {a}", r"needs \{expr\} once"),
    ("calculate {expr} twice: {expr}", r"needs \{expr\} once"),
])
def test_expr_template_checks(template, match):
    import dataclasses

    if match is None:
        dataclasses.replace(EXPR, heldout_templates=(template,))  # valid: does not raise
        return
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(EXPR, heldout_templates=(template,))


def _chain_template(**change) -> str:
    parts = {"first_add": "add {a} and {b}", "first_sub": "take {a} minus {b}",
             "first_mul": "multiply {a} by {b}", "first_rsub": "subtract {a} from {b}",
             "add": "add {n}", "sub": "subtract {n}", "mul": "multiply by {n}",
             "rsub": "subtract the result from {n}", "conn": ", then ", **change}
    return "".join(f"{{{k}}}{v}" for k, v in parts.items() if v is not None) + "{end}"


@pytest.mark.parametrize("template, match", [
    (_chain_template(first_sub="subtract {b} from {a}"), "first_sub phrasing"),
    (_chain_template(conn=""), "conn phrasing"),
    (_chain_template(add="add {n} and {n}"), "add phrasing"),
    (_chain_template(mul=None), "once"),
    (_chain_template(first_add="add {a}{b}"), "non-digit"),
    (_chain_template() + "{end}", "once"),
    (_chain_template(conn=", then {n} "), "conn phrasing"),
])
def test_chain_template_checks(template, match):
    import dataclasses

    dataclasses.replace(CHAIN, heldout_templates=(_chain_template(),))  # the valid one
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CHAIN, heldout_templates=(template,))


class _Expert:
    """Answers the prompts of examples it was shown with their expert programs, on the
    interpreter: evaluate_lengths' plumbing without a learned machine."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def solve(self, prompts, max_steps=None, out_sizes=None):
        from llamacpu.learn.evaluation import reference_run
        from llamacpu.learn.solution import Solution

        out = []
        for p in prompts:
            r = reference_run(self.seen[p])
            out.append(Solution(r.output, r.steps, True, None, None))
        return out


def test_evaluation_draws_each_cell_of_operations_and_parentheses(monkeypatch):
    from llamacpu.learn import evaluation

    expert = _Expert()
    drawn = evaluation.draw_examples

    def remember(*args, **kwargs):
        examples = drawn(*args, **kwargs)
        expert.seen.update({e.prompt: e for e in examples})
        return examples

    monkeypatch.setattr(evaluation, "draw_examples", remember)
    for ops in (1, 4, 8):
        for parens in (True, False):
            row, = evaluation.evaluate_lengths(expert, "expr", [20], 6, seed=3, ops=ops,
                                               parens=parens)
            assert (row["ops"], row["parens"], row["exact_match"]) == (ops, parens, 1.0)
            examples = drawn("expr", 20, 6, 3, ops=ops, parens=parens)
            assert all(len(re.findall(r"[-+*]", expression_in(e.prompt))) == ops
                       for e in examples)
            if ops > 1:  # one operation has no order to change
                assert any("(" in e.prompt for e in examples) == parens
    row, = evaluation.evaluate_lengths(expert, "chain", [4], 6, seed=3, ops=8)
    assert (row["ops"], row["exact_match"], "parens" in row) == (8, 1.0, False)
    # the cells draw from seeds of their own; without sizes the draw is what it always was
    assert drawn("expr", 4, 6, 3, ops=2) != drawn("expr", 4, 6, 3, ops=2, parens=True)
    assert [e.prompt for e in drawn("add", 4, 5, 3)] == [
        e.prompt for e in drawn("add", 4, 5, 3, ops=None, parens=None)]


@pytest.mark.parametrize("args, message", [
    (["--task", "add", "--ops", "2"], "--ops: task add has no operation count"),
    (["--task", "chain", "--parens", "with"], "--parens: task chain has no parentheses"),
    (["--task", "expr", "--ops", "0"], "--ops must list numbers of at least 1"),
])
def test_eval_sizes_of_composed_tasks_are_checked_before_any_work(two_step_run, capsys,
                                                                  args, message):
    from llamacpu.eval import main as eval_main

    with pytest.raises(SystemExit) as e:
        eval_main(["--checkpoint", str(two_step_run / "stage_0"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
