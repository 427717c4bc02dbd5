"""duplicate_string: a bit string written twice (the Chomsky-hierarchy benchmark's
duplicate_string, a CS task); the expert is duplicate_string.lasm beside this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs/duplicate_string.py``) draws strings s_1 ... s_n of uniform bits (vocab_size 2, as
in the paper) and asks for s_1 ... s_n s_1 ... s_n, without a separator (output length 2n).
Its tokens 0 and 1 are the digits '0' and '1' here, the string is the payload after the
prompt's ':', and the length is n, the benchmark's input length.
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
    """``length`` uniform bits; edge cases: all zeros, all ones, alternating bits."""
    def alternating() -> tuple[str, ...]:
        return ((rng.choice(("01", "10")) * length)[:length],)

    cases = [lambda: ("0" * length,), lambda: ("1" * length,), alternating]
    return edge_case(rng, edge_rate, cases) or ("".join(rng.choice("01")
                                                        for _ in range(length)),)


def solve(ops: tuple[str, ...]) -> str:
    """s_1 ... s_n s_1 ... s_n (the benchmark concatenates the input with itself)."""
    return ops[0] + ops[0]


fit = fit_tokens("01")  # any payload: a bit string of its length


GRAMMAR = bits_grammar(
    ("duplicate", "double", "repeat twice"),
    ("clone", "say twice"),
    "write the binary string twice: {text}",
    "the bits, then the same bits again: {text}")
"""How people ask for duplicate_string (learn/wordings.py)."""


TASK = Task(
    "duplicate_string", "duplicate_string", Operands.TEXT,
    train_templates=("duplicate the bits: {text}", "write the binary string twice: {text}",
                     "repeat the bits twice: {text}", "double the bit string: {text}",
                     "copy the bits two times: {text}", "duplicate:  {text}"),
    heldout_templates=("say the bits twice: {text}",
                       "the binary string, then the same again: {text}",
                       "write it out twice: {text}"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=lambda ops: 2 * len(ops[0]) + 1, fit=fit,
    description="a bit string twice, without a separator (Chomsky benchmark "
                "duplicate_string, CS)")
