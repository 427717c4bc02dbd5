"""expr: arithmetic expressions with + - * and parentheses over multi-digit numbers
("calculate (12 + 345) * 6 - 78"); the expert is a main program of one library call per
operation (llamacpu.core.compose), linked to the library programs/lib/lib.lasm."""

from __future__ import annotations

import random

from llamacpu.core import compose
from llamacpu.core.isa import Program
from llamacpu.core.link import LIBRARY_DIR, link, load_library
from llamacpu.learn.tasks import Example, Frame, Grammar, Operands, Task


def draw(rng: random.Random, length: int, edge_rate: float, *, ops: int | None = None,
         parens: bool | None = None) -> tuple[str, ...]:
    """An expression of ``ops`` operators (by default 1 or 2) whose longest number has
    exactly ``length`` digits, with parentheses or none (by default either, even odds; one
    operator has none): ``compose.draw_expression`` with its full width, so every
    intermediate result is non-negative and every product has a factor of at most 4 digits.
    No edge cases (the task's edge rate is 0)."""
    n = rng.randint(1, 2) if ops is None else ops
    if n < 1:
        raise ValueError(f"expr: an expression has at least 1 operation, got ops={n}")
    nested = rng.random() < 0.5 if parens is None else parens
    return (compose.draw_expression(rng, n, length, nested, full_width=True),)


def solve(ops: tuple[str, ...]) -> str:
    """The expression's value: + - * with the usual precedence, left to right."""
    return str(compose.evaluate(ops[0]))


def fit(ops: tuple[str, ...]) -> tuple[str, ...] | None:
    """The expression if the library computes it (every intermediate non-negative, at most
    16 values on its stack at once), else None."""
    calls = compose.postfix_calls(ops[0])
    ok = compose.is_valid(ops[0]) and compose.stack_depth(calls) <= compose.STACK_ENTRIES
    return ops if ok else None


def out_size(ops: tuple[str, ...]) -> int:
    """The scratch slots the library's number regions reach (``compose.scratch_size``)."""
    return compose.scratch_size(compose.postfix_calls(ops[0]), ops[0])


def program_for(ex: Example) -> Program:
    """The expression's main program (one ``call`` per number and operator, then ``print``
    and ``halt``) linked to the library, in the example's alphabet."""
    return link(compose.main_program(ex.operands[0]), load_library(alphabet=ex.alphabet))


GRAMMAR = Grammar(
    frames=("<calc> {expr}", "<calc> the value of {expr}",
            Frame("<what> {expr}", kind="question"),
            Frame("<what> the value of {expr}", kind="question"),
            Frame("{expr}", kind="symbols"),
            Frame("simplify {expr}", new=True),
            Frame("what does {expr} come to", kind="question", new=True)),
    words={"calc": ("calculate", "compute", "evaluate"), "what": ("what is", "how much is")},
    new_words={"calc": ("work out", "figure out"), "what": ("whats", "what would be")})
"""How people ask for expr (learn/wordings.py)."""


TASK = Task(
    # The expert program is compiled from the expression: the library is the same for
    # every prompt, the main program has 2·ops + 3 slots whatever the digits.
    "expr", "lib", Operands.EXPRESSION,
    train_templates=("calculate {expr}", "what is {expr}?", "{expr} =", "evaluate {expr}",
                     "how much is {expr}?", "compute the value of {expr}"),
    heldout_templates=("find the value of {expr}.", "{expr} equals?", "work out {expr}",
                       "what does {expr} come to?"),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=out_size, fit=fit, edge_rate=0.0,
    program_for=program_for, reserved="+-*()", directory=LIBRARY_DIR,
    description="arithmetic expressions: + - * and parentheses over multi-digit numbers, "
                "precedence respected, every intermediate result non-negative; the expert "
                "is one library call per operation, linked to programs/lib/lib.lasm")
