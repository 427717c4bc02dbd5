"""sub: decimal subtraction, first minus second; the expert is sub.lasm beside this file."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    edge_case,
    leading_zeros,
    number,
    ordered,
    room,
    shorter,
)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """A ≥ B, A ``length`` digits; edge cases: difference 0, minus zero, a borrow chain,
    leading zeros."""
    cases = [
        lambda: (x := number(rng, length), x),                           # difference 0
        lambda: (number(rng, length), "0"),                              # minus zero
    ]
    if length > 1:
        cases += [
            lambda: ("1" + "0" * (length - 1), str(rng.randint(1, 9))),  # borrow chain
            lambda: leading_zeros(rng, length),
        ]
    return edge_case(rng, edge_rate, cases) or ordered(number(rng, length), shorter(rng, length))


def solve(ops: tuple[str, ...]) -> str:
    """A − B (the program prints a negative result with '-'; the task draws A ≥ B)."""
    return str(int(ops[0]) - int(ops[1]))


GRAMMAR = Grammar(
    frames=("<calc> {a}<minus>{b}", "<calc> the <diff> of {a} and {b}",
            "from {a} <take> {b}",
            Frame("<what> {a}<minus>{b}", kind="question"),
            Frame("<what> the <diff> of {a} and {b}", kind="question"),
            Frame("{a}<minus>{b}", kind="symbols"),
            Frame("<subfn>({a}, {b})", kind="symbols"),
            "subtract {b} from {a}", "take {b} away from {a}",
            Frame("reduce {a} by {b}", new=True),
            Frame("how much is left when {b} is taken from {a}", kind="question", new=True),
            Frame("{a} decreased by {b} is how much", kind="question", new=True)),
    words={"calc": ("calculate", "compute"), "minus": (" - ", "-", " minus "),
           "diff": ("difference",), "take": ("subtract", "take away"),
           "what": ("what is", "how much is"), "subfn": ("sub", "minus")},
    new_words={"calc": ("work out", "figure out"), "minus": (" take away ", " less "),
               "diff": ("remainder",), "take": ("remove", "deduct"),
               "what": ("whats", "what would be"), "subfn": ("diff",)})
"""How people ask for sub (learn/wordings.py)."""


TASK = Task(
    "sub", "sub", Operands.NUMBERS,
    # The program computes first − second: "subtract {b} from {a}" names b first in the
    # text and would compute b − a, so it is not a template. Operands keep A ≥ B.
    train_templates=("what is {a} minus {b}?", "{a}-{b}=", "{a} - {b}",
                     "calculate {a} - {b}", "from {a} subtract {b}", "{a} minus {b}"),
    heldout_templates=("how much is {a} take away {b}?", "compute {a}-{b}.",
                       "difference of {a} and {b}", "{a} less {b} is?"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=room(1), arity=2, fit=lambda ops: ordered(*ops),
    description="decimal subtraction, first minus second, first ≥ second")
