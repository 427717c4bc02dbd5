"""binary_multiplication: the product of two little-endian binary numbers (the
Chomsky-hierarchy benchmark's binary_multiplication, a CS task); the expert is
binary_multiplication.lasm beside this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs/binary_multiplication.py``) draws its input as binary_addition does: ``N 2 M``,
least significant bit first, its length the whole sequence len N + 1 + len M, the bits split
uniformly (len N in 1..length − 2), each number uniform in 1 .. 2^len − 1 and zero-padded to
its width. At length 1 and 2 the input is one number of ``length`` bits and the answer is
fixed to length − 1 zeros ([] and [0]), not a product. The target is the product, least
significant bit first and without high zeros, then the termination token 2, then zeros up to
length tokens; only the tokens up to the termination count.

Here the tokens 0, 1, 2 are the symbols '0', '1', '*', the input is the payload after the
prompt's ':' (length: its symbols, the benchmark's length), and the answer is the product's
bits (a payload without '*': length − 1 zeros, at any length): the END that closes the
machine's answer is the termination token, and the padding after it is not written.
"""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
    Operands,
    Task,
    binary_op_grammar,
    edge_case,
    fit_binary_pair,
)

OP = "*"


def _le(value: int, width: int = 0) -> str:
    """``value`` in binary, least significant bit first, zero-padded to ``width`` bits."""
    return f"{value:b}".zfill(width)[::-1]


def _value(bits: str) -> int:
    """The value of little-endian bits."""
    return int(bits[::-1], 2)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """The benchmark's input of ``length`` symbols; edge cases (length ≥ 3): all ones times
    all ones (the most carries), times 1, times a power of two (a shift), 1 times 1 padded
    with high zeros."""
    if length <= 2:
        return (_le(rng.randrange(2 ** length - 1), length),)
    ln = rng.randint(1, length - 2)
    lm = length - 1 - ln
    cases = [
        lambda: (f"{'1' * ln}{OP}{'1' * lm}",),
        lambda: (f"{_le(rng.randint(1, 2 ** ln - 1), ln)}{OP}{_le(1, lm)}",),
        lambda: (f"{_le(rng.randint(1, 2 ** ln - 1), ln)}{OP}"
                 f"{_le(2 ** rng.randrange(lm), lm)}",),
        lambda: (f"{_le(1, ln)}{OP}{_le(1, lm)}",),
    ]
    return edge_case(rng, edge_rate, cases) or (
        f"{_le(rng.randint(1, 2 ** ln - 1), ln)}{OP}{_le(rng.randint(1, 2 ** lm - 1), lm)}",)


def solve(ops: tuple[str, ...]) -> str:
    """N · M, least significant bit first, without high zeros ("0" for zero); a payload
    without '*' has the benchmark's fixed answer, len − 1 zeros."""
    n, op, m = ops[0].partition(OP)
    if not op:
        return "0" * (len(n) - 1)
    return _le(_value(n) * _value(m))


fit = fit_binary_pair(OP)  # any payload: N OP M of its length


GRAMMAR = binary_op_grammar(("multiply", "times", "multiply out"), ("scale",),
                            ("product", "multiplication"), ("times table",))
"""How people ask for binary_multiplication (learn/wordings.py)."""


TASK = Task(
    "binary_multiplication", "binary_multiplication", Operands.TEXT,
    train_templates=("multiply in binary: {text}", "binary product: {text}",
                     "multiply these binary numbers: {text}",
                     "little endian binary multiplication: {text}",
                     "product of the bits, lowest first: {text}", "binary times:  {text}"),
    heldout_templates=("what is this product in binary: {text}",
                       "multiply in base two, lowest bit first: {text}",
                       "compute the binary product: {text}"),
    # the product room len N + len M and its END: the payload's length; without '*', the
    # len N zeros and the slot after them, where the zero-fill's pointer stops
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=lambda ops: len(ops[0]) + (OP not in ops[0]), fit=fit,
    terminated=True,
    max_length=500,
    description="the product of two little-endian binary numbers (Chomsky benchmark "
                "binary_multiplication, CS)")
