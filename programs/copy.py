"""copy: echo the text after the first ':'; the expert is copy.lasm beside this file."""

from __future__ import annotations

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    draw_text,
)


def solve(ops: tuple[str, ...]) -> str:
    """The payload itself."""
    return ops[0]


GRAMMAR = Grammar(
    frames=(Frame("<copy>: {text}", kind="label"), Frame("<copy> this: {text}", kind="label"),
            Frame("<copy> the <text>: {text}", kind="label"),
            Frame("repeat after me: {text}", kind="label"),
            Frame("can you <copy> this back to me: {text}", kind="label", new=True),
            Frame("say exactly what follows: {text}", kind="label", new=True)),
    words={"copy": ("copy", "echo", "repeat", "say"), "text": ("text", "line")},
    new_words={"copy": ("parrot", "duplicate once", "type out"), "text": ("message",)})
"""How people ask for copy (learn/wordings.py)."""


TASK = Task(
    "copy", "copy", Operands.TEXT,
    train_templates=("copy: {text}", "repeat after me: {text}", "echo: {text}",
                     "say: {text}", "copy this: {text}", "write:  {text}"),
    heldout_templates=("please repeat: {text}", "parrot this: {text}",
                       "type exactly: {text}"),
    grammar=GRAMMAR,
    draw=draw_text, solve=solve, out_size=lambda ops: len(ops[0]) + 1,
    description="echo the text after the first ':'")
