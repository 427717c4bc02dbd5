"""Instructions per second of the reference interpreter on multi-digit addition.

    python benchmarks/bench_interp.py [--digits 1000] [--repeats 5] [--seed 0]

Runs ``programs/add.lasm`` (or, if it is missing, the small adder below) on random
``digits``-digit + ``digits``-digit inputs, with the trace off and on, checks every answer
against Python's int addition, and prints a markdown table. Times are the best of
``repeats``, in CPU time of this process. "end to end" is all of ``interp.run`` (loading memory, translating, running,
rebuilding the final memory); "executing" subtracts the same call with ``max_steps=0``, so
it is the instructions alone.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from llamacpu.core.asm import assemble
from llamacpu.core.interp import run
from llamacpu.core.isa import Program

ADD_LASM = Path(__file__).resolve().parent.parent / "programs" / "add.lasm"

FALLBACK_ADD = """
; "A+B" -> A+B, right to left; w walks the output region once per input symbol so the sum
; (written right to left, ending before w) fits.
start:  lea   a, [IN]
        lea   w, [OUT]
scana:  inc   w
        inc   a
        jne   [a], #'+', scana
        lea   b, [a]
scanb:  inc   w
        inc   b
        jne   [b], #END, scanb
        dec   a
        dec   b
        lea   stop, [IN]
        dec   stop
loop:   mov   x, #0
        peq   t, a, stop
        jnz   t, skipa
        mov   x, [a]
        dec   a
skipa:  mov   y, #0
        jeq   [b], #'+', skipb
        mov   y, [b]
        dec   b
skipb:  dec   w
        add   [w], x, y
        peq   t, a, stop
        jz    t, loop
        jne   [b], #'+', loop
        getc  z
        jz    z, fin
        dec   w
        mov   [w], z
fin:    lea   OUT, [w]
        halt
a:      .ptr  IN
b:      .ptr  IN
w:      .ptr  IN
stop:   .ptr  IN
x:      .data 0
y:      .data 0
z:      .data 0
t:      .data 0
"""


def load_add() -> tuple[Program, str]:
    """The adder to time, and which one it is."""
    if ADD_LASM.exists():
        return assemble(ADD_LASM.read_text(), file=str(ADD_LASM)), "programs/add.lasm"
    return assemble(FALLBACK_ADD, file="<bench fallback add>"), "the fallback adder"


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()  # CPU time: steadier than wall time on a shared machine
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", type=int, default=1000, help="digits of each addend")
    ap.add_argument("--repeats", type=int, default=5, help="runs per row; the best counts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sys.set_int_max_str_digits(max(4300, 2 * args.digits + 10))

    program, which = load_add()
    rng = random.Random(args.seed)
    lo, hi = 10 ** (args.digits - 1), 10 ** args.digits
    a, b = rng.randrange(lo, hi), rng.randrange(lo, hi)
    text = f"{a}+{b}"

    print(f"program: {which}; input: {args.digits}-digit + {args.digits}-digit, "
          f"seed {args.seed}; best of {args.repeats}\n")
    print("| trace | steps | end to end (ms) | instr/s end to end | executing (ms) | "
          "instr/s executing |")
    print("|---|---:|---:|---:|---:|---:|")
    for trace in (False, True):
        repeats = args.repeats if not trace else max(1, args.repeats // 2)
        result = run(program, text, trace=trace)
        if result.output != str(a + b):
            print(f"WRONG ANSWER with trace={trace}: {result.output[:40]}...", file=sys.stderr)
            return 1
        total = best_time(lambda t=trace: run(program, text, trace=t), repeats)
        empty = best_time(lambda t=trace: run(program, text, 0, trace=t, on_limit="stop"),
                          repeats)
        execute = max(total - empty, 1e-9)
        print(f"| {'on' if trace else 'off'} | {result.steps} | {total * 1e3:.2f} | "
              f"{result.steps / total:,.0f} | {execute * 1e3:.2f} | "
              f"{result.steps / execute:,.0f} |")
    print("\nanswers checked against Python int addition: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
