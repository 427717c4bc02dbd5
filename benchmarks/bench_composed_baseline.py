"""The transformer baseline on the composed tasks (expr, chain), trained on llamacpu's stages
expr4 and chain4 for llamacpu's wall time, scored on the problems llamacpu is measured on.

    python benchmarks/bench_composed_baseline.py (--run-dir DIR | --budget SECONDS)
        [--tasks expr,chain] [--ops 1,2,4,8] [--digits 4,20,100] [--n 50] [--seed 0]
        [--splits train,heldout] [--parens any|with|without|both]
        [--combinations any,held_out] [--model transformer|lstm|both] [--threads 1]
        [--json benchmarks/results_composed_baseline.json]

The models are the project's baselines (``llamacpu.evaluate.baselines``, those of ``python
-m llamacpu.bench baselines``), built as ``run_baselines`` builds them: **transformer**, a
decoder-only Llama (RoPE, hidden 64, 2 layers, 4 heads, the MLP width matched to the
controller's parameter count) over ``prompt SEP reversed(answer) EOS``; **lstm**, an LSTM
encoder-decoder of the same parameter count. The controller they are matched to, and the
alphabet and training wordings, are those of the run's checkpoint of the last of the
tasks' stages it holds (``DIR/stage_25`` for chain4, else ``DIR/stage_24`` for expr4), as
``run_baselines`` takes them from its checkpoint; otherwise (``--budget``, or a run
directory without such a checkpoint) the default tiny controller (``ControllerConfig()``),
the default alphabet and the hand-written training templates.

Training: one stage per task, in curriculum order (expr4, then chain4), each for its
seconds, on batches of 32 from ``curriculum.sample_batch(stage, rng, 32, review=0.0,
split=..., alphabet=...)``: the prompts and answers llamacpu's stage draws (the same
generator and wordings, 1-2 operations over numbers of up to 4 digits; never a held-out
prompt and never a held-out combination), AdamW at lr 3e-3 as ``train_baseline``. Review
is 0: the baseline only ever sees the composed stages, while llamacpu's batches there mix
in 25% review of the earlier stages it learned first. The seconds: with ``--run-dir``,
what llamacpu spent on each stage (the last ``time`` its trainer logged for the stage in
``DIR/metrics.jsonl``; a resumed stage counts from its resumption); with ``--budget``,
SECONDS split equally over the stages.

Scoring: one cell per task, split (``--splits``; ``train``: the wordings trained on),
combinations (``--combinations``: any, held_out, trained), parentheses (expr only:
``--parens both``, the default, scores with and without; chain has none), operations
(``--ops``) and digits (``--digits``): the ``--n`` problems of
``draw_examples(task, digits, n, seed, split, ops=ops, parens=parens,
combinations=combinations)``, exactly those of ``python -m llamacpu.eval --checkpoint ...
--task T --ops K --digits D --n N --seed S --split SPLIT --parens P --combinations C``.
Greedy decoding; exact match of the un-reversed answer (``score_baseline``). A cell that
cannot hold its combination (held_out at 1 operation; expr at 2 with parentheses) is
recorded as skipped (``draw_examples`` gives up after 1000·n draws, which takes seconds).

Prints a markdown table on stdout (progress on stderr) and writes JSON: the command, the
seconds per stage, per model its parameters and training steps and seconds, one row per
model and cell (``exact_match`` None and ``skipped`` for a skipped cell; ``parens`` true,
false or null as in ``python -m llamacpu.eval`` rows), python and torch versions.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llamacpu.cli import Parser
from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet, LlamacpuError
from llamacpu.evaluate.baselines import (
    CharVocab,
    LSTMBaseline,
    TransformerBaseline,
    score_baseline,
    train_baseline,
)
from llamacpu.learn.curriculum import STAGES, Stage, parse_stage
from llamacpu.learn.evaluation import COMBINATIONS, draw_examples
from llamacpu.learn.logs import stage_seconds
from llamacpu.learn.tasks import ALL_SPLITS, TASKS, Example, TaskError
from llamacpu.learn.train_config import alphabet_name, resolve_split

STAGE_OF = {"expr": "expr4", "chain": "chain4"}
"""The curriculum stage that trains each composed task."""
SPLITS = ("train", "templates", *(s for s in ALL_SPLITS if s != "train"))
"""``--splits``' choices, as ``python -m llamacpu.eval --split``'s."""
PARENS = {"any": [None], "with": [True], "without": [False], "both": [True, False]}
"""``--parens`` → the expr cells' ``parens``."""
MODELS = {"transformer": ("transformer",), "lstm": ("lstm",), "both": ("transformer", "lstm")}
BATCH, LR = 32, 3e-3
"""Training batch and learning rate: ``train_baseline``'s."""


@dataclass(frozen=True)
class Cell:
    """The problems of one row: ``draw_examples``' arguments besides ``n`` and ``seed``."""

    task: str
    split: str             # as given on the command line ("train": the trained wordings)
    combinations: str      # any, held_out or trained
    parens: bool | None    # expr: with parentheses, without, or either (None); chain: None
    ops: int
    digits: int


@dataclass(frozen=True)
class Matched:
    """What the baselines are sized and written for: a controller's parameter count, its
    alphabet and the split its run trained on."""

    params: int
    alphabet: Alphabet
    config: dict          # the run's checkpoint config ({}: the defaults), for resolve_split
    source: str           # the checkpoint, or "default tiny controller"


# ------------------------------------------------------------------------ the command line


def stage_budget(p: Parser, run_dir: Path, stages: Sequence[Stage]) -> dict[str, float]:
    """{stage name: seconds llamacpu trained it}, from ``run_dir/metrics.jsonl``
    (``logs.stage_seconds``: a stage resumed after an interruption took the sum of its
    runs' times; a line that is not JSON, such as one a running trainer is still writing, is
    passed over)."""
    if not run_dir.is_dir():
        p.error(f"--run-dir {run_dir}: no such directory (a llamacpu training output "
                "directory, holding metrics.jsonl)")
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        p.error(f"--run-dir {run_dir}: no metrics.jsonl there (not a llamacpu training "
                "output directory?); pass --budget SECONDS instead")
    try:
        last = stage_seconds(run_dir)
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        p.error(f"--run-dir {run_dir}: cannot read metrics.jsonl ({e})")
    missing = [f"{s.index} ({s.name})" for s in stages if s.index not in last]
    if missing:
        p.error(f"--run-dir {run_dir}: metrics.jsonl logs no time for stage "
                f"{', '.join(missing)}; pass --budget SECONDS instead")
    return {s.name: last[s.index] for s in stages}


def _parser() -> Parser:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, default=None,
                   help="a llamacpu training output directory (metrics.jsonl): train each "
                        "stage for the seconds llamacpu spent on it")
    p.add_argument("--budget", type=float, default=None,
                   help="total training seconds per model, split equally over the stages "
                        "(instead of --run-dir)")
    p.add_argument("--tasks", default="expr,chain",
                   help=f"comma-separated, out of {', '.join(STAGE_OF)} (their stages: "
                        f"{', '.join(STAGE_OF.values())})")
    p.add_argument("--ops", default="1,2,4,8", help="comma-separated numbers of operations")
    p.add_argument("--digits", default="4,20,100", help="comma-separated operand lengths")
    p.add_argument("--n", type=int, default=50, help="problems per cell")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the drawn problems, the training batches and the inits")
    p.add_argument("--splits", default="train,heldout",
                   help=f"comma-separated prompt wordings, out of {', '.join(SPLITS)} "
                        "(train: those trained on; heldout: hand-written, never trained on)")
    p.add_argument("--parens", choices=tuple(PARENS), default="both",
                   help="expr: with parentheses that change the order, without, either "
                        "(any), or a cell for each of with and without (both, the default)")
    p.add_argument("--combinations", default="any,held_out",
                   help=f"comma-separated, out of {', '.join(COMBINATIONS)}: any problem, "
                        "only those holding the combination training never has, only "
                        "those that do not")
    p.add_argument("--model", choices=tuple(MODELS), default="transformer",
                   help="the baseline(s) to train and score")
    p.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    p.add_argument("--json", type=Path,
                   default=Path("benchmarks/results_composed_baseline.json"),
                   help="where to write the results")
    return p


def parse_args(argv: Sequence[str] | None = None):
    """The command line, checked (a bad flag: one ``error:`` line, exit code 2), with
    ``a.stages`` (the tasks' stages in curriculum order), ``a.budget_seconds`` ({stage
    name: seconds}), ``a.models`` and ``a.cells``."""
    p = _parser()
    a = p.parse_args(argv)
    p.check_threads(a.threads)
    tasks = p.names(a.tasks, "--tasks", tuple(STAGE_OF))
    ops = p.ints(a.ops, "--ops")
    digits = p.ints(a.digits, "--digits")
    splits = p.names(a.splits, "--splits", SPLITS)
    combinations = p.names(a.combinations, "--combinations", COMBINATIONS)
    if a.n < 1:
        p.error(f"--n must be at least 1, got {a.n}")
    for task in tasks:
        try:
            TASKS[task].check_length(max(digits))
        except ValueError as e:
            p.error(f"--digits: {e}")
    a.stages = sorted((STAGES[parse_stage(STAGE_OF[t])] for t in tasks), key=lambda s: s.index)
    if (a.run_dir is None) == (a.budget is None):
        p.error("give exactly one of --run-dir DIR (llamacpu's seconds per stage) and "
                "--budget SECONDS")
    if a.budget is not None:
        if not 0 < a.budget < math.inf:
            p.error(f"--budget must be a positive number of seconds, got {a.budget}")
        a.budget_seconds = {s.name: a.budget / len(a.stages) for s in a.stages}
    else:
        a.budget_seconds = stage_budget(p, a.run_dir, a.stages)
    p.check_out_file(a.json, "--json")
    a.models = MODELS[a.model]
    a.cells = [Cell(task, split, comb, parens, k, d)
               for task in tasks for split in splits for comb in combinations
               for parens in (PARENS[a.parens] if "parens" in TASKS[task].draw_options
                              else [None])
               for k in ops for d in digits]
    return a


# ------------------------------------------------------------------------ the models


def _params(m: nn.Module) -> int:
    return sum(x.numel() for x in m.parameters())


def matched_controller(run_dir: Path | None, stages: Sequence[Stage]) -> Matched:
    """The controller the baselines are sized for (see the module docstring)."""
    if run_dir is not None:
        for s in reversed(stages):
            path = run_dir / f"stage_{s.index}"
            if path.is_dir():
                from llamacpu.learn.evaluation import load_checkpoint_machine

                c, machine = load_checkpoint_machine(path)
                return Matched(_params(machine.controller), machine.alphabet, c.config,
                               str(path))
    from llamacpu.llm.config import ControllerConfig
    from llamacpu.llm.controller import Controller

    return Matched(_params(Controller(ControllerConfig())), DEFAULT_ALPHABET, {},
                   "default tiny controller (ControllerConfig())")


def build(name: str, matched: Matched, seed: int) -> nn.Module:
    """A baseline as ``run_baselines`` builds it, from a seeded init."""
    torch.manual_seed(seed)
    vocab = CharVocab(matched.alphabet)
    cls = {"transformer": TransformerBaseline, "lstm": LSTMBaseline}[name]
    return cls.matching(vocab, matched.params)


def train(model: nn.Module, stages: Sequence[tuple[Stage, float]], seed: int, split: str,
          alphabet: Alphabet, log) -> dict:
    """Train stage by stage, each for its seconds, on ``sample_batch`` with no review
    (``baselines.train_baseline``)."""
    got = train_baseline(model, [(stage.index, seconds) for stage, seconds in stages], seed,
                         BATCH, LR, log=log, alphabet=alphabet, review=0.0, split=split)
    return {"params": _params(model), **got}


# ------------------------------------------------------------------------ scoring


def draw_cells(cells: Sequence[Cell], n: int, seed: int, matched: Matched
               ) -> dict[Cell, list[Example] | str]:
    """Each cell's problems (``draw_examples``, as ``python -m llamacpu.eval`` draws them),
    or why it was skipped."""
    out: dict[Cell, list[Example] | str] = {}
    for c in cells:
        try:
            out[c] = draw_examples(c.task, c.digits, n, seed,
                                   resolve_split(c.split, matched.config),
                                   alphabet=matched.alphabet, ops=c.ops, parens=c.parens,
                                   combinations=c.combinations)
        except TaskError as e:
            if c.combinations == "any":
                raise
            out[c] = str(e)
    return out


def _parens_label(parens: bool | None, task: str) -> str:
    if "parens" not in TASKS[task].draw_options:
        return "-"
    return {None: "any", True: "with", False: "without"}[parens]


def table(rows: Sequence[dict]) -> str:
    out = ["| model | task | split | combinations | parens | ops | digits | problems | "
           "exact match |", "|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        score = "skipped" if r["exact_match"] is None else f"{100 * r['exact_match']:.1f}%"
        out.append(f"| {r['model']} | {r['task']} | {r['split']} | {r['combinations']} | "
                   f"{_parens_label(r['parens'], r['task'])} | {r['ops']} | {r['digits']} | "
                   f"{r['n']} | {score} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        matched = matched_controller(a.run_dir, a.stages)
        train_split = resolve_split("train", matched.config)
        log(f"baselines sized for {matched.source}: {matched.params:,} parameters, "
            f"alphabet {alphabet_name(matched.alphabet)}, trained on split {train_split}")
        problems = draw_cells(a.cells, a.n, a.seed, matched)
        budget = [(s, a.budget_seconds[s.name]) for s in a.stages]
        trained, rows = {}, []
        for name in a.models:
            model = build(name, matched, a.seed)
            log(f"training {name} ({_params(model):,} parameters) for "
                f"{sum(s for _, s in budget):.1f} s over {', '.join(s.name for s, _ in budget)}")
            trained[name] = train(model, budget, a.seed, train_split, matched.alphabet, log)
            for c, exs in problems.items():
                row = {"model": name, "task": c.task, "split": c.split, "ops": c.ops,
                       "digits": c.digits, "parens": c.parens,
                       "combinations": c.combinations}
                if isinstance(exs, str):
                    row.update(n=0, exact_match=None, skipped=exs)
                else:
                    t0 = time.perf_counter()
                    right = score_baseline(model, exs)
                    row.update(n=len(exs), exact_match=right / len(exs),
                               seconds=time.perf_counter() - t0)
                log(json.dumps(row))
                rows.append(row)
    except (LlamacpuError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {
        "command": " ".join(["python", "benchmarks/bench_composed_baseline.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "budget_seconds": a.budget_seconds,
        "budget_from": (f"--budget {a.budget:g}, split equally" if a.budget is not None
                        else str(a.run_dir / "metrics.jsonl")),
        "matched_to": {"controller": matched.source, "params": matched.params,
                       "alphabet": alphabet_name(matched.alphabet),
                       "train_split": train_split},
        "review": 0.0, "batch_size": BATCH, "lr": LR,
        "train": trained, "seed": a.seed, "n": a.n, "rows": rows,
        "python": platform.python_version(), "torch": torch.__version__,
        "threads": a.threads, "machine": platform.machine(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"\nJSON: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
