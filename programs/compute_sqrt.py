"""compute_sqrt: the floor of the square root of a big-endian binary number (the
Chomsky-hierarchy benchmark's compute_sqrt, a CS task); the expert is compute_sqrt.lasm
beside this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs/compute_sqrt.py``) draws X uniformly from 1 .. 2^length − 1 and writes it as
``length`` bits, most significant first (zero-padded); the target is ``math.isqrt(X)`` in
binary, most significant bit first, zero-padded to ceil(length / 2) bits, with no termination
token. (Its docstring's example gives 37 → "101"; the code gives isqrt(37) = 6 → "110".)

Here the tokens 0 and 1 are the symbols '0' and '1', X is the payload after the prompt's ':'
(length: its bits, the benchmark's length), and the answer is the ceil(length / 2) bits of
the root.
"""

from __future__ import annotations

import math
import random

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    edge_case,
    fit_tokens,
)


def _be(value: int, width: int) -> str:
    """``value`` in binary, most significant bit first, zero-padded to ``width`` bits."""
    return f"{value:b}".zfill(width)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """X of ``length`` bits, uniform in 1 .. 2^length − 1; edge cases: a perfect square, one
    less than a square (the largest remainder), all ones, 1."""
    def square(minus: int) -> tuple[str, ...]:
        s = rng.randint(1, math.isqrt(2 ** length - 1))
        return (_be(max(s * s - minus, 1), length),)

    cases = [lambda: square(0), lambda: square(1), lambda: ("1" * length,),
             lambda: (_be(1, length),)]
    return edge_case(rng, edge_rate, cases) or (_be(rng.randint(1, 2 ** length - 1), length),)


def solve(ops: tuple[str, ...]) -> str:
    """floor(√X), ceil(len / 2) bits, most significant first."""
    x = ops[0]
    return _be(math.isqrt(int(x, 2)), (len(x) + 1) // 2)


fit = fit_tokens("01")  # any payload: a bit string of its length


GRAMMAR = Grammar(
    frames=(Frame("<root> in binary: {text}", kind="label"),
            Frame("binary <root>: {text}", kind="label"),
            Frame("give the <root> of the bits: {text}", kind="label"),
            Frame("<root> of this binary number: {text}", kind="label"),
            Frame("floor of the <root>, in binary: {text}", kind="label"),
            Frame("what is the <root> of this: {text}", kind="label", new=True),
            Frame("the whole part of the binary <root>: {text}", kind="label", new=True)),
    words={"root": ("square root", "integer square root", "sqrt", "floor square root")},
    new_words={"root": ("root", "isqrt")})
"""How people ask for compute_sqrt (learn/wordings.py)."""


TASK = Task(
    "compute_sqrt", "compute_sqrt", Operands.TEXT,
    train_templates=("square root in binary: {text}", "integer square root: {text}",
                     "binary square root: {text}", "floor of the square root, in binary: {text}",
                     "sqrt: {text}", "root of this binary number:  {text}"),
    heldout_templates=("what is the square root of this: {text}",
                       "compute the binary root, rounded down: {text}",
                       "the whole part of the square root: {text}"),
    # two zeros and the copy of X, q[-1], the h bits of the root, T's last 1 (the END at
    # the end) and the END that stops the compare: L + h + 5
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=lambda ops: len(ops[0]) + (len(ops[0]) + 1) // 2 + 5,
    fit=fit, max_length=500,
    description="the floor of the square root of a big-endian binary number (Chomsky "
                "benchmark compute_sqrt, CS)")
