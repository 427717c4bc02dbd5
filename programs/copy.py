"""copy: echo the text after the first ':'; the expert is copy.lasm beside this file."""

from __future__ import annotations

from llamacpu.learn.tasks import Operands, Task, draw_text


def solve(ops: tuple[str, ...]) -> str:
    """The payload itself."""
    return ops[0]


TASK = Task(
    "copy", "copy", Operands.TEXT,
    train_templates=("copy: {text}", "repeat after me: {text}", "echo: {text}",
                     "say: {text}", "copy this: {text}", "write:  {text}"),
    heldout_templates=("please repeat: {text}", "parrot this: {text}",
                       "type exactly: {text}"),
    draw=draw_text, solve=solve, out_size=lambda ops: len(ops[0]) + 1,
    description="echo the text after the first ':'")
