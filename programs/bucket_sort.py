"""bucket_sort: a string of tokens 0 .. 4 sorted ascending (the Chomsky-hierarchy
benchmark's bucket_sort, a CS task); the expert is bucket_sort.lasm beside this file.

The benchmark (Delétang et al., ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs/bucket_sort.py``) draws strings of n uniform tokens from {0, ..., vocab_size − 1}
(vocab_size 5, as in the paper) and asks for them sorted in increasing order (``jnp.sort``;
output length n). Its tokens 0 .. 4 are the digits '0' .. '4' here, the string is the payload
after the prompt's ':', and the length is n, the benchmark's input length.
"""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    edge_case,
    fit_tokens,
)

TOKENS = "01234"
"""The benchmark's vocabulary (vocab_size 5) as digit symbols."""


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """``length`` uniform tokens; edge cases: already sorted, sorted descending, one token
    repeated, two distinct tokens."""
    def tokens(alphabet: str = TOKENS) -> list[str]:
        return [rng.choice(alphabet) for _ in range(length)]

    cases = [
        lambda: ("".join(sorted(tokens())),),
        lambda: ("".join(sorted(tokens(), reverse=True)),),
        lambda: (rng.choice(TOKENS) * length,),
        lambda: ("".join(tokens("".join(rng.sample(TOKENS, 2)))),),
    ]
    return edge_case(rng, edge_rate, cases) or ("".join(tokens()),)


def solve(ops: tuple[str, ...]) -> str:
    """The tokens in increasing order (the benchmark's ``jnp.sort``)."""
    return "".join(sorted(ops[0]))


fit = fit_tokens(TOKENS)  # any payload: a token string of its length


GRAMMAR = Grammar(
    frames=(Frame("<sort> the <tokens>: {text}", kind="label"),
            Frame("<sort> these <tokens>: {text}", kind="label"),
            Frame("<sort> ascending: {text}", kind="label"),
            Frame("bucket <sort>: {text}", kind="label"),
            Frame("arrange the <tokens> in increasing order: {text}", kind="label", new=True),
            Frame("the <tokens> from small to large: {text}", kind="label", new=True)),
    words={"sort": ("sort", "order"), "tokens": ("tokens", "symbols", "string")},
    new_words={"sort": ("rank", "line up"), "tokens": ("characters",)})
"""How people ask for bucket_sort (learn/wordings.py)."""


TASK = Task(
    "bucket_sort", "bucket_sort", Operands.TEXT,
    train_templates=("bucket sort: {text}", "sort the string: {text}",
                     "sort these tokens: {text}", "sort ascending: {text}",
                     "put the symbols in order: {text}", "sort the tokens:  {text}"),
    heldout_templates=("arrange the symbols in increasing order: {text}",
                       "order the string from small to large: {text}", "sorted: {text}"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=lambda ops: len(ops[0]) + 1, fit=fit,
    description="a string of tokens 0 .. 4 sorted ascending (Chomsky benchmark "
                "bucket_sort, CS)")
