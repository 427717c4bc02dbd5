"""foreign_text: requests about a text that no program of the machine computes; the right
answer is to decline (decline.lasm)."""

from __future__ import annotations

import random

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet
from llamacpu.learn.tasks import Frame, Grammar, Operands, Task, draw_text


def solve(ops: tuple[str, ...]) -> str:  # noqa: ARG001
    """Nothing: the machine declines (``Task.declines``)."""
    return ""


def draw(rng: random.Random, length: int, edge_rate: float,  # noqa: ARG001
         alphabet: Alphabet = DEFAULT_ALPHABET) -> tuple[str, ...]:
    """A payload of ``length`` characters of ``alphabet``."""
    return draw_text(rng, length, 0.0, alphabet)


# Frames are families of requests: seen ones train the controller to decline, new ones
# (translation and counting among them) are never trained on (the new_words split).
GRAMMAR = Grammar(
    frames=tuple(Frame(t, kind="label") for t in (
        "uppercase: {text}", "capitalise this: {text}", "encode in rot thirteen: {text}", "summarise: {text}",
        "what language is this: {text}", "write a poem about: {text}",
        "find the vowels in: {text}", "remove the spaces from: {text}",
        "make this sound polite: {text}", "give a synonym for: {text}",
        "sort the words alphabetically: {text}", "hash this: {text}",
        "turn this into a question: {text}", "add punctuation to: {text}"))
    + tuple(Frame(t, kind="label", new=True) for t in (
        "translate to french: {text}", "translate into german: {text}",
        "count the letters in: {text}", "how many words are in: {text}",
        "spell check: {text}", "what does this mean: {text}",
        "say it in spanish: {text}", "is this a question: {text}")),
)
"""How people ask for what the machine does not do (learn/wordings.py)."""


TASK = Task(
    "foreign_text", "decline", Operands.TEXT,
    train_templates=("uppercase: {text}", "encode in rot thirteen: {text}", "summarise: {text}",
                     "write a poem about: {text}"),
    heldout_templates=("translate to french: {text}", "count the letters in: {text}"),
    grammar=GRAMMAR, declines=True,
    draw=draw, solve=solve, out_size=lambda ops: 1, edge_rate=0.0,
    description="requests about a text the machine has no program for: decline")
