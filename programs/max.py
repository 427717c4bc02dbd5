"""max: the largest digit of the text; the expert is max.lasm beside this file."""

from __future__ import annotations

from llamacpu.learn.tasks import Operands, Task, draw_digit_list


def solve(ops: tuple[str, ...]) -> str:
    """The largest digit; a text without digits is outside the contract."""
    if not ops:
        raise ValueError("max needs at least one digit (the program answers nothing)")
    return max(ops)


TASK = Task(
    "max", "max", Operands.DIGITS,
    train_templates=("max of {items}", "largest digit in {items}", "max {digits}",
                     "what is the largest of {items_comma}?", "maximum: {items}",
                     "biggest digit of {digits}"),
    heldout_templates=("which is the greatest of {items}?", "find the max in {items_comma}",
                       "top digit: {digits}"),
    draw=draw_digit_list, solve=solve, out_size=lambda ops: 2,
    description="the largest digit of the text")
