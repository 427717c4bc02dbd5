"""foreign_numbers: requests about two numbers that no program of the machine computes;
the right answer is to decline (decline.lasm)."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import Frame, Grammar, Operands, Task, number, shorter, shuffled


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:  # noqa: ARG001
    """Two numbers, the longer ``length`` digits."""
    return shuffled(rng, number(rng, length), shorter(rng, length))


def solve(ops: tuple[str, ...]) -> str:  # noqa: ARG001
    """Nothing: the machine declines (``Task.declines``)."""
    return ""


# Frames are families of requests. The seen ones train the controller to decline; the new
# ones (the new_words split) are families it never saw, among them the division, remainder
# and percentage requests: what "tasks the machine never learned" are measured on.
GRAMMAR = Grammar(
    frames=("raise {a} to the power {b}", Frame("what is {a} to the power of {b}", kind="question"),
            Frame("{a} ^ {b}", kind="symbols"), Frame("{a}**{b}", kind="symbols"),
            "round {a} to {b} places", Frame("is {a} a multiple of {b}", kind="question"),
            Frame("what is the lcm of {a} and {b}", kind="question"),
            "pick a random number between {a} and {b}",
            Frame("how many primes are there between {a} and {b}", kind="question"),
            "convert {a} from base {b}", "shift {a} left by {b} bits",
            Frame("what is {a} xor {b}", kind="question"),
            Frame("divide {a} by {b}", new=True),
            Frame("what is {a} divided by {b}", kind="question", new=True),
            Frame("{a} / {b}", kind="symbols", new=True),
            Frame("{a} mod {b}", kind="symbols", new=True),
            Frame("what is the remainder when {a} is divided by {b}", kind="question", new=True),
            Frame("what is {a} percent of {b}", kind="question", new=True),
            Frame("how many times does {b} go into {a}", kind="question", new=True),
            Frame("average {a} and {b}", new=True),
            Frame("what is the distance from {a} to {b} on the number line", kind="question",
                  new=True)),
)
"""How people ask for what the machine does not do (learn/wordings.py)."""


TASK = Task(
    "foreign_numbers", "decline", Operands.NUMBERS,
    train_templates=("raise {a} to the power {b}", "{a}**{b}", "what is the lcm of {a} and {b}?",
                     "round {a} to {b} places"),
    heldout_templates=("divide {a} by {b}", "what is {a} mod {b}?"),
    grammar=GRAMMAR, declines=True,
    draw=draw, solve=solve, out_size=lambda ops: 1, arity=2, edge_rate=0.0,
    description="requests about two numbers the machine has no program for: decline")
