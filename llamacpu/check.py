"""Property checks of a trained machine with hypothesis: ``python -m llamacpu.check``.

    python -m llamacpu.check --checkpoint checkpoints/stage_5 --task add --max-digits 40
    python -m llamacpu.check --report --checkpoint checkpoints/stage_5

The first form draws ``--examples`` inputs of ``--min-digits..--max-digits`` with
``llamacpu.evaluate.strategies.task_examples`` (carry and borrow chains, equal operands, leading zeros,
sorted/reversed/constant lists, repeated or palindromic text), runs the machine free on all
of them, and prints the pass rate per length, the smallest failing input hypothesis
shrinks to and the first step where the machine's trace departs from the expert program's.
Exit status: 0 every example passed, 1 a counterexample was found, 2 bad input.

``--report`` does that for every task the checkpoint was trained on, at input lengths
from 1 to 10× the longest trained length (and 1000 digits for add, sub and cmp), at least
``--examples`` per task, and writes a markdown table and a PNG plot (training range
shaded) to ``--out``, by default ``reports/stage_N/`` beside the checkpoint (in the run's
directory: ``checkpoints/reports/stage_N/`` for ``checkpoints/stage_N``; never the tracked
``docs/``). ``--out`` is created and checked writable before any work; the last line says
where the files went.

Results go to stdout; a progress bar (examples run, shrinking candidates included) and
the per-length lines go to stderr (``--quiet``: neither).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from llamacpu.cli import Parser, add_verbosity, progress, setup_logging
from llamacpu.core.isa import LlamacpuError
from llamacpu.evaluate.report import (
    report_lengths,
    report_markdown,
    report_plot,
    run_report,
    trained_tasks,
)
from llamacpu.learn.tasks import TASKS

__all__ = ["trained_tasks", "report_lengths", "run_report", "default_report_dir", "main"]


def _default_checkpoint() -> Path | None:
    from llamacpu.learn.checkpoint import find_latest

    return find_latest(Path("checkpoints"))


REPORTS = "reports"
"""The default ``--report`` output: ``<run dir>/reports/stage_N/`` for ``<run dir>/stage_N``."""


def default_report_dir(checkpoint: Path) -> Path:
    """Where ``--report`` writes without ``--out``: beside the checkpoint, in its run's
    directory (``checkpoints/stage_3`` -> ``checkpoints/reports/stage_3``)."""
    return checkpoint.parent / REPORTS / checkpoint.name


class _Counted:
    """A machine whose runs advance a progress bar by their prompts (hypothesis's
    generation and shrinking both run through ``machine.machine(prompts)``)."""

    def __init__(self, machine, bar) -> None:
        self._inner, self._bar = machine, bar

    def machine(self, prompts):
        self._bar.update(len(prompts))
        return self._inner.machine(prompts)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m llamacpu.check", description=__doc__.splitlines()[0])
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
    p.add_argument("--out", type=Path, default=None,
                   help="--report: directory for check_report.md and check_report.png "
                        f"(default: {REPORTS}/stage_N beside the checkpoint, e.g. "
                        f"checkpoints/{REPORTS}/stage_3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    add_verbosity(p)
    a = p.parse_args(argv)
    log = setup_logging(a.verbose, a.quiet)
    p.check_threads(a.threads)
    if a.out is not None and not a.report:
        p.error("--out goes with --report (the plain check writes nothing)")

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
    from llamacpu.evaluate.properties import check_learned
    from llamacpu.learn.curriculum import trained_stages
    from llamacpu.learn.evaluation import load_checkpoint_machine

    try:
        path = a.checkpoint or _default_checkpoint()
        if path is None:
            p.error("--report: no checkpoint in checkpoints/; pass --checkpoint DIR")
        out = None
        if a.report:  # before any work: a report that cannot be written is not run
            out = p.check_out_dir(a.out if a.out is not None else default_report_dir(path))
        c, machine = load_checkpoint_machine(path)
        start = time.time()
        with progress(None, f"check {a.task or 'report'}", "example", a.quiet) as bar:
            counted = _Counted(machine, bar)
            if a.report:
                reports = run_report(counted, c.stage, a.examples, a.seed, log=log.info,
                                     stages=trained_stages(c))
            else:
                rep = check_learned(counted, a.task, min_length=a.min_digits,
                                    max_length=a.max_digits, examples=a.examples,
                                    seed=a.seed, split=a.split, log=log.info)
        if a.report:
            md = report_markdown(reports, str(path), time.time() - start)
            (out / "check_report.md").write_text(md)
            report_plot(reports, out / "check_report.png",
                        f"llamacpu {path}: exact match vs input length (shaded: trained)")
            print(md)
            print(f"wrote {out / 'check_report.md'} and {out / 'check_report.png'}")
            return 0 if all(r.check.ok for r in reports) else 1
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(rep.describe())
    print(_certificate_line(machine, a.task))
    return 0 if rep.ok else 1


def _certificate_line(machine, task: str) -> str:
    """The OEU certificate of ``task``'s expert program beside the sampled result: what no
    sample can show (every table entry the program can meet, at any length)."""
    from llamacpu.learn.certify import certify_oeu, tasks_domain

    alphabet = machine.cfg.oeu.alphabet
    cert = certify_oeu(machine.oeu, alphabet, tasks_domain([task], alphabet))
    return (cert.summary(alphabet, limit=5) + "\n(plan and execute tables, witnesses: "
            "python -m llamacpu.certify)")


if __name__ == "__main__":
    sys.exit(main())
