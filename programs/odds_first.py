"""odds_first: a bit string's symbols at odd indices, then those at even indices (the
Chomsky-hierarchy benchmark's odds_first, a CS task); the expert is odds_first.lasm beside
this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs/odds_first.py``) draws strings of n uniform bits (vocab_size 2, as in the paper)
and its ``sample_batch`` answers ``concatenate([s[1::2], s[::2]])``: with 0-based indices,
the symbols at 1, 3, 5, ... first, then those at 0, 2, 4, ... (00110101 → 0111 0100). Its
docstring and the paper say the opposite (s_1 s_3 ... s_2 s_4 ..., 1-based: 00110101 →
0100 0111); the data its models were trained and tested on are ``sample_batch``'s, which
this task follows. Its tokens 0 and 1 are the digits '0' and '1' here, the string is the
payload after the prompt's ':', and the length is n, the benchmark's input length.
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
    """``length`` uniform bits; edge cases: alternating bits (each half constant), all
    zeros, all ones."""
    def alternating() -> tuple[str, ...]:
        return ((rng.choice(("01", "10")) * length)[:length],)

    cases = [alternating, lambda: ("0" * length,), lambda: ("1" * length,)]
    return edge_case(rng, edge_rate, cases) or ("".join(rng.choice("01")
                                                        for _ in range(length)),)


def solve(ops: tuple[str, ...]) -> str:
    """s[1::2] + s[::2] (0-based indices: odd ones first), as the benchmark's data."""
    return ops[0][1::2] + ops[0][::2]


fit = fit_tokens("01")  # any payload: a bit string of its length


GRAMMAR = bits_grammar(
    ("put odd indices first in", "reorder by index parity, odds first,",
     "odds first for"),
    ("split odd and even positions of", "interleave backwards"),
    "odds first: {text}",
    "first the bits at odd indices, then the rest: {text}")
"""How people ask for odds_first (learn/wordings.py)."""


TASK = Task(
    "odds_first", "odds_first", Operands.TEXT,
    train_templates=("odds first: {text}", "bits at odd indices first: {text}",
                     "odd indices first, then even ones: {text}",
                     "put the odd positions first: {text}",
                     "reorder the bits by index parity, odd first: {text}",
                     "odd places, then even places:  {text}"),
    heldout_templates=("first the bits at odd indices, then the rest: {text}",
                       "odds then evens: {text}", "split by parity of index, odds first: {text}"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=lambda ops: len(ops[0]) + 1, fit=fit,
    description="the bits at odd (0-based) indices, then those at even ones (Chomsky "
                "benchmark odds_first, CS)")
