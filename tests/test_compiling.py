"""The compile phase (llamacpu/learn/compiling.py): the expert's decisions rebuild every
composed example's main program, they are a function of the bounded view, and a prompt with
many operations shows no view that prompts with one or two do not (chains and expressions
without parentheses; nested parentheses are the exception, named here)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.link import main_calls
from llamacpu.learn.compiling import (
    CLOSE,
    FINISH,
    NUM,
    POP,
    PUSH,
    SKIP,
    CompileError,
    Kind,
    View,
    compile_main,
    compile_views,
    expert_actions,
    lex,
    policy_of,
)
from llamacpu.learn.tasks import TASKS, expert_program

SPLITS = ("grammar_train", "recombined", "new_words", "heldout")


def _policy(decisions):
    table = policy_of(decisions)
    return lambda view: table[view]


@st.composite
def composed(draw):
    task = draw(st.sampled_from(("expr", "chain")))
    sizes = {"ops": draw(st.integers(1, 8))}
    if task == "expr":
        sizes["parens"] = draw(st.booleans())
    rng = random.Random(draw(st.integers(0, 2**32)))
    return TASKS[task].sample(rng, draw(st.integers(1, 30)), split=draw(st.sampled_from(SPLITS)),
                              **sizes)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(composed())
def test_the_experts_decisions_compile_the_expert_main_program(ex):
    decisions = expert_actions(ex)
    assert compile_main(ex.prompt, _policy(decisions)) == main_calls(expert_program(ex))
    assert decisions[-1].action == FINISH


@settings(max_examples=120, deadline=None, derandomize=True)
@given(composed(), st.integers(0, 2**32))
def test_filler_words_anywhere_training_puts_them_leave_the_program_as_it_was(ex, seed):
    """The trainer's filler words go in front of a composed prompt, before its first operand
    or at its end: the expert's decisions on the worded prompt compile the same main
    program, which answers it (the words hold no digit and no expression symbol)."""
    from llamacpu.core.interp import run
    from llamacpu.learn.supervise import _with_filler
    from llamacpu.learn.tasks import default_out_size

    rng = random.Random(seed)
    worded = ex
    while worded.prompt == ex.prompt or rng.random() < 0.3:  # one place or more
        worded = _with_filler(worded, rng)
    calls = compile_main(worded.prompt, _policy(expert_actions(worded)))
    assert calls == main_calls(expert_program(ex)) == main_calls(expert_program(worded))
    out = run(expert_program(worded), worded.prompt, 200_000, out_size=default_out_size(ex))
    assert out.output == ex.answer, worded.prompt


def test_the_expert_is_a_function_of_the_view():
    """One view, one decision, over both tasks, every split and 1-8 operations."""
    decisions = []
    for task, ops, split in itertools.product(("expr", "chain"), (1, 2, 4, 8), SPLITS):
        rng = random.Random(f"{task}/{ops}/{split}")
        for _ in range(25):
            decisions += expert_actions(TASKS[task].sample(rng, rng.randint(1, 12), split=split,
                                                           ops=ops))
    policy_of(decisions)  # raises on a view with two decisions


def _views(task: str, operands: tuple[str, ...], template: str) -> set[View]:
    return {d.view for d in expert_actions(TASKS[task].make(operands, template))}


def _chain(ops) -> tuple[str, ...]:
    """Chain operands with these steps whose every result is non-negative (the views show
    numbers as '#', so which numbers does not matter)."""
    acc, out = 5, ["5"]
    for op in ops:
        n = acc + 1 if op == "rsub" else min(acc, 1) if op == "sub" else 1
        acc = {"add": acc + n, "sub": acc - n, "mul": acc * n, "rsub": n - acc}[op]
        out += [op, str(n)]
    return tuple(out)


@pytest.mark.parametrize("k", range(4))
def test_a_long_chain_shows_only_views_of_chains_of_one_or_two_steps(k):
    chain = TASKS["chain"]
    template = chain.templates("recombined")[k * 7]
    steps = ("add", "sub", "mul", "rsub")
    short: set[View] = set()
    for n in (1, 2):
        for ops in itertools.product(steps, repeat=n):
            short |= _views("chain", _chain(ops), template)
    rng = random.Random(k)
    for _ in range(20):
        ops = [rng.choice(steps) for _ in range(8)]
        assert _views("chain", _chain(ops), template) <= short


def _flat(ops: tuple[str, ...]) -> str:
    return "".join(f"{n} {o} " for n, o in zip(range(1, 9), ops)) + "9"


def _shapes(symbols: str) -> list[str]:
    """Every expression of one or two operations over ``symbols``, with and without
    parentheses."""
    out = [f"1 {a} 2" for a in symbols]
    for a, b in itertools.product(symbols, repeat=2):
        out += [f"1 {a} 2 {b} 3", f"(1 {a} 2) {b} 3", f"1 {a} (2 {b} 3)"]
    return out


def test_a_long_expression_shows_only_views_of_expressions_of_one_or_two_operations():
    expr = TASKS["expr"]
    for template in expr.train_templates + expr.templates("recombined")[:5]:
        short = set().union(*(_views("expr", (e,), template) for e in _shapes("+-*")))
        for ops in itertools.product("+-*", repeat=4):
            assert _views("expr", (_flat(ops * 2),), template) <= short
        # one level of parentheses in a long expression: the views of short ones too
        assert _views("expr", ("(1 + 2) * 3 - 4 * (5 - 6 + 7) + 8 * 9",), template) <= short
        # nested parentheses are a view no short expression has: '(' on top of '('
        nested = _views("expr", ("((1 + 2) * 3 - 4) * 5",), template) - short
        assert nested and all(v.top == "(" and v.token in "(#" for v in nested)


def test_lex_and_the_loops_refusals():
    assert [t.kind for t in lex("add 12 and 3.")] == [Kind.WORDS, Kind.NUMBER, Kind.WORDS,
                                                      Kind.NUMBER, Kind.WORDS, Kind.END]
    assert [t.shown() for t in lex("(1+2)")] == ["(", "#", "+", "#", ")", "<end>"]
    run = lex("1, and after that multiply by 2")[1]  # a view shows a run's last words
    assert (run.shown(), run.shown(3), run.shown(1)) == (
        ", and after that multiply by ", "that multiply by ", "by ")
    assert lex("1 2")[1].shown(3) == " " and lex("1?")[1].shown(3) == "?"
    with pytest.raises(CompileError, match="no operation on top"):
        compile_main("1 + 2", lambda v: POP)
    with pytest.raises(CompileError, match="only POP or FINISH at the end"):
        compile_main("1", lambda v: SKIP)
    with pytest.raises(CompileError, match="not at the end with the stack empty"):
        compile_main("1", lambda v: FINISH)
    with pytest.raises(CompileError, match="no '\\(' on top"):
        compile_main("1)", lambda v: NUM if v.token == "#" else CLOSE)
    with pytest.raises(ValueError, match="PUSH takes one of"):
        PUSH("div")
    with pytest.raises(ValueError, match="has no compile phase"):
        expert_actions(TASKS["add"].sample(random.Random(0), 2))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(composed())
def test_compile_views_holds_every_view_of_every_prompt(ex):
    """``compile_views`` of a task's wordings holds each view a prompt of any number of
    operations (nested parentheses included) shows, with the expert's decision: what makes
    its certificate a statement about every prompt."""
    table = compile_views(ex.task, [ex.template])
    for d in expert_actions(ex):
        assert table[d.view] == d.action


def test_compile_views_refuses_a_task_without_a_compile_phase():
    with pytest.raises(ValueError, match="no compile phase"):
        compile_views("add", TASKS["add"].templates("train"))


def test_opening_and_closing_mark_the_tokens_before_the_first_and_after_the_last_number():
    ex = TASKS["chain"].make(("12", "add", "3", "add", "4"),
                             TASKS["chain"].train_templates[0])
    decisions = expert_actions(ex)
    tokens = [t.shown() for t in lex(ex.prompt)]
    first = tokens.index("#")
    flags = [d.view.opening for d in decisions]
    assert flags[:first] == [True] * first and not any(flags[first:])
    assert "opening" in str(decisions[0].view) and "opening" not in str(decisions[-1].view)
    # closing: after the last number; decisions past the last number token are all closing
    last = len(tokens) - 1 - tokens[::-1].index("#")
    closing = [d.view.closing for d in decisions]
    after = sum(1 for d in decisions if d.view.closing)
    assert closing[-after:] == [True] * after and not any(closing[:-after])
    assert after >= len(tokens) - 1 - last  # every token after it, POPs at the end included
    assert decisions[-1].view.token == "<end>" and "closing" in str(decisions[-1].view)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(composed())
def test_a_linked_program_of_any_length_has_the_execute_rows_of_one_of_two_operations(ex):
    """What lets the execute certificate of a composed prompt's view (taken on a program of
    two operations: the operand window shows every longer prompt as one of those) speak for
    every length: the linked program of any number of operations (2-8) puts the same rows
    before the step head as one of two (the library is linked whole; the main program's
    calls have the same forms whatever their number)."""
    from llamacpu.learn.compiling import recalled_by, run_program
    from llamacpu.learn.controller_tables import _step_rows

    def rows(example):
        _, ops, modes, vals, carries = _step_rows(run_program(example), example.alphabet, False)
        return {(o, tuple(m), tuple(v), c) for o, m, v, c in
                zip(ops.tolist(), modes.tolist(), vals.tolist(), carries.tolist())}

    t = TASKS[ex.task]
    if recalled_by(ex):  # another task's prompt runs that task's program
        return
    two = t.make(t.draw_operands(random.Random(0), 3, ops=2), ex.template, ex.alphabet)
    assert rows(ex) == rows(two)
