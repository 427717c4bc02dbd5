"""reverse: the text after the first ':', reversed; the expert is reverse.lasm beside this
file."""

from __future__ import annotations

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    draw_text,
)


def solve(ops: tuple[str, ...]) -> str:
    """The payload backwards."""
    return ops[0][::-1]


GRAMMAR = Grammar(
    frames=(Frame("<rev>: {text}", kind="label"), Frame("<rev> this: {text}", kind="label"),
            Frame("<rev> the <text>: {text}", kind="label"),
            Frame("write the <text> backwards: {text}", kind="label"),
            Frame("read this from right to left: {text}", kind="label", new=True),
            Frame("the <text> in reverse order, please: {text}", kind="label", new=True)),
    words={"rev": ("reverse", "mirror", "write backwards"), "text": ("text", "line")},
    new_words={"rev": ("flip", "spell backwards", "invert"), "text": ("message",)})
"""How people ask for reverse (learn/wordings.py)."""


TASK = Task(
    "reverse", "reverse", Operands.TEXT,
    train_templates=("reverse: {text}", "reverse this: {text}", "backwards: {text}",
                     "write backwards: {text}", "mirror: {text}",
                     "reverse the text:  {text}"),
    heldout_templates=("spell backwards: {text}", "flip: {text}",
                       "read it in reverse: {text}"),
    grammar=GRAMMAR,
    draw=draw_text, solve=solve, out_size=lambda ops: len(ops[0]) + 1,
    description="the text after the first ':', reversed")
