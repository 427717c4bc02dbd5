"""cmp: compare two numbers by value; the expert is cmp.lasm beside this file."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    edge_case,
    leading_zeros,
    number,
    pad,
    room,
    shorter,
    shuffled,
)


def one_digit_changed(rng: random.Random, x: str) -> str:
    """``x`` with one digit replaced, keeping a nonzero leading digit when ``len(x) > 1``."""
    i = rng.randrange(len(x))
    low = 1 if i == 0 and len(x) > 1 else 0
    choices = [str(d) for d in range(low, 10) if str(d) != x[i]]
    return x[:i] + rng.choice(choices) + x[i + 1:]


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """Two numbers, the longer ``length`` digits, equal a third of the time; edge cases:
    equal by value but not by text (007?7), a near miss, leading zeros."""
    if rng.random() < 1 / 3:  # class balance: "=" is a third of the answers
        if length > 1 and rng.random() < edge_rate:  # equal by value, not by text: 007?7
            y = number(rng, rng.randint(1, length - 1))
            return shuffled(rng, pad(y, length), y)
        x = number(rng, length)
        return x, x
    cases = [lambda: (x := number(rng, length), one_digit_changed(rng, x))]  # near miss
    if length > 1:
        cases.append(lambda: shuffled(rng, *leading_zeros(rng, length)))
    return edge_case(rng, edge_rate, cases) or shuffled(rng, number(rng, length),
                                                        shorter(rng, length))


def solve(ops: tuple[str, ...]) -> str:
    """'<', '=' or '>' for A against B."""
    a, b = int(ops[0]), int(ops[1])
    return "<" if a < b else ">" if a > b else "="


GRAMMAR = Grammar(
    frames=("<compare> {a} <with> {b}", Frame("{a}<vs>{b}", kind="symbols"),
            Frame("how does {a} compare to {b}", kind="question"),
            Frame("is {a} <rel> {b}", kind="question"),
            Frame("<cmpfn>({a}, {b})", kind="symbols"),
            Frame("which is bigger, {a} or {b}", kind="question", new=True),
            Frame("tell whether {a} is below, equal to or above {b}", new=True)),
    words={"compare": ("compare", "order"), "with": ("with", "and", "to"),
           "vs": (" ? ", "?", " vs ", " vs. "),
           "rel": ("less than, equal to or greater than", "smaller, equal or larger than"),
           "cmpfn": ("cmp", "compare")},
    new_words={"compare": ("rank", "weigh"), "with": ("against", "versus"),
               "vs": (" <=> ", " or "), "rel": ("below, equal to or above",),
               "cmpfn": ("order",)})
"""How people ask for cmp (learn/wordings.py)."""


TASK = Task(
    "cmp", "cmp", Operands.NUMBERS,
    train_templates=("compare {a} and {b}", "{a}?{b}", "{a} ? {b}",
                     "compare {a} with {b}", "{a} vs {b}", "how does {a} compare to {b}?"),
    heldout_templates=("order {a} and {b}", "relation of {a} to {b}?",
                       "is {a} less than, equal to or greater than {b}?"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=room(2), arity=2,
    description="compare two numbers by value: '<', '=' or '>'")
