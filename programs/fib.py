"""fib: the n-th Fibonacci number; the expert is fib.lasm beside this file."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import (
    Frame,
    Grammar,
    Operands,
    Task,
    edge_case,
    number,
    pad,
)


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """n of ``length`` digits; edge case: F(0..2), zero-padded."""
    cases = [lambda: (pad(str(rng.randint(0, 2)), length),)]           # F(0..2), padded
    return edge_case(rng, edge_rate, cases) or (number(rng, length),)


def solve(ops: tuple[str, ...]) -> str:
    """F(n), F(0) = 0, F(1) = 1."""
    a, b = 0, 1
    for _ in range(int(ops[0])):
        a, b = b, a + b
    return str(a)


GRAMMAR = Grammar(
    frames=("<fib> {a}", Frame("<fibfn>({a})", kind="symbols"),
            Frame("<what> <fib> number {a}", kind="question"),
            Frame("the {a}-th fibonacci number", kind="label", new=True)),
    words={"fib": ("fib", "fibonacci"), "fibfn": ("fib", "fibonacci"),
           "what": ("what is", "compute")},
    new_words={"fib": ("fibo",), "fibfn": ("f",), "what": ("whats",)})
"""How people ask for fib (learn/wordings.py)."""


TASK = Task(
    "fib", "fib", Operands.NUMBERS,
    train_templates=("fib {a}", "fibonacci {a}", "fib({a})", "what is fibonacci number {a}?"),
    heldout_templates=("compute fib of {a}.", "the fibonacci number at index {a}"),
    # F(k) and F(k+1) interleaved: 3 slots per digit of F(n + 1), plus 2
    grammar=GRAMMAR,
    draw=draw, solve=solve,
    out_size=lambda ops: 3 * len(solve((str(int(ops[0]) + 1),))) + 2, arity=1, max_length=2,
    description="the n-th Fibonacci number (n < 100: the run grows as n·digits(F(n)))")
