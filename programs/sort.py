"""sort: every digit of the text, ascending; the expert is sort.lasm beside this file."""

from __future__ import annotations

from llamacpu.learn.tasks import Operands, Task, draw_digit_list


def solve(ops: tuple[str, ...]) -> str:
    """The digits in ascending order, without separators."""
    return "".join(sorted(ops))


TASK = Task(
    "sort", "sort", Operands.DIGITS,
    train_templates=("sort {items}", "sort the digits {digits}", "sort {items_comma}",
                     "sort: {items}", "arrange in ascending order: {items_comma}",
                     "order {items} from small to large"),
    heldout_templates=("put {items} in order", "sort these digits: {digits}",
                       "ascending: {items_comma}"),
    draw=draw_digit_list, solve=solve, out_size=lambda ops: len(ops) + 1,
    description="every digit of the text, ascending, without separators")
