"""binary_addition: the sum of two little-endian binary numbers (the Chomsky-hierarchy
benchmark's binary_addition, a CS task); the expert is binary_addition.lasm beside this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs/binary_addition.py``) writes its input as ``N 2 M``: two binary numbers, least
significant bit first, and the token 2 between them. Its length is the whole input sequence,
len N + 1 + len M: it splits the bits uniformly (len N in 1..length − 2) and draws each number
uniformly from 1 .. 2^len − 1, zero-padded to its width (so high zeros, at the right end, are
common). At length 1 and 2 there is no room for two numbers: the input is one number of
``length`` bits (drawn from 0 .. 2^length − 2) and the answer that number. The target is the
sum, least significant bit first and without high zeros (0 is "0"), then the termination
token 2, then zeros up to length + 1 tokens; only the tokens up to the termination count.

Here the tokens 0, 1, 2 are the symbols '0', '1', '+', the input is the payload after the
prompt's ':' (length: its symbols, the benchmark's length), and the answer is the sum's bits:
the END that closes the machine's answer is the termination token, and the padding after it
is not written.
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

OP = "+"


def _le(value: int, width: int = 0) -> str:
    """``value`` in binary, least significant bit first, zero-padded to ``width`` bits."""
    return f"{value:b}".zfill(width)[::-1]


def _value(bits: str) -> int:
    """The value of little-endian bits ("" is 0)."""
    return int(bits[::-1], 2) if bits else 0


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """The benchmark's input of ``length`` symbols; edge cases (length ≥ 3): a carry through
    every bit (all ones plus 1), all ones plus all ones, 1 plus 1 padded with high zeros."""
    if length <= 2:
        return (_le(rng.randrange(2 ** length - 1), length),)
    ln = rng.randint(1, length - 2)
    lm = length - 1 - ln
    cases = [
        lambda: (f"{'1' * ln}{OP}{_le(1, lm)}",),
        lambda: (f"{_le(1, ln)}{OP}{'1' * lm}",),
        lambda: (f"{'1' * ln}{OP}{'1' * lm}",),
        lambda: (f"{_le(1, ln)}{OP}{_le(1, lm)}",),
    ]
    return edge_case(rng, edge_rate, cases) or (
        f"{_le(rng.randint(1, 2 ** ln - 1), ln)}{OP}{_le(rng.randint(1, 2 ** lm - 1), lm)}",)


def solve(ops: tuple[str, ...]) -> str:
    """N + M, least significant bit first, without high zeros; a payload without '+' is N."""
    n, _, m = ops[0].partition(OP)
    return _le(_value(n) + _value(m))


fit = fit_binary_pair(OP)  # any payload: N OP M of its length


def out_size(ops: tuple[str, ...]) -> int:
    """The sum's max(len N, len M) + 1 bits, and its END."""
    n, _, m = ops[0].partition(OP)
    return max(len(n), len(m)) + 2


GRAMMAR = binary_op_grammar(("add", "sum up", "add up"), ("total", "combine"),
                            ("sum", "addition", "plus"), ("total",))
"""How people ask for binary_addition (learn/wordings.py)."""


TASK = Task(
    "binary_addition", "binary_addition", Operands.TEXT,
    train_templates=("add in binary: {text}", "binary sum: {text}",
                     "add these binary numbers: {text}", "little endian binary addition: {text}",
                     "sum of the bits, lowest first: {text}", "binary add:  {text}"),
    heldout_templates=("what is this sum in binary: {text}",
                       "add in base two, lowest bit first: {text}",
                       "compute the binary total: {text}"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=out_size, fit=fit, terminated=True,
    description="the sum of two little-endian binary numbers (Chomsky benchmark "
                "binary_addition, CS)")
