"""fmap: a digit function given by its ten examples, applied to every payload digit; the
expert is fmap.lasm beside this file, with the example's function in its WEIGHTS slot."""

from __future__ import annotations

import dataclasses

from llamacpu.core import golden
from llamacpu.core.isa import Program, Slot
from llamacpu.learn.tasks import (
    Example,
    Frame,
    Grammar,
    Operands,
    Task,
    apply_function,
    draw_function,
    function_key,
    function_table,
)


def program_for(ex: Example) -> Program:
    """fmap.lasm, in the example's alphabet, with the example's function in WEIGHTS slot f
    (other symbols map to END)."""
    p = golden.load_program("fmap", alphabet=ex.alphabet)
    end = p.alphabet.end
    table = list(function_table(ex.operands[0])) + [end] * (p.alphabet.size - 10)
    slots = list(p.slots)
    slots[p.symbols["f"]] = Slot.weights(table)
    return dataclasses.replace(p, slots=tuple(slots))


GRAMMAR = Grammar(
    frames=(Frame("f: {defs} ; <apply> f to {digits}", kind="label"),
            Frame("let f be {defs} ; <map> f over {digits}", kind="label"),
            Frame("given f = {defs} ; <apply> f to {digits}", kind="label"),
            Frame("define f by {defs}; what is f of each digit of {digits}", kind="question"),
            Frame("f is {defs} ; now <apply> it to {digits}", kind="label", new=True)),
    words={"apply": ("apply", "use", "evaluate"), "map": ("map", "apply", "send")},
    new_words={"apply": ("run",), "map": ("push",)})
"""How people ask for fmap (learn/wordings.py)."""


TASK = Task(
    # The weight-token channel's task: the controller must write f into the program's
    # WEIGHTS slot (docs/weights.md). Held out by FUNCTION: eval functions are never
    # trained on, whatever their wording, order or payload.
    "fmap", "fmap", Operands.FUNCTION,
    train_templates=("f: {defs} ; apply f to {digits}", "{defs} ; {digits}",
                     "let f be {defs} ; map f over {digits}",
                     "define f by {defs}; what is f of each digit of {digits}?"),
    heldout_templates=("f is {defs} ; now apply it to {digits}",
                       "given {defs} ; translate {digits}"),
    grammar=GRAMMAR,
    draw=draw_function, solve=apply_function, out_size=lambda ops: len(ops[1]) + 1,
    edge_rate=0.1, program_for=program_for, heldout_key=function_key, reserved=";",
    description="a digit function defined by its ten examples (shuffled), applied to "
                "every payload digit; f travels in a WEIGHTS slot")
