"""What every llamacpu command line shares, and the ``llamacpu`` console script.

``Parser`` is argparse whose bad-input path is one ``error: ...`` line on stderr and exit
code 2 (never a usage dump, never a traceback); every ``python -m llamacpu.X`` parses with
it. ``main`` dispatches ``llamacpu COMMAND ARGS`` to the same modules, importing only the
one asked for, so ``llamacpu --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["Parser", "COMMANDS", "main"]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``error: ...`` line and exit code 2, and an unknown
    flag is reported as such before anything else (argparse alone first complains about a
    missing positional argument)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        for token in self._own_tokens(argv):
            flag = token.split("=", 1)[0]
            if flag.startswith("-") and len(flag) > 1 and not _is_number(flag) \
                    and not self._knows(flag):
                self.error(f"unrecognized argument {flag}")
        return super().parse_known_args(argv, namespace)

    def _own_tokens(self, argv: list[str]) -> list[str]:
        """The tokens this parser reads itself: up to ``--`` or a subcommand's name."""
        commands = {name for a in self._actions if isinstance(a, argparse._SubParsersAction)
                    for name in a.choices}
        out = []
        for token in argv:
            if token == "--" or token in commands:
                break
            out.append(token)
        return out

    def _knows(self, flag: str) -> bool:
        known = self._option_string_actions
        if flag in known:
            return True
        return self.allow_abbrev and flag.startswith("--") and sum(
            1 for name in known if name.startswith(flag)) == 1


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, entry function taking argv, one-line help)
    "train": ("llamacpu.train", "cli", "train curriculum stages (python -m llamacpu.train)"),
    "eval": ("llamacpu.eval", "main", "evaluate a checkpoint running free"),
    "run": ("llamacpu.run", "entry", "assemble a .lasm program and run it on an input"),
    "asm": ("llamacpu.asm", "main", "assemble, validate and disassemble a .lasm file"),
    "check": ("llamacpu.check", "main", "property-check a learned machine"),
    "certify": ("llamacpu.certify", "main", "certify a learned machine's tables, entry by entry"),
    "models": ("llamacpu.models", "main", "fetch and list pretrained controller models"),
    "bench": ("llamacpu.bench", "main", "baselines beside a learned machine"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``llamacpu COMMAND [ARGS]``: the same as ``python -m llamacpu.COMMAND [ARGS]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: llamacpu {" + ",".join(COMMANDS) + "} [ARGS]\n"
    if not args or args[0] in ("-h", "--help"):
        lines = [f"  {name:7s} {help_}" for name, (_, _, help_) in COMMANDS.items()]
        sys.stdout.write(usage + "\ncommands:\n" + "\n".join(lines) + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"error: unknown command {name!r}; choose from "
                         f"{', '.join(COMMANDS)}\n")
        return 2
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)(rest)


if __name__ == "__main__":
    sys.exit(main())
