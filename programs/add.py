"""add: decimal addition of two numbers; the expert is add.lasm beside this file."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
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


TASK = Task(
    "add", "add", Operands.NUMBERS,
    train_templates=("calculate {a} + {b}", "what is {a} plus {b}?", "{a}+{b}=",
                     "add {a} and {b}", "sum of {a} and {b}", "{a} + {b}"),
    heldout_templates=("how much is {a}+{b}?", "compute the sum of {a} and {b}.",
                       "{a} plus {b} equals?", "add {a} to {b}"),
    draw=draw, solve=solve, out_size=room(1), arity=2,
    description="decimal addition of two numbers")
