"""reverse: the text after the first ':', reversed; the expert is reverse.lasm beside this
file."""

from __future__ import annotations

from llamacpu.learn.tasks import Operands, Task, draw_text


def solve(ops: tuple[str, ...]) -> str:
    """The payload backwards."""
    return ops[0][::-1]


TASK = Task(
    "reverse", "reverse", Operands.TEXT,
    train_templates=("reverse: {text}", "reverse this: {text}", "backwards: {text}",
                     "write backwards: {text}", "mirror: {text}",
                     "reverse the text:  {text}"),
    heldout_templates=("spell backwards: {text}", "flip: {text}",
                       "read it in reverse: {text}"),
    draw=draw_text, solve=solve, out_size=lambda ops: len(ops[0]) + 1,
    description="the text after the first ':', reversed")
