"""The assembler: ``.lasm`` text -> :class:`~llamacpu.core.isa.Program`, and back.

The command line of ``llamacpu.core.asm``."""

from __future__ import annotations

import argparse
import importlib
import sys

from llamacpu.cli import Parser
from llamacpu.core.asm import AssemblyError, assemble
from llamacpu.core.disasm import disassemble
from llamacpu.core.isa import (
    DEFAULT_MEMORY_SIZE,
    N_PORTS,
    Program,
)

# -------------------------------------------------------------------------------- CLI


def _memory_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < N_PORTS + 1:
        raise argparse.ArgumentTypeError(f"must be at least {N_PORTS + 1}, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    """``python -m llamacpu.asm FILE``: assemble, validate, print the disassembly."""
    ap = Parser(prog="python -m llamacpu.asm",
                                 description="Assemble a .lasm file, validate it and print "
                                             "its disassembly.")
    ap.add_argument("file", help="the .lasm source file")
    ap.add_argument("--memory-size", type=_memory_size, default=DEFAULT_MEMORY_SIZE,
                    help=f"slots the program may occupy (default {DEFAULT_MEMORY_SIZE})")
    args = ap.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"error: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    try:
        program = assemble(text, file=args.file, memory_size=args.memory_size)
    except AssemblyError as e:
        print(str(e), file=sys.stderr)
        return 2
    failed = False
    for d in _validate(program):  # each prints as one line: `file:line:col: error: ...`
        failed = failed or d.severity == "error"
        msg = str(d)
        print(msg if f"{d.severity}:" in msg else f"{d.severity}: {msg}", file=sys.stderr)
    if failed:
        return 2
    try:
        sys.stdout.write(disassemble(program))
    except ValueError as e:  # cannot happen for an assembled program; report, don't crash
        print(f"error: cannot disassemble {args.file}: {e}", file=sys.stderr)
        return 2
    return 0


def _validate(program: Program) -> list:
    """Diagnostics from ``llamacpu.core.graph.validate``, or none if that module is absent."""
    try:
        graph = importlib.import_module("llamacpu.core.graph")
    except ModuleNotFoundError as e:
        if e.name == "llamacpu.core.graph":
            return []
        raise
    return list(graph.validate(program))


if __name__ == "__main__":
    sys.exit(main())
