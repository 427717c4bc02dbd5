"""mul: decimal multiplication; the expert is mul.lasm beside this file."""

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
    shorter,
    shuffled,
)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """Two numbers, the longer ``length`` digits; edge cases: carry chains, times zero,
    times one, squares, leading zeros."""
    cases = [
        lambda: ("9" * length, "9" * rng.randint(1, length)),            # carry chains
        lambda: shuffled(rng, number(rng, length), "0"),
        lambda: shuffled(rng, number(rng, length), "1"),
        lambda: (x := number(rng, length), x),                           # squares
    ]
    if length > 1:
        cases.append(lambda: shuffled(rng, *leading_zeros(rng, length)))
    return edge_case(rng, edge_rate, cases) or shuffled(rng, number(rng, length),
                                                        shorter(rng, length))


def solve(ops: tuple[str, ...]) -> str:
    """A · B."""
    return str(int(ops[0]) * int(ops[1]))


GRAMMAR = Grammar(
    frames=("<mult> {a} by {b}", "<calc> {a}<times>{b}", "<calc> the <prod> of {a} and {b}",
            Frame("<what> {a}<times>{b}", kind="question"),
            Frame("<what> the <prod> of {a} and {b}", kind="question"),
            Frame("{a}<times>{b}", kind="symbols"),
            Frame("<mulfn>({a}, {b})", kind="symbols"),
            Frame("multiply {a} and {b} together", new=True),
            Frame("what do you get when {a} is multiplied by {b}", kind="question", new=True)),
    words={"mult": ("multiply", "times"), "calc": ("calculate", "compute"),
           "times": (" * ", "*", " times "), "prod": ("product",),
           "what": ("what is", "how much is"), "mulfn": ("mul", "prod")},
    new_words={"mult": ("scale",), "calc": ("work out", "figure out"),
               "times": (" x ", " multiplied by "), "prod": ("multiple",),
               "what": ("whats", "what would be"), "mulfn": ("product", "times")})
"""How people ask for mul (learn/wordings.py)."""


TASK = Task(
    "mul", "mul", Operands.NUMBERS,
    train_templates=("{a}*{b}=", "{a} * {b}", "multiply {a} by {b}",
                     "what is {a} times {b}?", "product of {a} and {b}",
                     "calculate {a} * {b}"),
    heldout_templates=("{a} x {b}", "how much is {a} times {b}?",
                       "compute the product of {a} and {b}."),
    grammar=GRAMMAR, commutative=True,
    draw=draw, solve=solve, out_size=lambda ops: 2 * len(ops[0]) + len(ops[1]) + 3, arity=2,
    description="decimal multiplication, schoolbook")
