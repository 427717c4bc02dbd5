"""max: the largest digit of the text; the expert is max.lasm beside this file."""

from __future__ import annotations

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    draw_digit_list,
)


def solve(ops: tuple[str, ...]) -> str:
    """The largest digit; a text without digits is outside the contract."""
    if not ops:
        raise ValueError("max needs at least one digit (the program answers nothing)")
    return max(ops)


GRAMMAR = Grammar(
    frames=("<max> of {items}", "<find> the <max> of {items_comma}",
            "<find> the <big> digit in {digits}",
            Frame("<max>: {items}", kind="label"),
            Frame("what is the <big> of {items_comma}", kind="question"),
            Frame("which digit of {items} is the <big>", kind="question"),
            Frame("<maxfn>({items_comma})", kind="symbols"),
            Frame("pick the top digit out of {items}", new=True)),
    words={"max": ("max", "maximum"), "find": ("find", "give"),
           "big": ("largest", "biggest"), "maxfn": ("max",)},
    new_words={"max": ("peak", "top value"), "find": ("name", "show"),
               "big": ("greatest", "highest"), "maxfn": ("maximum", "top")})
"""How people ask for max (learn/wordings.py)."""


TASK = Task(
    "max", "max", Operands.DIGITS,
    train_templates=("max of {items}", "largest digit in {items}", "max {digits}",
                     "what is the largest of {items_comma}?", "maximum: {items}",
                     "biggest digit of {digits}"),
    heldout_templates=("which is the greatest of {items}?", "find the max in {items_comma}",
                       "top digit: {digits}"),
    grammar=GRAMMAR,
    draw=draw_digit_list, solve=solve, out_size=lambda ops: 2,
    description="the largest digit of the text")
