"""add: decimal addition of two numbers; the expert is add.lasm beside this file."""

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
    room,
    shorter,
    shuffled,
)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """Two numbers, the longer ``length`` digits; edge cases: a carry chain, equal operands,
    adding zero, leading zeros."""
    cases = [
        lambda: shuffled(rng, "9" * length, str(rng.randint(1, 9))),    # carry chain
        lambda: (x := number(rng, length), x),                           # equal operands
        lambda: shuffled(rng, number(rng, length), "0"),                 # adding zero
    ]
    if length > 1:
        cases.append(lambda: shuffled(rng, *leading_zeros(rng, length)))
    return edge_case(rng, edge_rate, cases) or shuffled(rng, number(rng, length),
                                                        shorter(rng, length))


def solve(ops: tuple[str, ...]) -> str:
    """A + B."""
    return str(int(ops[0]) + int(ops[1]))


GRAMMAR = Grammar(
    frames=("<add> {a} and {b}", "<calc> {a}<plus>{b}", "<calc> the <sum> of {a} and {b}",
            Frame("<what> {a}<plus>{b}", kind="question"),
            Frame("<what> the <sum> of {a} and {b}", kind="question"),
            Frame("{a}<plus>{b}", kind="symbols"),
            Frame("<sumfn>({a}, {b})", kind="symbols"),
            "add {b} to {a}",
            Frame("increase {a} by {b}", new=True),
            Frame("what do you get when you add {b} to {a}", kind="question", new=True),
            Frame("{a} and {b} together make how much", kind="question", new=True)),
    words={"add": ("add", "sum", "sum up"), "calc": ("calculate", "compute"),
           "plus": (" + ", "+", " plus "), "sum": ("sum", "total"),
           "what": ("what is", "how much is"), "sumfn": ("sum", "add")},
    new_words={"add": ("total", "tally up"), "calc": ("work out", "figure out"),
               "plus": (" added to ", " and "), "sum": ("addition",),
               "what": ("whats", "what would be"), "sumfn": ("plus",)})
"""How people ask for add (learn/wordings.py)."""


TASK = Task(
    "add", "add", Operands.NUMBERS,
    train_templates=("calculate {a} + {b}", "what is {a} plus {b}?", "{a}+{b}=",
                     "add {a} and {b}", "sum of {a} and {b}", "{a} + {b}"),
    heldout_templates=("how much is {a}+{b}?", "compute the sum of {a} and {b}.",
                       "{a} plus {b} equals?", "add {a} to {b}"),
    grammar=GRAMMAR, commutative=True,
    draw=draw, solve=solve, out_size=room(1), arity=2,
    description="decimal addition of two numbers")
