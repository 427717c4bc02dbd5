"""The length-generalisation report of ``python -m llamacpu.check --report``.

For every task the checkpoint was trained on, :func:`run_report` checks the machine at input
lengths from 1 to 10× the longest trained length (and 1000 digits for add, sub and cmp),
at least ``examples`` per task; :func:`report_markdown` and :func:`report_plot` write the
markdown table and the PNG plot (training range shaded). The baselines are scored on the
same lengths.

``python -m llamacpu.eval --protocol`` prints :func:`protocol_table` and draws
:func:`protocol_plot` (per-token accuracy and exact match against length, one line per
task) from the evaluation core's rows (``learn.evaluation.evaluate_lengths``,
``protocol_summary``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llamacpu.learn.curriculum import trained_tasks
from llamacpu.learn.tasks import TASKS

__all__ = ["LONG", "trained_tasks", "report_lengths", "TaskReport", "run_report",
           "report_markdown", "report_plot", "protocol_table", "protocol_plot"]

LONG = 1000
"""The extra length of the report for linear-time arithmetic (digits)."""
LONG_TASKS = ("add", "sub", "cmp")
LONG_EXAMPLES = 3
"""Examples at :data:`LONG` digits: a 1000-digit add takes about 20 s of machine time. They
are plain uniform operands (no edge cases, not hypothesis's all-zero first example)."""


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
    check: object  # properties.CheckReport


def run_report(machine, stage: int, examples: int = 1000, seed: int = 0,
               log=print, stages: Sequence[int] | None = None) -> list[TaskReport]:
    """The length table of every trained task (see the module docstring): those of
    ``stages`` (a checkpoint's ``curriculum.trained_stages``; None: every stage up to
    ``stage``)."""
    from llamacpu.evaluate.properties import check_learned

    out = []
    for task, trained in trained_tasks(stage, trained=stages).items():
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
    """Exact match vs length, one panel per task, the training range shaded; the title is
    wrapped to the figure's width (never cut off), lengths are plain numbers."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    n = len(reports)
    width = max(3.2 * n, 4.5)                                  # inches
    fig, axes = plt.subplots(1, n, figsize=(width, 3.0), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, r in zip(axes[0], reports):
        xs = [b.length for b in r.check.buckets]
        ys = [100 * b.rate for b in r.check.buckets]
        ax.axvspan(0.8, r.trained + 0.2, color="tab:green", alpha=0.15, label="trained")
        ax.plot(xs, ys, "o-", ms=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_ylim(-3, 103)
        ax.set_title(r.task)
        ax.set_xlabel(TASKS[r.task].unit)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact match (%)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(textwrap.fill(title, int(width * 13)), fontsize=9)  # ~13 chars an inch
    fig.savefig(path, dpi=120)
    plt.close(fig)


def protocol_table(rows: list[dict], summary: dict[str, dict]) -> str:
    """Markdown: per-token accuracy and exact match per task and length, then per task the
    score (per-token accuracy averaged over the lengths) and the mean exact match."""
    out = ["| task | length | problems | per-token accuracy | exact match | "
           "machine steps (max) | wall time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['length']} | {r['n']} | "
                   f"{100 * r['per_token_accuracy']:.1f}% | {100 * r['exact_match']:.1f}% | "
                   f"{r['max_machine_steps']:,} | {r['seconds']:.1f} s |")
    out += ["", "| task | lengths | problems | score (per-token, mean over lengths) | "
                "exact match (mean over lengths) |", "|---|---|---:|---:|---:|"]
    for task, s in summary.items():
        span = f"{s['min_length']}..{s['max_length']} ({s['lengths']})"
        out.append(f"| {task} | {span} | {s['problems']} | {100 * s['score']:.1f}% | "
                   f"{100 * s['exact_match']:.1f}% |")
    return "\n".join(out)


def protocol_plot(rows: list[dict], path: Path, title: str,
                  trained: dict[str, int] | None = None) -> None:
    """Per-token accuracy (left) and exact match (right) against length, one line per task;
    a task's training range 1..``trained[task]`` shaded in its colour when known."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = trained or {}
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharey=True, layout="constrained")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lengths = [r["length"] for r in rows]
    for i, task in enumerate(tasks):
        mine = sorted((r for r in rows if r["task"] == task), key=lambda r: r["length"])
        colour = f"C{i % 10}"
        for ax, key in zip(axes, ("per_token_accuracy", "exact_match")):
            ax.plot([r["length"] for r in mine], [100 * r[key] for r in mine], "o-", ms=2.5,
                    color=colour, label=task)
            if task in trained:
                ax.axvspan(0.8, trained[task] + 0.2, color=colour, alpha=0.12,
                           label=f"{task}: trained ≤ {trained[task]}")
    for ax, name in zip(axes, ("per-token accuracy (%)", "exact match (%)")):
        if max(lengths) >= 100 * min(lengths):
            ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_xlabel("length")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
