"""fmap_data: fmap with the function in ten DATA slots (the channel-off baseline); the
expert is fmap_data.lasm beside this file, with the example's f(0..9) written in."""

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
    """fmap_data.lasm, in the example's alphabet, with the example's f(0..9) in its ten
    DATA slots tab+0..9."""
    p = golden.load_program("fmap_data", alphabet=ex.alphabet)
    slots = list(p.slots)
    tab = p.symbols["tab"]
    for x, y in enumerate(function_table(ex.operands[0])):
        slots[tab + x] = Slot.data(y)
    return dataclasses.replace(p, slots=tuple(slots))


GRAMMAR = Grammar(
    frames=(Frame("g: {defs} ; <look> g for {digits}", kind="label"),
            Frame("with the table g = {defs} ; <look> g for {digits}", kind="label"),
            Frame("let g be {defs} ; <look> g for {digits}", kind="label"),
            Frame("table g is {defs}; read g at each digit of {digits}", kind="label"),
            Frame("g is {defs} ; <look> it at {digits}", kind="label", new=True)),
    words={"look": ("look up", "read", "find")},
    new_words={"look": ("consult", "check")})
"""How people ask for fmap_data (learn/wordings.py)."""


TASK = Task(
    # The same problem with the channel off: f travels in ten DATA slots. Its own
    # wordings ("g", "look up"), so a controller trained on both knows which program
    # a prompt wants; the same held-out functions as fmap.
    "fmap_data", "fmap_data", Operands.FUNCTION,
    train_templates=("g: {defs} ; look up g for {digits}", "{defs} ; look up {digits}",
                     "let g be {defs} ; look g up for {digits}",
                     "table g is {defs}; read g at each digit of {digits}"),
    heldout_templates=("g is {defs} ; look it up at {digits}",
                       "lookup table {defs} ; keys {digits}"),
    grammar=GRAMMAR,
    draw=draw_function, solve=apply_function, out_size=lambda ops: len(ops[1]) + 1,
    edge_rate=0.1, program_for=program_for, heldout_key=function_key, reserved=";",
    description="fmap with the function in ten DATA slots (the channel-off baseline)")
