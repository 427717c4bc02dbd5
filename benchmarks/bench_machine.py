"""Speed of the differentiable machine next to the reference interpreter.

    python benchmarks/bench_machine.py [--batch 1024] [--digits 20] [--soft-batch 8]
                                       [--soft-steps 30] [--mixed-digits 4] [--repeats 3]
                                       [--threads 1] [--seed 0]

Hard mode (the exact discrete path of ``Machine.run_batch``): instructions per second on
``--batch`` rows of ``--digits``-digit additions (programs/add.lasm) and on a mixed batch
(all ten expert programs on random ``--mixed-digits`` operands; and the golden table's
cases, repeated to ``--batch`` rows, whose ``fib 100`` rows run 8,000 steps), next to
``interp.run`` on the same programs and inputs, one after another. Both are timed end to end
(loading memory, running, reading the answers; CPU time of this process, best of
``--repeats``); "machine steps only" leaves out loading and results. Every answer is checked.

Soft mode (attention reads, no gradients): steps per second at ``--soft-batch`` rows, and the
memory bandwidth that achieves: each step streams the whole memory ``[B, N, D]`` three times
through the pointer-read kernel (fetch, direct operands, indirect operands) plus once for the
write (read and written), next to a plain ``Tensor.copy_`` measured in the same run.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from llamacpu.core.golden import GOLDEN, PROGRAM_NAMES, load_program
from llamacpu.core.interp import run
from llamacpu.machine.machine import Machine, MachineConfig


def cpu_time(fn, repeats: int) -> tuple[float, object]:
    """Best CPU time of ``fn()`` over ``repeats`` calls, and its last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def hard_row(name: str, machine: Machine, programs, inputs, repeats: int) -> list[str]:
    """One table row: the same runs on the interpreter and on the machine."""
    t_ref, ref = cpu_time(lambda: [run(p, x) for p, x in zip(programs, inputs)], repeats)
    t_m, res = cpu_time(lambda: machine.run_batch(programs, inputs), repeats)
    assert [r.output for r in res] == [r.output for r in ref], "machine != interpreter"
    instr = sum(r.steps for r in ref)
    assert instr == sum(r.steps for r in res)

    def steps_only():
        d, _ = machine._load_discrete(programs, inputs, None, None)
        t = time.process_time()
        machine._run_discrete(d, 10 ** 9, None)
        return time.process_time() - t

    t_steps = min(steps_only() for _ in range(repeats))
    lockstep = max(r.steps for r in ref)
    return [name, f"{len(programs)}", f"{instr:,}", f"{lockstep:,}",
            f"{instr / t_ref / 1e6:.2f}", f"{instr / t_m / 1e6:.2f}",
            f"{instr / t_steps / 1e6:.2f}", f"{t_ref / t_m:.2f}x",
            f"{t_steps / lockstep * 1e6:.0f}"]


def numbers(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(digits))


def expert_input(name: str, rng: random.Random, digits: int) -> str:
    """A random input in the format of expert program ``name`` (see programs/*.lasm)."""
    a, b = numbers(rng, digits), numbers(rng, digits)
    if name in ("add", "mul", "cmp", "sub", "gcd"):
        if name == "sub" and int(a) < int(b):
            a, b = b, a
        if name == "gcd":  # subtractive: steps grow like max / min, so keep it to 2 digits
            a, b = str(rng.randint(1, 99)), str(rng.randint(1, 99))
        return a + {"add": "+", "mul": "*", "cmp": "?", "sub": "-", "gcd": ","}[name] + b
    if name == "fib":
        return str(rng.randint(0, 30))
    if name in ("copy", "reverse"):
        return "".join(rng.choice("abc xyz,.") for _ in range(2 * digits))
    return numbers(rng, 2 * digits)                                    # sort, max


def soft_rows(machine: Machine, batch: int, digits: int, steps: int, rng: random.Random
              ) -> list[list[str]]:
    add = load_program("add")
    inputs = [f"{numbers(rng, digits)}+{numbers(rng, digits)}" for _ in range(batch)]
    state = machine.load_batch([add] * batch, inputs)
    B, N, D = state.memory.shape
    with torch.no_grad():
        state = machine.run(state, 2, hard=False)                  # warm up
        t = time.perf_counter()
        machine.run(state, steps, hard=False)
        dt = (time.perf_counter() - t) / steps
    mem_bytes = state.memory.numel() * state.memory.element_size()
    read_bytes = 3 * mem_bytes                     # three pointer reads stream all of memory
    traffic = read_bytes + 2 * mem_bytes           # + the write pass: read M, write M'
    src = torch.empty(64 << 20, dtype=torch.uint8)                 # 64 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    copy_bw = src.numel() * 10 / (time.perf_counter() - t)
    return [["soft steps/s", f"B = {B}, N = {N}, D = {D}", f"{1 / dt:.1f}"],
            ["memory per step", f"{mem_bytes / 1e6:.1f} MB x 3 reads",
             f"{read_bytes / 1e6:.1f} MB"],
            ["pointer-read bandwidth", "read bytes / step time",
             f"{read_bytes / dt / 1e9:.2f} GB/s"],
            ["all memory traffic", "3 reads + write (read + write)",
             f"{traffic / dt / 1e9:.2f} GB/s"],
            ["memory copy (Tensor.copy_)", "64 MiB, bytes copied / s", f"{copy_bw / 1e9:.2f} GB/s"]]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1024, help="rows of the hard-mode batches")
    ap.add_argument("--digits", type=int, default=20, help="digits per addend")
    ap.add_argument("--mixed-digits", type=int, default=4, help="operand digits, mixed batch")
    ap.add_argument("--soft-batch", type=int, default=8, help="rows of the soft-mode batch")
    ap.add_argument("--soft-steps", type=int, default=30, help="soft steps to time")
    ap.add_argument("--repeats", type=int, default=3, help="timings per measurement (best)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    machine = Machine(MachineConfig())
    add = load_program("add")
    adds = [f"{numbers(rng, args.digits)}+{numbers(rng, args.digits)}"
            for _ in range(args.batch)]
    cases = [GOLDEN[i % len(GOLDEN)] for i in range(args.batch)]
    names = [PROGRAM_NAMES[i % len(PROGRAM_NAMES)] for i in range(args.batch)]
    mixed = [expert_input(n, rng, args.mixed_digits) for n in names]
    rows = [hard_row(f"add, {args.digits}+{args.digits} digits", machine, [add] * args.batch,
                     adds, args.repeats),
            hard_row(f"mixed: 10 expert programs, {args.mixed_digits}-digit operands", machine,
                     [load_program(n) for n in names], mixed, args.repeats),
            hard_row("mixed: the golden table (fib 100 is a long tail)", machine,
                     [load_program(c.program) for c in cases], [c.input for c in cases],
                     args.repeats)]
    print(f"torch {torch.__version__}, {args.threads} thread(s); instructions/s in millions\n")
    print(table(["hard mode", "rows", "instructions", "lockstep steps", "interpreter",
                 "machine", "machine steps only", "ratio (end to end)", "µs / step"], rows))
    print()
    print(table(["soft mode", "what", "value"],
                soft_rows(machine, args.soft_batch, args.digits, args.soft_steps, rng)))


if __name__ == "__main__":
    main()
