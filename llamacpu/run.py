"""``python -m llamacpu.run PROGRAM.lasm --input "123+456"``: assemble, run, print the answer.

Prints the answer on the first line and ``steps: N`` on the second; ``--trace`` prints a
table of every step before them. ``--link LIB.lasm`` links the program, then a main
program, onto a library of routines first (``llamacpu.core.link``). An input with
characters the program's alphabet lacks runs in :data:`PRINTABLE_ALPHABET` when that
extends it (capitals and any printable ASCII, as people type prompts). Every error
(unreadable file, assembly error, machine fault, input outside the alphabet, bad flag) is
one ``error: ...`` on stderr (an assembly error adds its source line and caret) and exit
code 2, never a traceback.

A backend is a function ``(program, input_text, config) -> Result``; :data:`BACKENDS` maps
the names ``--backend`` accepts to them: ``reference`` (the interpreter) and ``machine`` (the
differentiable machine, llamacpu.machine.machine: exact hard mode by default, ``--soft`` for attention
reads; ``--heatmap out.png`` draws where its reads looked at every step).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from llamacpu.cli import Parser
from llamacpu.core.asm import AssemblyError, assemble
from llamacpu.core.interp import (
    DEFAULT_MAX_STEPS,
    DEFAULT_STACK_SIZE,
    MachineFault,
    Result,
    TraceStep,
    run,
)
from llamacpu.core.isa import (
    PRINTABLE_ALPHABET,
    SPEC,
    Alphabet,
    InputError,
    LlamacpuError,
    Op,
    Program,
    Role,
    Write,
)
from llamacpu.core.link import link

__all__ = ["RunConfig", "BACKENDS", "Backend", "reference_backend", "machine_backend",
           "format_trace", "read_input", "main"]


@dataclass(frozen=True)
class RunConfig:
    """One run, as the command line describes it."""

    program: str                              # path of the .lasm source
    input: str = ""                           # the prompt placed in the input region
    trace: bool = False                       # print a table of every step
    max_steps: int = DEFAULT_MAX_STEPS        # fault if HALT has not run after this many
    out_size: int | None = None               # output-region slots (None: the loader's rule)
    stack_size: int = DEFAULT_STACK_SIZE      # return-stack entries
    graph: str | None = None                  # draw the control-flow graph here (.png, .dot)
    backend: str = "reference"                # which machine runs the program
    soft: bool = False                        # machine backend: soft (attention) reads
    heatmap: str | None = None                # machine backend: draw the read attention here
    link: str | None = None                   # a library .lasm the program is linked onto

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.out_size is not None and self.out_size < 1:
            raise ValueError(f"--out-size must be at least 1, got {self.out_size}")
        if self.stack_size < 0:
            raise ValueError(f"--stack-size must be at least 0, got {self.stack_size}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, "
                             f"got {self.backend!r}")
        if (self.soft or self.heatmap is not None) and self.backend != "machine":
            raise ValueError("--soft and --heatmap need --backend machine")
        if self.soft and self.trace:
            raise ValueError("--trace needs hard mode: a soft step has no single trace")


Backend = Callable[[Program, str, RunConfig], Result]


def reference_backend(program: Program, input_text: str, cfg: RunConfig) -> Result:
    """The reference interpreter (llamacpu.core.interp)."""
    return run(program, input_text, cfg.max_steps, trace=cfg.trace, out_size=cfg.out_size,
               stack_size=cfg.stack_size)


def machine_backend(program: Program, input_text: str, cfg: RunConfig) -> Result:
    """The differentiable machine (llamacpu.machine.machine), hard (exact) or soft; same Result."""
    from llamacpu.machine.draw import draw_heatmap
    from llamacpu.machine.machine import default_machine, run_program

    result = run_program(program, input_text, cfg.max_steps, hard=not cfg.soft,
                         trace=cfg.trace, out_size=cfg.out_size, stack_size=cfg.stack_size)
    if cfg.heatmap is not None:
        machine = default_machine(program.alphabet, cfg.stack_size)
        maps = machine.attention(program, input_text, cfg.max_steps, hard=not cfg.soft,
                                 out_size=cfg.out_size)
        mode = "soft" if cfg.soft else "hard"
        try:
            draw_heatmap(maps, cfg.heatmap, title=f"{program.name} ({mode})")
        except (OSError, ValueError) as e:
            raise LlamacpuError(f"cannot draw the heatmap to {cfg.heatmap}: {e}") from None
    return result


BACKENDS: dict[str, Backend] = {"reference": reference_backend, "machine": machine_backend}


# ---------------------------------------------------------------------------- the trace


def _symbol(alphabet: Alphabet, v: int) -> str:
    """A symbol as a reader wants it: ``7``, ``'+'``, ``END``."""
    if v == alphabet.end:
        return "END"
    if 0 <= v < alphabet.base and not alphabet.raw_bytes:
        return str(v)
    try:
        return repr(alphabet.decode_symbol(v))
    except ValueError:
        return f"?{v}"


def _operand(alphabet: Alphabet, role: Role, addr: int | None, value: int | None) -> str:
    """One operand of a trace row: ``@41=7`` (read a symbol at 41), ``#'+'``, ``@37→40``."""
    if addr is None:
        return f"#{_symbol(alphabet, value)}"  # type: ignore[arg-type]
    if role in (Role.SRC, Role.SLOT):
        return f"@{addr}={_symbol(alphabet, value)}"  # type: ignore[arg-type]
    if role == Role.PTR:
        return f"@{addr}→{value}"
    if role == Role.TARGET:
        return f"→{addr}"
    return f"@{addr}"  # DST, ADDR, WEIGHTS


def _write(alphabet: Alphabet, t: TraceStep) -> str:
    if t.write_addr is None:
        return ""
    if SPEC[t.op].writes == Write.PTR:
        return f"@{t.write_addr}.p0={t.result}"
    if t.op == Op.MOV and t.addrs[1] is not None and t.written is not None:
        return f"@{t.write_addr}←@{t.addrs[1]} ({t.written.kind.name})"
    if t.op == Op.WSET:   # f_w(a) ← b
        a, b = t.values[1], t.values[2]
        return f"@{t.write_addr}.f({_symbol(alphabet, a)})={_symbol(alphabet, b)}"  # type: ignore[arg-type]
    return f"@{t.write_addr}={_symbol(alphabet, t.result)}"  # type: ignore[arg-type]


def _code(line: str) -> str:
    """A source line without its ``; comment`` (a ';' inside quotes is not one)."""
    quote, i = None, 0
    while i < len(line):
        ch = line[i]
        if quote and ch == "\\":
            i += 1                      # skip the escaped character
        elif quote and ch == quote:
            quote = None
        elif not quote and ch in "'\"":
            quote = ch
        elif not quote and ch == ";":
            return line[:i].strip()
        i += 1
    return line.strip()


def format_trace(program: Program, trace: tuple[TraceStep, ...] | list[TraceStep]) -> str:
    """A table, one row per step: step, pc, source line, operands, carry, write, next pc."""
    alphabet = program.alphabet
    header = ("step", "pc", "source", "operands", "C", "write", "next")
    rows = [header]
    for t in trace:
        loc = program.source_map.get(t.pc)
        source = _code(loc.text) if loc is not None else t.op.name.lower()
        roles = SPEC[t.op].roles
        ops = "  ".join(_operand(alphabet, r, a, v)
                        for r, a, v in zip(roles, t.addrs, t.values))
        carry = str(t.carry_out) if t.carry_out == t.carry_in else f"{t.carry_in}→{t.carry_out}"
        nxt = "" if t.next_pc == t.pc + 1 else str(t.next_pc)
        rows.append((str(t.step), str(t.pc), source, ops, carry, _write(alphabet, t), nxt))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {0, 1}  # numbers align right
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the CLI


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m llamacpu.run",
                 description="Assemble a .lasm program and run it on an input.")
    ap.add_argument("program", help="the .lasm source file")
    given = ap.add_mutually_exclusive_group()
    given.add_argument("--input", default=None, help="the input text (default: empty)")
    given.add_argument("--input-file", default=None, metavar="PATH",
                       help="read the input text from PATH ('-': standard input), for inputs "
                            "longer than a command line takes; one trailing newline is "
                            "dropped")
    ap.add_argument("--trace", action="store_true", help="print a table of every step")
    ap.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS,
                    help=f"fault if HALT has not run after this many steps "
                         f"(default {DEFAULT_MAX_STEPS})")
    ap.add_argument("--out-size", type=int, default=None,
                    help="output-region slots (default 4*(len(input)+1)+256)")
    ap.add_argument("--stack-size", type=int, default=DEFAULT_STACK_SIZE,
                    help=f"return-stack entries (default {DEFAULT_STACK_SIZE})")
    ap.add_argument("--graph", default=None, metavar="PATH",
                    help="draw the control-flow graph to PATH (.png, .svg, .pdf or .dot)")
    ap.add_argument("--backend", default="reference",
                    help=f"the machine that runs the program: {', '.join(BACKENDS)}")
    ap.add_argument("--soft", action="store_true",
                    help="machine backend: soft attention reads instead of exact ones")
    ap.add_argument("--heatmap", default=None, metavar="PATH",
                    help="machine backend: draw the pointer attention per step to PATH (.png)")
    ap.add_argument("--link", default=None, metavar="LIBRARY",
                    help="the program is a main program: link it onto this library of "
                         "routines (a .lasm file, e.g. programs/lib/lib.lasm) and run that")
    return ap


def read_input(text: str | None, path: str | None) -> str:
    """The input text: ``text``, or the contents of ``path`` ('-': standard input) without
    one trailing newline (an editor's or ``echo``'s), or empty."""
    if path is None:
        return text or ""
    if path == "-":
        data = sys.stdin.buffer.read().decode("utf-8")
    else:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8")
    return data[:-1] if data.endswith("\n") else data


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0, or 2 on any error)."""
    args = _parser().parse_args(argv)
    try:
        given = read_input(args.input, args.input_file)
    except OSError as e:
        return _fail(f"--input-file {args.input_file}: cannot read it: {e.strerror or e}")
    except UnicodeDecodeError as e:
        return _fail(f"--input-file {args.input_file}: not UTF-8 text (byte {e.start})")
    try:
        cfg = RunConfig(program=args.program, input=given, trace=args.trace,
                        max_steps=args.max_steps, out_size=args.out_size,
                        stack_size=args.stack_size, graph=args.graph, backend=args.backend,
                        soft=args.soft, heatmap=args.heatmap, link=args.link)
    except ValueError as e:
        return _fail(str(e))
    texts = []
    for path in (cfg.program, cfg.link):
        try:
            if path is not None:
                with open(path, encoding="utf-8") as f:
                    texts.append(f.read())
        except (OSError, UnicodeDecodeError) as e:
            return _fail(f"cannot read {path}: {e}")
    def build(alphabet: Alphabet | None) -> Program:
        if cfg.link is None:
            return assemble(texts[0], file=cfg.program, alphabet=alphabet)
        return link(texts[0], assemble(texts[1], file=cfg.link, alphabet=alphabet),
                    file=cfg.program)

    try:
        program = build(None)
        if _needs_printable(program.alphabet, cfg.input):
            program = build(PRINTABLE_ALPHABET)  # a prompt as typed: capitals, any ASCII
    except AssemblyError as e:  # already `file:line:col: error: ...`, source line, caret
        print(e, file=sys.stderr)
        return 2
    except ValueError as e:  # a library with an entry of its own
        return _fail(str(e))
    if cfg.graph is not None:
        try:
            from llamacpu.core.graph import draw  # networkx and matplotlib load only for --graph

            draw(program, cfg.graph)
        except (LlamacpuError, ValueError, OSError) as e:
            return _fail(f"cannot draw the graph to {cfg.graph}: {e}")
    try:
        result = BACKENDS[cfg.backend](program, cfg.input, cfg)
    except MachineFault as e:
        if e.trace:  # the steps up to the fault, when --trace asked for them
            sys.stdout.write(format_trace(program, e.trace))
        return _fail(str(e))
    except LlamacpuError as e:  # InputError
        return _fail(str(e))
    if result.trace is not None:
        sys.stdout.write(format_trace(program, result.trace))
    print(result.output)
    print(f"steps: {result.steps}")
    return 0


def _needs_printable(alphabet: Alphabet, text: str) -> bool:
    """Whether ``text`` has a character ``alphabet`` lacks that :data:`PRINTABLE_ALPHABET`,
    an extension of it, may hold: then the program runs in that alphabet (the same symbols
    under the same numbers, more after them), so a prompt typed with capitals and any
    printable ASCII runs on every program written for the default alphabet, and a
    character outside printable ASCII is the one the error names."""
    if alphabet == PRINTABLE_ALPHABET or not PRINTABLE_ALPHABET.extends(alphabet):
        return False
    try:
        alphabet.encode(text)
    except InputError:
        return True
    return False


def entry(argv: list[str] | None = None) -> int:
    """:func:`main`, with a closed output pipe (``... --trace | head``) not an error."""
    try:
        return main(argv)
    except BrokenPipeError:  # `... --trace | head`: the reader left; not an error of ours
        sys.stdout = None  # type: ignore[assignment]  (no flush of the dead pipe at exit)
        return 0


if __name__ == "__main__":
    sys.exit(entry())
