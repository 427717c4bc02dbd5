"""Evaluate a trained machine, running free: ``python -m llamacpu.eval``.

    python -m llamacpu.eval --checkpoint checkpoints/stage_3 --task add --digits 1,5,20,100,1000

For each length, fresh problems (drawn from a separate seed; ``--split heldout`` also uses
wordings training never saw) are compiled by the controller and run on the machine with the
neural OEU and the learned execute phase; nothing symbolic takes part. Problems are
written in the checkpoint's alphabet (a run trained with ``--alphabet printable`` is asked
capitalised wordings and payloads of any printable character).
Prints exact match and wall time per length as a markdown table on stdout; a progress bar
(problems solved, per length) and notes go to stderr (``--quiet``: no bar). A task the
checkpoint's stages never trained (``fib`` and ``gcd`` are in no curriculum stage, so no
checkpoint has) is still evaluated, with a one-line note on stderr that the machine never
trained on it. The command line of :func:`llamacpu.learn.evaluation.evaluate_lengths`
(loading, drawing, running and scoring live in that module; this one re-exports them).

``--protocol chomsky`` follows the Chomsky-hierarchy benchmark's test protocol
(``learn.evaluation.CHOMSKY``): by default every length 41..500, per-token accuracy and
exact match per length, and the benchmark's score (per-token accuracy averaged over the
lengths); ``--json`` ends with a summary line holding ``meta``, ``--plot PATH`` draws both
against length (docs/testing.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from llamacpu.cli import Parser, add_verbosity, progress, setup_logging
from llamacpu.core.isa import LlamacpuError
from llamacpu.evaluate.report import protocol_plot, protocol_table, trained_tasks
from llamacpu.learn.curriculum import STAGES, trained_stages
from llamacpu.learn.evaluation import (
    PROTOCOLS,
    alphabet_of,
    calibrate_abstention,
    draw_examples,
    evaluate_lengths,
    load_checkpoint_machine,
    load_learned,
    protocol_summary,
    solve_examples,
)
from llamacpu.learn.tasks import ALL_SPLITS, TASKS
from llamacpu.learn.train_config import resolve_split

__all__ = ["load_learned", "solve_examples", "draw_examples", "evaluate_lengths", "main"]

EVAL_SPLITS = ("train", "templates", *(s for s in ALL_SPLITS if s != "train"))
"""``--split``'s choices: the tasks' splits, ``train`` meaning the wordings the checkpoint
trained on, and ``templates`` the hand-written training templates (``train`` of a run on
templates, a part of ``grammar_train``)."""


def _table(rows: list[dict]) -> str:
    out = ["| task | digits | problems | exact match | cannot compile | machine steps (max) "
           "| wall time |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        task = r["task"] + (f" ({r['ops']} ops)" if "ops" in r else "") + (
            {True: ", parentheses", False: ", no parentheses"}.get(r.get("parens"), ""))
        out.append(f"| {task} | {r['length']} | {r['n']} | {100 * r['exact_match']:.1f}% | "
                   f"{r['abstained']} | {r['max_machine_steps']:,} | {r['seconds']:.1f} s |")
    return "\n".join(out)


class _Counted:
    """A model whose ``solve`` advances a progress bar by the prompts it solved (and runs
    compiled where the tables are certified, with ``--compiled``)."""

    def __init__(self, model, bar, compiled: bool = False) -> None:
        self.model, self.bar, self.compiled = model, bar, compiled
        self.alphabet = alphabet_of(model)  # the problems are drawn in it

    def solve(self, prompts, *args, **kwargs):
        if self.compiled:
            kwargs["compiled"] = True
        out = self.model.solve(prompts, *args, **kwargs)
        self.bar.update(len(prompts))
        return out


def _untrained_note(task: str, stage: int, stages: list[int] | None = None) -> str | None:
    """The note for a task the checkpoint's stages (``stages``, default 0..``stage``) never
    trained, else None."""
    trained = trained_tasks(stage, trained=stages)
    if task in trained:
        return None
    staged = any(s.task == task for s in STAGES)
    return (f"note: the machine never trained on {task}: checkpoint stage {stage} trained "
            f"{', '.join(trained)}" + ("" if staged else f"; {task} is in no curriculum stage")
            + " (expect exact match near 0)")


def _lengths(p: Parser, text: str, flag: str = "--digits") -> list[int]:
    """``--digits`` (or ``flag``): comma-separated lengths and ranges ``low-high`` (both
    ends included)."""
    out: list[int] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            lo, hi = (int(part), int(part)) if not dash or not low else (int(low), int(high))
        except ValueError:
            p.error(f"{flag} must be comma-separated numbers or ranges like 41-500, got "
                    f"{text!r}")
        if lo < 1 or hi < lo:
            p.error(f"{flag} must list numbers of at least 1 (ranges low-high), got {text!r}")
        out += range(lo, hi + 1)
    if not out:
        p.error(f"{flag} must list numbers of at least 1, got {text!r}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m llamacpu.eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoints/stage_N dir")
    unstaged = [t for t in TASKS if not any(s.task == t for s in STAGES)]
    p.add_argument("--task", action="append",
                   help=f"one of {', '.join(TASKS)} (default add; repeat the flag or give a "
                        "comma list for several); a checkpoint knows the tasks of its "
                        "stages and earlier ones (python -m llamacpu.train --list)"
                   + (f"; {', '.join(unstaged)}: in no curriculum stage, so never trained"
                      if unstaged else ""))
    p.add_argument("--protocol", default=None,
                   help=f"a benchmark's test protocol: {', '.join(PROTOCOLS)} (chomsky: "
                        "Delétang et al., ICLR 2023: lengths 41..500, per-token accuracy "
                        "averaged over them; docs/testing.md)")
    p.add_argument("--digits", default=None,
                   help="operand lengths (digits, items or characters): comma-separated, "
                        "ranges like 41-500 allowed (default 1,5,20,100,1000; with "
                        "--protocol, its test lengths: chomsky 41-500)")
    p.add_argument("--ops", default=None,
                   help="composed tasks (expr, chain): numbers of operations, comma-separated "
                        "(e.g. 1,2,4,8); default: the task's own draw (1 or 2)")
    p.add_argument("--parens", choices=("any", "with", "without"), default="any",
                   help="expr: expressions with parentheses that change the order, without "
                        "any, or either (default any)")
    p.add_argument("--combinations", choices=("any", "held_out", "trained"), default="any",
                   help="expr, chain: only problems that hold the combination training never "
                        "had (held_out), only those that do not (trained), or any (default; "
                        "docs/lasm.md)")
    p.add_argument("--stride", type=int, default=1,
                   help="keep every STRIDE-th of those lengths (e.g. 10 with --protocol "
                        "chomsky: 41, 51, ..., 491, on a CPU)")
    p.add_argument("--n", type=int, default=None,
                   help="problems per length (default 20; with --protocol chomsky 10, where "
                        "the paper scored 512)")
    p.add_argument("--wordings", type=int, default=None, metavar="K",
                   help="--n problems in each of K wordings of --split (a seeded sample; all "
                        "of them when it has fewer), not --n in all: each JSON row then has "
                        "every wording's exact match and the worst")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn problems")
    p.add_argument("--split", default="train",
                   help=f"prompt wordings: {', '.join(EVAL_SPLITS)} (train: those the "
                        "checkpoint trained on, grammar_train for a run with --wordings "
                        "grammar; templates: the hand-written training templates, whatever "
                        "the run trained on; heldout: hand-written, never trained on; "
                        "recombined, new_words, new_frames: the task's grammar, "
                        "docs/wordings.md)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    p.add_argument("--json", action="store_true",
                   help="print JSON lines instead of a table (with --protocol: then a "
                        "summary line with the score and meta)")
    p.add_argument("--plot", type=Path, default=None,
                   help="write a PNG: per-token accuracy and exact match against length, one "
                        "line per task, the trained range shaded")
    p.add_argument("--compiled", action="store_true",
                   help="run a prompt on its certified tables (the same answers, far faster); "
                        "a prompt whose tables are not certified runs on the neural machine "
                        "(docs/certify.md)")
    p.add_argument("--abstain-below", type=float, default=None, metavar="T",
                   help="do not run a plan whose confidence is below T (in [0, 1]): it counts "
                        "as cannot compile, in each row's 'abstained' (docs/wordings.md)")
    p.add_argument("--calibrate", type=float, default=None, metavar="RATE",
                   help="score nothing: print the confidence threshold at which the machine "
                        "declines at most RATE (in [0, 1)) of the drawn problems (tasks it "
                        "knows, in held-out wordings: --split recombined); then measure it "
                        "with --abstain-below on another --seed")
    add_verbosity(p)
    a = p.parse_args(argv)
    log = setup_logging(a.verbose, a.quiet)
    p.check_threads(a.threads)
    tasks = list(dict.fromkeys(t.strip() for flag in (a.task or ["add"])
                               for t in flag.split(",") if t.strip()))
    for task in tasks or [""]:
        if task not in TASKS:
            p.error(f"--task {task!r} is not a task: choose from {', '.join(TASKS)}")
    if a.protocol is not None and a.protocol not in PROTOCOLS:
        p.error(f"--protocol {a.protocol!r} is not a protocol: choose from "
                f"{', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS.get(a.protocol)
    if a.split not in EVAL_SPLITS:
        p.error(f"--split must be one of {', '.join(EVAL_SPLITS)}, got {a.split!r}")
    ops_list: list[int | None] = [None]
    if a.ops is not None:
        ops_list = list(_lengths(p, a.ops, "--ops"))
    parens = {"any": None, "with": True, "without": False}[a.parens]
    for task in tasks:
        takes = TASKS[task].draw_options
        if a.ops is not None and "ops" not in takes:
            p.error(f"--ops: task {task} has no operation count (tasks with one: "
                    f"{', '.join(t for t in TASKS if 'ops' in TASKS[t].draw_options)})")
        if a.combinations != "any" and "ops" not in takes:
            p.error(f"--combinations: task {task} holds no combination out (tasks that do: "
                    f"{', '.join(t for t in TASKS if 'ops' in TASKS[t].draw_options)})")
        if parens is not None and "parens" not in takes:
            p.error(f"--parens: task {task} has no parentheses (tasks with them: "
                    f"{', '.join(t for t in TASKS if 'parens' in TASKS[t].draw_options)})")
    if a.digits is not None:
        lengths = _lengths(p, a.digits)
    else:
        lengths = list(protocol.lengths) if protocol else [1, 5, 20, 100, 1000]
    if a.stride < 1:
        p.error(f"--stride must be at least 1, got {a.stride}")
    lengths = lengths[::a.stride]
    for task in tasks:
        try:
            TASKS[task].check_length(max(lengths))
        except ValueError as e:
            p.error(f"--digits: {e}")
    n = a.n if a.n is not None else 10 if protocol else 20
    if n < 1:
        p.error(f"--n must be at least 1, got {n}")
    if a.wordings is not None and (a.wordings < 1 or protocol or a.calibrate is not None):
        p.error(f"--wordings must be at least 1, with no --protocol or --calibrate, got "
                f"{a.wordings}")
    if a.abstain_below is not None and not 0.0 <= a.abstain_below <= 1.0:
        p.error(f"--abstain-below must be in [0, 1], got {a.abstain_below}")
    if a.calibrate is not None and not 0.0 <= a.calibrate < 1.0:
        p.error(f"--calibrate must be a rate in [0, 1), got {a.calibrate}")
    if a.calibrate is not None and (protocol or a.abstain_below is not None or a.plot):
        p.error("--calibrate scores nothing: it takes no --protocol, --abstain-below or "
                "--plot")
    if a.plot is not None:
        p.check_out_file(a.plot, "--plot")
    if not a.checkpoint.is_dir():
        p.error(f"--checkpoint {a.checkpoint}: no such checkpoint directory")
    torch.set_num_threads(a.threads)
    try:
        c, model = load_checkpoint_machine(a.checkpoint)
        a.split = resolve_split(a.split, c.config)
        for task in tasks:
            note = _untrained_note(task, c.stage, trained_stages(c))
            if note:
                log.warning(note)
        if a.calibrate is not None:
            examples = [e for task in tasks for length in lengths
                        for e in draw_examples(task, length, n, a.seed, a.split,
                                               alphabet=alphabet_of(model))]
            cal = calibrate_abstention(model, examples, a.calibrate)
            cal.update(split=a.split, seed=a.seed, lengths=lengths, n=n)
            print(json.dumps({"calibration": cal}) if a.json else
                  f"threshold {cal['threshold']:.6g}: declines {cal['abstained']} of "
                  f"{cal['prompts']} prompts ({', '.join(tasks)}; split {a.split}, seed "
                  f"{a.seed}); use --abstain-below {cal['threshold']:.6g}")
            return 0
        emit = (lambda r: print(json.dumps(r), flush=True)) if a.json else None
        rows = []
        for task in tasks:
            cells = [(ops, length) for ops in ops_list for length in lengths]
            each = n if a.wordings is None else n * min(a.wordings, len(
                TASKS[task].templates(a.split, alphabet_of(model))))
            with progress(each * len(cells), f"eval {task}", "problem", a.quiet) as bar:
                for ops, length in cells:  # one cell at a time: each draws from its own seed
                    bar.set_postfix_str(f"length {length}" + (f", {ops} ops" if ops else ""))
                    rows += evaluate_lengths(_Counted(model, bar, a.compiled), task, [length],
                                             n, a.seed, a.split, log=emit,
                                             sub_batch=(protocol.sub_batch if protocol
                                                        else 64),
                                             uniform=protocol is not None and protocol.uniform,
                                             abstain_below=a.abstain_below, ops=ops,
                                             parens=parens, combinations=a.combinations,
                                             wordings=a.wordings)
        summary = protocol_summary(rows, protocol) if protocol else None
        if a.plot is not None:
            protocol_plot(rows, a.plot, f"{a.checkpoint} (stage {c.stage}), {n} problems per "
                          f"length, seed {a.seed}" + (f", protocol {protocol.name}"
                                                      if protocol else ""),
                          trained_tasks(c.stage, trained=trained_stages(c)))
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    runner = getattr(model, "_compiled", None)
    if a.compiled and runner is not None:
        log.info(f"compiled: {runner.stats.compiled} prompts on certified tables, "
                 f"{runner.stats.neural} on the neural machine")
    if summary is not None and a.json:
        print(json.dumps({"protocol": protocol.name, "summary": summary,
                          "meta": _meta(a, argv, n, lengths)}), flush=True)
    elif summary is not None:
        print(protocol_table(rows, summary))
    elif not a.json:
        print(_table(rows))
        for r in rows:
            if r["failures"]:
                print(f"failures at {r['task']} {r['length']}: {r['failures']}")
    if a.plot is not None:
        log.info(f"wrote {a.plot}")
    return 0


def _meta(a, argv: Sequence[str] | None, n: int, lengths: list[int]) -> dict:
    """What a protocol's JSON summary records of its run, as the JSON files under
    benchmarks/ do."""
    import platform

    return {"command": " ".join(["python -m llamacpu.eval",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "checkpoint": str(a.checkpoint), "seed": a.seed, "n": n, "split": a.split,
            "lengths": lengths, "compiled": a.compiled, "torch": torch.__version__,
            "threads": a.threads, "python": platform.python_version(),
            "machine": platform.machine()}


if __name__ == "__main__":
    sys.exit(main())
