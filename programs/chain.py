"""chain: arithmetic instructions in words, left to right ("add 12 and 345, then multiply by
6, then subtract the result from 3000"); the expert is a main program of one library call
per step (llamacpu.core.compose.chain_program), linked to the library programs/lib/lib.lasm.

Operands are the numbers and the steps alternating, ``("12", "add", "345", "mul", "6",
"rsub", "3000")``; a wording phrases every kind of clause (``tasks.chain_phrasings``), so an
example of k steps renders k clauses in it."""

from __future__ import annotations

import random

from llamacpu.core import compose
from llamacpu.core.isa import Program
from llamacpu.core.link import LIBRARY_DIR, link, load_library
from llamacpu.learn.tasks import Example, Frame, Grammar, Operands, Task


def draw(rng: random.Random, length: int, edge_rate: float, *,
         ops: int | None = None) -> tuple[str, ...]:
    """A chain of ``ops`` steps (by default 1 or 2) of add, sub, mul and rsub whose longest
    number has exactly ``length`` digits (``compose.draw_chain``: every intermediate result
    non-negative, every product with a factor of at most 4 digits). No edge cases (the
    task's edge rate is 0)."""
    names, numbers = compose.draw_chain(rng, rng.randint(1, 2) if ops is None else ops, length)
    out = [numbers[0]]
    for op, n in zip(names, numbers[1:]):
        out += [op, n]
    return tuple(out)


def solve(ops: tuple[str, ...]) -> str:
    """The left-to-right fold: each step applies its operation to the result so far and its
    number (rsub: the number minus the result)."""
    return str(compose.evaluate_chain(ops[1::2], [int(x) for x in ops[0::2]]))


def fit(ops: tuple[str, ...]) -> tuple[str, ...] | None:
    """The chain if no intermediate result is negative, else None."""
    try:
        solve(ops)
    except ValueError:
        return None
    return ops


def out_size(ops: tuple[str, ...]) -> int:
    """The scratch slots the library's number regions reach (``compose.scratch_size``)."""
    return compose.scratch_size(compose.chain_calls(ops[1::2]), " ".join(ops[0::2]))


def program_for(ex: Example) -> Program:
    """The chain's main program (``num``, then per step ``num`` and its routine, ``swap``
    first for rsub; ``print``, ``halt``) linked to the library, in the example's alphabet."""
    return link(compose.chain_program(ex.operands[1::2]), load_library(alphabet=ex.alphabet))


def step(kind: str, first: str, then: str) -> str:
    """The phrasing of one kind of step: as the first clause (``{a}`` and ``{b}``, the first
    two numbers, in that order) and as a later one (``{n}``, its number)."""
    return f"{{first_{kind}}}{first}{{{kind}}}{then}"


def wording(add: str, minus: str, mul: str, conn: str, head: str = "", tail: str = "") -> str:
    """A chain template (``tasks.chain_phrasings``) from the phrasings of each kind of step
    (``minus`` is sub's and rsub's) and the connector between clauses."""
    return f"{head}{add}{minus}{mul}{{conn}}{conn}{{end}}{tail}"


ADD = (step("add", "add {a} and {b}", "add {n}"), step("add", "sum {a} and {b}", "plus {n}"))
MINUS = (step("sub", "take {a} minus {b}", "subtract {n}")
         + step("rsub", "subtract {a} from {b}", "subtract the result from {n}"),
         step("sub", "compute {a} minus {b}", "minus {n}")
         + step("rsub", "take {a} away from {b}", "take the result away from {n}"))
MUL = (step("mul", "multiply {a} by {b}", "multiply by {n}"),
       step("mul", "multiply {a} and {b}", "times {n}"))
CONN = (", then ", " and then ")
NEW_ADD = (step("add", "put {a} and {b} together", "increase that by {n}"),)
NEW_MINUS = (step("sub", "start with {a} and take away {b}", "take away {n}")
             + step("rsub", "deduct {a} from {b}", "deduct that from {n}"),)
NEW_MUL = (step("mul", "find the product of {a} and {b}", "scale that by {n}"),)
NEW_CONN = ("; next, ", ", after that ")

_BODY = "<add><minus><mul>{conn}<conn>{end}"
GRAMMAR = Grammar(
    frames=(_BODY,
            Frame("what do you get if you <add><minus><mul>{conn}, then {end}",
                  kind="question")),
    words={"add": ADD, "minus": MINUS, "mul": MUL, "conn": CONN},
    new_words={"add": NEW_ADD, "minus": NEW_MINUS, "mul": NEW_MUL, "conn": NEW_CONN})
"""How people ask for a chain (learn/wordings.py): the slot words are phrasings of clause
kinds, so a wording fixes every clause's phrasing and the connector; the new words are
phrasings and connectors training never has."""


TASK = Task(
    # The expert program is compiled from the steps: the library is the same for every
    # prompt, the main program has 2·ops + 3 slots (one more per rsub) whatever the digits.
    "chain", "lib", Operands.CHAIN,
    train_templates=(wording(ADD[0], MINUS[0], MUL[0], CONN[0]),
                     wording(ADD[1], MINUS[1], MUL[1], CONN[0], tail="."),
                     wording(ADD[0], MINUS[1], MUL[0], CONN[1], head="please "),
                     wording(ADD[1], MINUS[0], MUL[1], ", then ",
                             head="what do you get if you ", tail="?")),
    heldout_templates=(wording(ADD[0], MINUS[0], MUL[0], ", next ", head="first "),
                       wording(step("add", "begin with {a} plus {b}", "add {n} to that"),
                               MINUS[1], MUL[1], ", and after that ", tail="."),
                       wording(ADD[1], MINUS[0], MUL[0], "; then ", head="can you ",
                               tail="?")),
    grammar=GRAMMAR,
    draw=draw, solve=solve, out_size=out_size, fit=fit, edge_rate=0.0,
    program_for=program_for, directory=LIBRARY_DIR,
    description="arithmetic instructions in words, applied left to right: a first clause "
                "combines two numbers, each later one applies add, sub, mul or rsub ('the "
                "result from') with a new number; the expert is one library call per step, "
                "linked to programs/lib/lib.lasm")
