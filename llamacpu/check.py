"""Property checks of a trained machine with hypothesis: ``python -m llamacpu.check``.

    python -m llamacpu.check --checkpoint checkpoints/stage_5 --task add --max-digits 40
    python -m llamacpu.check --report --checkpoint checkpoints/stage_5

The first form draws ``--examples`` inputs of ``--min-digits..--max-digits`` with
``llamacpu.evaluate.testing.task_examples`` (carry and borrow chains, equal operands, leading zeros,
sorted/reversed/constant lists, repeated or palindromic text), runs the machine free on all
of them, and prints the pass rate per length, the smallest failing input hypothesis
shrinks to and the first step where the machine's trace departs from the expert program's.
Exit status: 0 every example passed, 1 a counterexample was found, 2 bad input.

``--report`` does that for every task the checkpoint was trained on, at input lengths
from 1 to 10× the longest trained length (and 1000 digits for add, sub and cmp), at least
``--examples`` per task, and writes a markdown table and a PNG plot (training range
shaded) to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llamacpu.core.isa import LlamacpuError
from llamacpu.learn.curriculum import STAGES
from llamacpu.learn.tasks import TASKS

__all__ = ["trained_tasks", "report_lengths", "run_report", "main"]

LONG = 1000
"""The extra length of the report for linear-time arithmetic (digits)."""
LONG_TASKS = ("add", "sub", "cmp")
LONG_EXAMPLES = 3
"""Examples at :data:`LONG` digits: a 1000-digit add takes about 20 s of machine time. They
are plain uniform operands (no edge cases, not hypothesis's all-zero first example)."""


def trained_tasks(stage: int, stages=STAGES) -> dict[str, int]:
    """{task: longest trained length} over the stages up to ``stage``, in curriculum order."""
    out: dict[str, int] = {}
    for s in stages[: stage + 1]:
        out[s.task] = max(out.get(s.task, 0), s.max_length)
    return out


def report_lengths(task: str, trained: int) -> list[int]:
    """Lengths 1 .. 10 × ``trained`` on a roughly geometric grid (every length up to the
    trained one), plus :data:`LONG` for linear-time arithmetic; capped at the task's limit."""
    top = 10 * trained
    grid = set(range(1, trained + 1))
    x = float(trained)
    while x < top:
        x *= 1.35
        grid.add(min(top, round(x)))
    grid.add(top)
    if task in LONG_TASKS:
        grid.add(LONG)
    cap = TASKS[task].max_length
    return sorted(n for n in grid if cap is None or n <= cap)


@dataclass(frozen=True)
class TaskReport:
    task: str
    trained: int
    check: object  # testing.CheckReport


def run_report(machine, stage: int, examples: int = 1000, seed: int = 0,
               log=print) -> list[TaskReport]:
    """The length table of every trained task (see the module docstring)."""
    from llamacpu.evaluate.testing import check_learned

    out = []
    for task, trained in trained_tasks(stage).items():
        lengths = report_lengths(task, trained)
        short = [n for n in lengths if n != LONG]
        per = math.ceil(examples / len(short))
        plan = {n: per for n in short}
        if LONG in lengths:
            plan[LONG] = LONG_EXAMPLES
        rep = check_learned(machine, task, lengths=plan, seed=seed, log=log,
                            shrink_seconds=60, plain_from=LONG)
        out.append(TaskReport(task, trained, rep))
        log(rep.describe())
    return out


def report_markdown(reports: list[TaskReport], checkpoint: str, seconds: float) -> str:
    """One row per length, one column per task (exact match, examples)."""
    lengths = sorted({b.length for r in reports for b in r.check.buckets})
    head = "| length | " + " | ".join(f"{r.task} (trained ≤ {r.trained})" for r in reports) + " |"
    rows = [head, "|---:|" + "---:|" * len(reports)]
    for n in lengths:
        cells = []
        for r in reports:
            b = next((b for b in r.check.buckets if b.length == n), None)
            cells.append("" if b is None else f"{100 * b.rate:.1f}% ({b.n})")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    totals = " | ".join(f"{r.check.passed}/{r.check.n}" for r in reports)
    rows.append(f"| **all** | {totals} |")
    text = [f"Exact match of the machine running free, per input length "
            f"(digits, items or characters; examples in brackets). Checkpoint `{checkpoint}`, "
            f"{sum(r.check.n for r in reports)} hypothesis examples, {seconds:.0f} s.", "",
            "\n".join(rows), ""]
    for r in reports:
        c = r.check.counterexample
        text.append(f"- **{r.task}**: " + ("no counterexample" if c is None else
                                           "smallest counterexample " + _one_line(c)))
    return "\n".join(text) + "\n"


def _one_line(c) -> str:
    e = c.example
    s = f"`{e.prompt}` → `{c.got}` (expected `{e.answer}`)"
    if c.fault:
        s += f", {c.fault}"
    if c.divergence is not None:
        d = c.divergence
        s += f"; first divergence at step {d.step} ({d.field})"
    return s


def report_plot(reports: list[TaskReport], path: Path, title: str) -> None:
    """Exact match vs length, one panel per task, the training range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(reports)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], reports):
        xs = [b.length for b in r.check.buckets]
        ys = [100 * b.rate for b in r.check.buckets]
        ax.axvspan(0.8, r.trained + 0.2, color="tab:green", alpha=0.15, label="trained")
        ax.plot(xs, ys, "o-", ms=3)
        ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_title(r.task)
        ax.set_xlabel(TASKS[r.task].unit)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact match (%)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def _default_checkpoint() -> Path | None:
    from llamacpu.learn.checkpoint import find_latest

    return find_latest(Path("checkpoints"))


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(prog="python -m llamacpu.check", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="a stage_N checkpoint directory "
                   "(--report: default the latest in checkpoints/)")
    p.add_argument("--task", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--min-digits", type=int, default=1,
                   help="shortest input (digits, items or characters)")
    p.add_argument("--max-digits", type=int, help="longest input (default: --min-digits)")
    p.add_argument("--examples", type=int, default=1000,
                   help="hypothesis examples (per task with --report)")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed: same seed, same run")
    p.add_argument("--split", default="train", help="prompt wordings: train or heldout")
    p.add_argument("--report", action="store_true",
                   help="the length-generalisation report of every trained task")
    p.add_argument("--out", type=Path, default=Path("docs"),
                   help="--report: directory for check_report.md and check_report.png")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)

    if a.examples < 1:
        p.error(f"--examples must be at least 1, got {a.examples}")
    if a.split not in ("train", "heldout"):
        p.error(f"--split must be one of train, heldout, got {a.split!r}")
    if not a.report:
        if a.checkpoint is None:
            p.error("--checkpoint is required (or use --report)")
        if a.task is None or a.task not in TASKS:
            p.error(f"--task must be one of {', '.join(TASKS)}, got {a.task!r}")
        hi = a.min_digits if a.max_digits is None else a.max_digits
        cap = TASKS[a.task].max_length
        if not 1 <= a.min_digits <= hi or (cap is not None and hi > cap):
            allowed = "at least 1" if cap is None else f"in 1..{cap}"
            p.error(f"--min-digits and --max-digits must be {allowed} with min <= max, "
                    f"got {a.min_digits}..{hi}")
    elif a.task is not None:
        p.error("--task does not go with --report (the report covers every trained task)")
    if a.checkpoint is not None and not a.checkpoint.is_dir():
        p.error(f"--checkpoint {a.checkpoint}: no such checkpoint directory")

    torch.set_num_threads(a.threads)
    from llamacpu.evaluate.testing import check_learned
    from llamacpu.learn import checkpoint as ckpt
    from llamacpu.learn.learned import LearnedMachine

    try:
        path = a.checkpoint or _default_checkpoint()
        if path is None:
            p.error("--report: no checkpoint in checkpoints/; pass --checkpoint DIR")
        c = ckpt.load_checkpoint(path)
        machine = LearnedMachine.from_checkpoint(c).eval()
        start = time.time()
        if a.report:
            reports = run_report(machine, c.stage, a.examples, a.seed,
                                 log=lambda s: print(s, flush=True))
            a.out.mkdir(parents=True, exist_ok=True)
            md = report_markdown(reports, str(path), time.time() - start)
            (a.out / "check_report.md").write_text(md)
            report_plot(reports, a.out / "check_report.png",
                        f"llamacpu {path}: exact match vs input length (shaded: trained)")
            print(md)
            print(f"wrote {a.out / 'check_report.md'} and {a.out / 'check_report.png'}")
            return 0 if all(r.check.ok for r in reports) else 1
        rep = check_learned(machine, a.task, min_length=a.min_digits, max_length=a.max_digits,
                            examples=a.examples, seed=a.seed, split=a.split)
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(rep.describe())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
