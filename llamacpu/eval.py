"""Evaluate a trained machine, running free: ``python -m llamacpu.eval``.

    python -m llamacpu.eval --checkpoint checkpoints/stage_3 --task add --digits 1,5,20,100,1000

For each length, fresh problems (drawn from a separate seed; ``--split heldout`` also uses
wordings training never saw) are compiled by the controller and run on the machine with the
neural OEU and the learned execute phase; nothing symbolic takes part.
Prints exact match and wall time per length as a markdown table on stdout; a progress bar
(problems solved, per length) and notes go to stderr (``--quiet``: no bar). A task the
checkpoint's stages never trained (``fib``, ``gcd`` and the Chomsky-hierarchy benchmark's
tasks are in no curriculum stage yet, so no checkpoint has) is still evaluated, with a one-line note on stderr that the machine never
trained on it. The command line of :func:`llamacpu.learn.evaluation.evaluate_lengths`
(loading, drawing, running and scoring live in that module; this one re-exports them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from llamacpu.cli import Parser, add_verbosity, progress, setup_logging
from llamacpu.core.isa import LlamacpuError
from llamacpu.evaluate.report import trained_tasks
from llamacpu.learn.curriculum import STAGES
from llamacpu.learn.evaluation import (
    draw_examples,
    evaluate_lengths,
    load_checkpoint_machine,
    load_learned,
    solve_examples,
)
from llamacpu.learn.tasks import SPLITS, TASKS

__all__ = ["load_learned", "solve_examples", "draw_examples", "evaluate_lengths", "main"]


def _table(rows: list[dict]) -> str:
    out = ["| task | digits | problems | exact match | machine steps (max) | wall time |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['length']} | {r['n']} | {100 * r['exact_match']:.1f}% | "
                   f"{r['max_machine_steps']:,} | {r['seconds']:.1f} s |")
    return "\n".join(out)


class _Counted:
    """A model whose ``solve`` advances a progress bar by the prompts it solved (and runs
    compiled where the tables are certified, with ``--compiled``)."""

    def __init__(self, model, bar, compiled: bool = False) -> None:
        self.model, self.bar, self.compiled = model, bar, compiled

    def solve(self, prompts, *args, **kwargs):
        if self.compiled:
            kwargs["compiled"] = True
        out = self.model.solve(prompts, *args, **kwargs)
        self.bar.update(len(prompts))
        return out


def _untrained_note(task: str, stage: int) -> str | None:
    """The note for a task the checkpoint's stages (0..``stage``) never trained, else None."""
    trained = trained_tasks(stage)
    if task in trained:
        return None
    staged = any(s.task == task for s in STAGES)
    return (f"note: the machine never trained on {task}: checkpoint stage {stage} trained "
            f"{', '.join(trained)}" + ("" if staged else f"; {task} is in no curriculum stage")
            + " (expect exact match near 0)")


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m llamacpu.eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoints/stage_N dir")
    unstaged = [t for t in TASKS if not any(s.task == t for s in STAGES)]
    p.add_argument("--task", default="add",
                   help=f"one of {', '.join(TASKS)}; a checkpoint knows the tasks of its "
                        "stages and earlier ones (python -m llamacpu.train --list)"
                   + (f"; {', '.join(unstaged)}: in no curriculum stage, so never trained"
                      if unstaged else ""))
    p.add_argument("--digits", default="1,5,20,100,1000",
                   help="comma-separated operand lengths (digits, items or characters)")
    p.add_argument("--n", type=int, default=20, help="problems per length")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn problems")
    p.add_argument("--split", default="train",
                   help=f"prompt wordings: {' or '.join(SPLITS)} (heldout: never trained on)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--compiled", action="store_true",
                   help="run a prompt on its certified tables (the same answers, far faster); "
                        "a prompt whose tables are not certified runs on the neural machine "
                        "(docs/certify.md)")
    add_verbosity(p)
    a = p.parse_args(argv)
    log = setup_logging(a.verbose, a.quiet)
    p.check_threads(a.threads)
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
        c, model = load_checkpoint_machine(a.checkpoint)
        note = _untrained_note(a.task, c.stage)
        if note:
            log.warning(note)
        emit = (lambda r: print(json.dumps(r), flush=True)) if a.json else None
        rows = []
        with progress(a.n * len(lengths), f"eval {a.task}", "problem", a.quiet) as bar:
            for length in lengths:  # one length at a time: each draws from its own seed
                bar.set_postfix_str(f"length {length}")
                rows += evaluate_lengths(_Counted(model, bar, a.compiled), a.task, [length],
                                         a.n, a.seed, a.split, log=emit)
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    runner = getattr(model, "_compiled", None)
    if a.compiled and runner is not None:
        log.info(f"compiled: {runner.stats.compiled} prompts on certified tables, "
                 f"{runner.stats.neural} on the neural machine")
    if not a.json:
        print(_table(rows))
        for r in rows:
            if r["failures"]:
                print(f"failures at {r['length']}: {r['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
