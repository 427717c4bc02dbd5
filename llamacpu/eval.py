"""Evaluate a trained machine, running free: ``python -m llamacpu.eval``.

    python -m llamacpu.eval --checkpoint checkpoints/stage_3 --task add --digits 1,5,20,100,1000

For each length, fresh problems (drawn from a separate seed; ``--split heldout`` also uses
wordings training never saw) are compiled by the controller and run on the machine with the
neural OEU and the learned execute phase; nothing symbolic takes part.
Prints exact match and wall time per length as a markdown table.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from llamacpu.cli import Parser
from llamacpu.core.isa import LlamacpuError
from llamacpu.learn import checkpoint as ckpt
from llamacpu.learn.learned import LearnedMachine
from llamacpu.learn.tasks import SPLITS, TASKS, Example, default_out_size, heldout_key

__all__ = ["load_learned", "draw_examples", "evaluate_lengths", "main"]


def load_learned(path: Path) -> LearnedMachine:
    """The learned machine saved in a checkpoint directory (safetensors + JSON, no pickle)."""
    return LearnedMachine.from_checkpoint(ckpt.load_checkpoint(path)).eval()


def solve_examples(model, examples: Sequence[Example], batch: int):
    """The machine running free on ``examples`` in batches of ``batch``, with a step budget
    from the longest one (:func:`_max_steps`): yields ``(example, Solution)`` in order."""
    budget = _max_steps(examples)
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        sols = model.solve([e.prompt for e in chunk], max_steps=budget,
                           out_sizes=[default_out_size(e) for e in chunk])
        yield from zip(chunk, sols)


def _max_steps(examples: Sequence[Example]) -> int:
    """A generous step budget: the expert's cost grows linearly (quadratically for mul and
    sort) with the length; measure it on the longest example and double it."""
    from llamacpu.core.interp import run
    from llamacpu.learn.tasks import expert_program

    longest = max(examples, key=lambda e: len(e.prompt))
    res = run(expert_program(longest), longest.prompt, 50_000_000,
              out_size=default_out_size(longest))
    return 2 * res.steps + 100


def draw_examples(task: str, length: int, n: int, seed: int = 0,
                  split: str = "train") -> list[Example]:
    """``n`` problems of ``length`` from their own seed; for a task that holds something
    out besides prompts (fmap: functions, ``Task.heldout_key``) only held-out ones."""
    from llamacpu.learn.curriculum import is_heldout

    rng = random.Random(f"eval/{task}/{length}/{seed}")
    keyed = TASKS[task].heldout_key is not None
    out: list[Example] = []
    while len(out) < n:
        ex = TASKS[task].sample(rng, length, split=split)
        if not keyed or is_heldout(heldout_key(ex)):
            out.append(ex)
    return out


def evaluate_lengths(model: LearnedMachine, task: str, lengths: Sequence[int], n: int,
                     seed: int = 0, split: str = "train", batch: int = 64,
                     log=None) -> list[dict]:
    """Exact match of the free-running machine per length, with wall time."""
    rows = []
    for length in lengths:
        examples = draw_examples(task, length, n, seed, split)
        start = time.time()
        correct, steps = 0, 0
        failures = []
        for e, s in solve_examples(model, examples, batch):
            ok = s.output == e.answer and s.fault is None
            correct += ok
            steps = max(steps, s.steps)
            if not ok and len(failures) < 3:
                failures.append(e.prompt if len(e.prompt) < 60 else e.prompt[:57] + "...")
        row = {"task": task, "length": length, "n": n, "exact_match": correct / n,
               "seconds": time.time() - start, "max_machine_steps": steps,
               "failures": failures}
        rows.append(row)
        if log:
            log(row)
    return rows


def _table(rows: list[dict]) -> str:
    out = ["| task | digits | problems | exact match | machine steps (max) | wall time |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['length']} | {r['n']} | {100 * r['exact_match']:.1f}% | "
                   f"{r['max_machine_steps']:,} | {r['seconds']:.1f} s |")
    return "\n".join(out)



def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m llamacpu.eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoints/stage_N dir")
    p.add_argument("--task", default="add", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--digits", default="1,5,20,100,1000",
                   help="comma-separated operand lengths (digits, items or characters)")
    p.add_argument("--n", type=int, default=20, help="problems per length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train",
                   help=f"prompt wordings: {' or '.join(SPLITS)} (heldout: never trained on)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    a = p.parse_args(argv)
    if a.task not in TASKS:
        p.error(f"--task {a.task!r} is not a task: choose from {', '.join(TASKS)}")
    if a.split not in SPLITS:
        p.error(f"--split must be one of {', '.join(SPLITS)}, got {a.split!r}")
    try:
        lengths = [int(x) for x in a.digits.split(",") if x.strip()]
    except ValueError:
        p.error(f"--digits must be comma-separated integers, got {a.digits!r}")
    if not lengths or min(lengths) < 1:
        p.error(f"--digits must list lengths of at least 1, got {a.digits!r}")
    if a.n < 1:
        p.error(f"--n must be at least 1, got {a.n}")
    if not a.checkpoint.is_dir():
        p.error(f"--checkpoint {a.checkpoint}: no such checkpoint directory")
    torch.set_num_threads(a.threads)
    try:
        model = load_learned(a.checkpoint)
        log = (lambda r: print(json.dumps(r), flush=True)) if a.json else None
        rows = evaluate_lengths(model, a.task, lengths, a.n, a.seed, a.split, log=log)
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if not a.json:
        print(_table(rows))
        for r in rows:
            if r["failures"]:
                print(f"failures at {r['length']}: {r['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
