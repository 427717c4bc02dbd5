"""What every llamacpu command line shares, and the ``llamacpu`` console script.

``Parser`` is argparse whose bad-input path is one ``error: ...`` line on stderr and exit
code 2 (never a usage dump, never a traceback); every ``python -m llamacpu.X`` parses with
it. Its checks that every command shares run before any work: ``--threads`` at least 1
(:meth:`Parser.check_threads`) and output paths that can be written
(:meth:`Parser.check_out_dir`, :meth:`Parser.check_out_file`).

Output: results go to stdout, everything else to stderr through one ``logging`` setup
(:func:`setup_logging`, the logger ``llamacpu``): progress and notes at INFO, notes a user
must not miss at WARNING, details at DEBUG. ``--verbose``/``--quiet``
(:func:`add_verbosity`) pick the level; :func:`progress` is a tqdm bar on stderr that
``--quiet`` turns off.

``main`` dispatches ``llamacpu COMMAND ARGS`` to the same modules, importing only the
one asked for, so ``llamacpu --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Parser", "COMMANDS", "main", "add_verbosity", "setup_logging", "progress", "log"]

log = logging.getLogger("llamacpu")
"""The commands' logger: progress and notes on stderr (:func:`setup_logging`)."""


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

    def check_threads(self, threads: int, flag: str = "--threads") -> None:
        """``torch.set_num_threads`` takes a positive count: anything else is a bad flag."""
        if threads < 1:
            self.error(f"{flag} must be a whole number of threads, at least 1; got {threads}")

    def names(self, text: str, flag: str, allowed: Sequence[str]) -> list[str]:
        """Comma-separated names out of ``allowed``, in order, without repeats; anything
        else is a bad flag."""
        out = [x.strip() for x in text.split(",") if x.strip()]
        for x in out or [""]:
            if x not in allowed:
                self.error(f"{flag}: unknown value {x!r}: choose from {', '.join(allowed)} "
                           "(comma-separated)")
        return list(dict.fromkeys(out))

    def ints(self, text: str, flag: str, least: int = 1) -> list[int]:
        """Comma-separated integers of at least ``least``, in order, without repeats;
        anything else is a bad flag."""
        try:
            out = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            self.error(f"{flag} must be comma-separated integers, got {text!r}")
        if not out or min(out) < least:
            self.error(f"{flag} must list integers of at least {least}, got {text!r}")
        return list(dict.fromkeys(out))

    def check_out_dir(self, path: Path, flag: str = "--out") -> Path:
        """Create directory ``path`` if needed and prove it writable, before any work."""
        path = Path(path)
        if os.path.lexists(path) and not path.is_dir():
            self.error(f"{flag} {path}: exists and is not a directory (expected a writable "
                       "directory)")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.error(f"{flag} {path}: cannot create this directory ({e.strerror or e}); "
                       "expected a writable directory")
        problem = _write_probe(path)
        if problem:
            self.error(f"{flag} {path}: directory is not writable ({problem}); expected a "
                       "writable directory")
        return path

    def check_out_file(self, path: Path, flag: str = "--out") -> Path:
        """A file ``path`` can be written: not a directory, its directory exists and is
        writable (nothing is created)."""
        path = Path(path)
        parent = path.parent
        if path.is_dir():
            self.error(f"{flag} {path}: is a directory (expected a file path in a writable "
                       "directory)")
        problem = "no such directory" if not parent.is_dir() else _write_probe(parent)
        if problem:
            self.error(f"{flag} {path}: cannot write into {parent} ({problem}); expected a "
                       "file path in an existing writable directory")
        if path.exists() and not os.access(path, os.W_OK):
            self.error(f"{flag} {path}: file is not writable")
        return path

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


def _write_probe(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory`` (None if it can): creates and removes
    an empty hidden file, since ``os.access`` says yes to root on read-only filesystems."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=directory)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(name)
    return None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """The ``--verbose``/``--quiet`` pair every command takes (:func:`setup_logging`)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true",
                   help="also log details (stderr)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or progress lines on stderr, only warnings and "
                        "errors (results still go to stdout)")


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment, through ``tqdm.write`` when a bar is
    open so that a log line does not break it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if "tqdm" in sys.modules:
                from tqdm import tqdm

                tqdm.write(msg, file=sys.stderr)
            else:
                sys.stderr.write(msg + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover  (logging's own policy: never raise)
            self.handleError(record)


def setup_logging(verbose: bool = False, quiet: bool = False) -> logging.Logger:
    """Configure the ``llamacpu`` logger for a command: messages as they are, on stderr;
    level DEBUG with ``verbose``, WARNING with ``quiet``, else INFO. Idempotent."""
    log.handlers[:] = [h for h in log.handlers if not isinstance(h, _StderrHandler)]
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    return log


def progress(total: int | None = None, desc: str = "", unit: str = "it",
             quiet: bool = False):
    """A tqdm bar on stderr (stdout stays parseable); ``quiet``: a disabled one."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, leave=False)


COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, entry function taking argv, one-line help)
    "train": ("llamacpu.train", "cli", "train curriculum stages (python -m llamacpu.train)"),
    "eval": ("llamacpu.eval", "main", "evaluate a checkpoint running free"),
    "run": ("llamacpu.run", "entry", "assemble a .lasm program and run it on an input"),
    "asm": ("llamacpu.asm", "main", "assemble, validate and disassemble a .lasm file"),
    "compile": ("llamacpu.compile", "main", "print the program a learned machine compiles a "
                "prompt to; --run runs it"),
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
