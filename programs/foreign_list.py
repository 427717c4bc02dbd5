"""foreign_list: requests about a list of digits that no program of the machine computes;
the right answer is to decline (decline.lasm)."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import Frame, Grammar, Operands, Task, draw_digit_list


def solve(ops: tuple[str, ...]) -> str:  # noqa: ARG001
    """Nothing: the machine declines (``Task.declines``)."""
    return ""


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:  # noqa: ARG001
    """``length`` single digits."""
    return draw_digit_list(rng, length, 0.0)


# Frames are families of requests: seen ones train the controller to decline, new ones
# (counting and averaging among them) are never trained on (the new_words split).
GRAMMAR = Grammar(
    frames=("<find> the minimum of {items}", "<find> the median of {items_comma}",
            "sum the digits {digits}", "multiply together {items_comma}",
            "remove the duplicates from {items}", "shuffle {items}",
            "<find> the digit missing from {digits}", "sort {items} in descending order",
            Frame("is {items_comma} a palindrome", kind="question"),
            Frame("what is the product of {items}", kind="question"),
            Frame("min: {items}", kind="label"),
            Frame("count the digits in {digits}", new=True),
            Frame("how many items are in {items_comma}", kind="question", new=True),
            Frame("what is the average of {items}", kind="question", new=True),
            Frame("is {items} in order", kind="question", new=True),
            Frame("how often does the first digit occur in {digits}", kind="question", new=True),
            Frame("<find> the second largest of {items_comma}", new=True),
            Frame("mean: {items}", kind="label", new=True)),
    words={"find": ("find", "give me")},
    new_words={"find": ("tell me",)},
)
"""How people ask for what the machine does not do (learn/wordings.py)."""


TASK = Task(
    "foreign_list", "decline", Operands.DIGITS,
    train_templates=("find the minimum of {items}", "sum the digits {digits}", "shuffle {items}",
                     "min: {items}"),
    heldout_templates=("count the digits in {digits}", "what is the average of {items}?"),
    grammar=GRAMMAR, declines=True,
    draw=draw, solve=solve, out_size=lambda ops: 1, edge_rate=0.0,
    description="requests about a list of digits the machine has no program for: decline")
