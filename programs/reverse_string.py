"""reverse_string: a bit string reversed (the Chomsky-hierarchy benchmark's reverse_string,
a DCF task); the expert is reverse_string.lasm beside this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/dcf/reverse_string.py``) draws strings s_1 ... s_n of uniform bits (vocab_size 2, as
in the paper) and asks for s_n ... s_1. Its tokens 0 and 1 are the digits '0' and '1' here,
the string is the payload after the prompt's ':', and the length is n, the benchmark's input
length.
"""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
    Operands,
    Task,
    bits_grammar,
    edge_case,
    fit_tokens,
)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """``length`` uniform bits; edge cases: a palindrome (its own reverse), all zeros, all
    ones."""
    def bits(n: int) -> str:
        return "".join(rng.choice("01") for _ in range(n))

    def palindrome() -> tuple[str, ...]:
        half = bits((length + 1) // 2)
        return (half + half[: length // 2][::-1],)

    cases = [palindrome, lambda: ("0" * length,), lambda: ("1" * length,)]
    return edge_case(rng, edge_rate, cases) or (bits(length),)


def solve(ops: tuple[str, ...]) -> str:
    """s_n ... s_1 (the benchmark's ``jnp.flip`` of the input)."""
    return ops[0][::-1]


fit = fit_tokens("01")  # any payload: a bit string of its length


GRAMMAR = bits_grammar(
    ("reverse", "mirror", "flip the order of"),
    ("invert", "turn around"),
    "write these bits backwards: {text}",
    "read the bits from right to left: {text}")
"""How people ask for reverse_string (learn/wordings.py)."""


TASK = Task(
    "reverse_string", "reverse_string", Operands.TEXT,
    train_templates=("reverse the bits: {text}", "reverse the binary string: {text}",
                     "write these bits backwards: {text}", "bits in reverse order: {text}",
                     "reverse the bit string:  {text}", "flip the order of the bits: {text}"),
    heldout_templates=("read the bits from right to left: {text}",
                       "the binary string backwards: {text}", "mirror the bits: {text}"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=lambda ops: len(ops[0]) + 1, fit=fit,
    description="a bit string reversed (Chomsky benchmark reverse_string, DCF)")
