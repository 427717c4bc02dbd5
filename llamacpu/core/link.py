"""The linker: a main program on top of a library of routines.

A library (``programs/lib/lib.lasm``) is a ``.lasm`` file of routines entered with CALL and
left with RET; a main program is a short ``.lasm`` text that calls them by label and halts.
:func:`link` lays memory out as::

    [ IN, OUT | library slots 2..M-1 | main program slots M.. | input, END | scratch ]

The library comes first and is the same Program whatever the main program, so every routine
has a fixed address (a learned controller can emit ``CALL`` targets as constants), and
execution starts at the main program (its ``start`` label, else its first instruction).
The main program may refer to every label of the library and define none of them: a clash
is an :class:`~llamacpu.core.asm.AssemblyError` at the main program's ``file:line:col``.

A library's *routines* are its instruction labels that do not start with ``_`` (the
others are its own: loop heads, helpers, data). The linked Program records them and where
the main program starts in ``program.linkage`` (:class:`~llamacpu.core.isa.Linkage`):
the control-flow checker treats the routines as entered by CALL
(:func:`llamacpu.core.graph.validate`), and :func:`main_slots` is the part a controller
emits.

    >>> from llamacpu.core.interp import run
    >>> p = link("call num\\ncall num\\ncall add\\ncall num\\ncall mul\\ncall print\\nhalt\\n")
    >>> run(p, "what is (12 + 345) * 6?").output
    '2142'
    >>> len(main_slots(p)), p.entry == p.linkage.main
    (7, True)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llamacpu.core.asm import assemble
from llamacpu.core.golden import PROGRAMS_DIR, load_program
from llamacpu.core.isa import Alphabet, Kind, Linkage, Mode, Op, Program, Slot

__all__ = ["LIBRARY_DIR", "load_library", "routines", "link", "main_slots", "main_calls"]

LIBRARY_DIR = PROGRAMS_DIR / "lib"
"""Where libraries live: beside the expert programs, in their own folder, since every
``programs/*.lasm`` is an expert program with golden cases of its own."""


def load_library(name: str = "lib", directory: str | Path | None = None,
                 alphabet: Alphabet | None = None) -> Program:
    """Assemble the library ``<directory>/<name>.lasm`` (default :data:`LIBRARY_DIR`);
    cached, like :func:`~llamacpu.core.golden.load_program`."""
    return load_program(name, LIBRARY_DIR if directory is None else directory, alphabet)


def routines(library: Program) -> dict[str, int]:
    """The library's routines: its labels of instructions that do not start with ``_``."""
    return {name: addr for name, addr in sorted(library.symbols.items(), key=lambda kv: kv[1])
            if not name.startswith("_") and name not in ("IN", "OUT")
            and library.slots[addr].kind == Kind.INSTR}


def link(main: str, library: Program | str = "lib", *, file: str = "<main>") -> Program:
    """The Program ``[IN, OUT | library | main]``: ``main`` is ``.lasm`` text (named ``file``
    in errors), ``library`` an assembled library or a name for :func:`load_library`.

    Raises AssemblyError for a malformed main program or one that defines a label of the
    library, ValueError for a library with a ``start`` label (it has no entry of its own).
    The result's symbols are the library's and the main program's, plus ``start`` at the
    entry, so :func:`~llamacpu.core.disasm.disassemble` prints it back as one program (an
    equal Program; like the source map, ``linkage`` is not part of the text).
    """
    lib = load_library(library) if isinstance(library, str) else library
    if "start" in lib.symbols:
        raise ValueError(f"{lib.name}: a library has no 'start' label: execution starts at "
                         f"the main program")
    program = assemble(main, file=file, base=lib)
    symbols = dict(program.symbols)
    symbols.setdefault("start", program.entry)
    return dataclasses.replace(program, symbols=symbols,
                               linkage=Linkage(lib.name, len(lib), routines(lib)))


def main_slots(program: Program) -> tuple[Slot, ...]:
    """The main program's slots of a linked program: what a controller emits."""
    if program.linkage is None:
        raise ValueError(f"{program.name} is not a linked program (llamacpu.core.link.link)")
    return program.slots[program.linkage.main:]


def main_calls(program: Program) -> list[str]:
    """The routines a linked program's main program calls, in the order they appear
    (for a straight-line main, the order they run); a call that is not a direct call of a
    routine raises ValueError."""
    by_addr = {a: name for name, a in program.linkage.routines.items()} \
        if program.linkage is not None else {}
    out = []
    for k, slot in enumerate(main_slots(program)):
        if slot.kind == Kind.INSTR and slot.op == Op.CALL:
            if slot.modes[0] != Mode.DIRECT or slot.args[0] not in by_addr:
                raise ValueError(f"{program.where(program.linkage.main + k)}: not a call of "
                                 f"a library routine")
            out.append(by_addr[slot.args[0]])
    return out
