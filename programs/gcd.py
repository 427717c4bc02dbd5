"""gcd: greatest common divisor of two positive numbers; the expert is gcd.lasm beside this
file."""

from __future__ import annotations

import math
import random

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    TaskError,
    edge_case,
    shuffled,
)


def positive(rng: random.Random, width: int) -> str:
    """A number of ``width`` digits, at least 1."""
    return str(rng.randrange(max(1, 10 ** (width - 1)), 10 ** width))


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """Two positive numbers, the longer ``length`` digits; edge cases: equal, one of them 1,
    one dividing the other."""
    def divides() -> tuple[str, ...]:
        b = positive(rng, length)
        divisors = [d for d in range(1, int(b) + 1) if int(b) % d == 0]
        return shuffled(rng, b, str(rng.choice(divisors)))

    cases = [
        lambda: (x := positive(rng, length), x),
        lambda: shuffled(rng, positive(rng, length), "1"),
        divides,
    ]
    width = length if rng.random() < 0.5 else rng.randint(1, length)
    return edge_case(rng, edge_rate, cases) or shuffled(rng, positive(rng, length),
                                                        positive(rng, width))


def solve(ops: tuple[str, ...]) -> str:
    """gcd(A, B) for A, B ≥ 1 (with a zero the program never halts: outside the contract)."""
    a, b = int(ops[0]), int(ops[1])
    if a == 0 or b == 0:
        raise TaskError(f"gcd needs A, B >= 1 (the program never halts otherwise), got {ops}")
    return str(math.gcd(a, b))


GRAMMAR = Grammar(
    frames=("<gcd> of {a} and {b}", Frame("<what> the <gcd> of {a} and {b}", kind="question"),
            Frame("<gcdfn>({a}, {b})", kind="symbols"),
            Frame("largest number dividing both {a} and {b}", new=True)),
    words={"gcd": ("gcd", "greatest common divisor"), "what": ("what is", "find"),
           "gcdfn": ("gcd",)},
    new_words={"gcd": ("highest common factor", "hcf"), "what": ("whats",),
               "gcdfn": ("hcf",)})
"""How people ask for gcd (learn/wordings.py)."""


TASK = Task(
    "gcd", "gcd", Operands.NUMBERS,
    train_templates=("gcd of {a} and {b}", "gcd({a}, {b})", "{a},{b}",
                     "greatest common divisor of {a} and {b}"),
    heldout_templates=("what is the gcd of {a} and {b}?",
                       "highest common factor of {a}, {b}"),
    grammar=GRAMMAR, commutative=True,
    draw=draw, solve=solve, out_size=lambda ops: 2 * (len(ops[0]) + len(ops[1]) + 1), arity=2,
    max_length=2, fit=lambda ops: ops if int(ops[0]) > 0 and int(ops[1]) > 0 else None,
    description="greatest common divisor of two positive numbers (Euclid by "
                "subtraction: gcd(A, 1) takes A − 1 rounds, hence short operands)")
