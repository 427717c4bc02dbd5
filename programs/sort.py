"""sort: every digit of the text, ascending; the expert is sort.lasm beside this file."""

from __future__ import annotations

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    draw_digit_list,
)


def solve(ops: tuple[str, ...]) -> str:
    """The digits in ascending order, without separators."""
    return "".join(sorted(ops))


GRAMMAR = Grammar(
    frames=("<sort> {items}", "<sort> the digits {digits}", "<sort> {items_comma}",
            Frame("<sort>: {items}", kind="label"),
            "arrange {items_comma} in <asc> order", "<put> {items} in <asc> order",
            Frame("what is {items_comma} <sorted>", kind="question"),
            Frame("list the digits {digits} from smallest to largest", new=True),
            Frame("can {items} be put in order", kind="question", new=True)),
    words={"sort": ("sort", "order"), "asc": ("ascending", "increasing"),
           "put": ("put", "arrange"), "sorted": ("sorted", "in order")},
    new_words={"sort": ("rank", "line up"), "asc": ("rising",), "put": ("place", "get"),
               "sorted": ("ordered", "from low to high")})
"""How people ask for sort (learn/wordings.py)."""


TASK = Task(
    "sort", "sort", Operands.DIGITS,
    train_templates=("sort {items}", "sort the digits {digits}", "sort {items_comma}",
                     "sort: {items}", "arrange in ascending order: {items_comma}",
                     "order {items} from small to large"),
    heldout_templates=("put {items} in order", "sort these digits: {digits}",
                       "ascending: {items_comma}"),
    grammar=GRAMMAR,
    draw=draw_digit_list, solve=solve, out_size=lambda ops: len(ops) + 1,
    description="every digit of the text, ascending, without separators")
