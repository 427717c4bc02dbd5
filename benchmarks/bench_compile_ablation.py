"""The compile head's bounded view against the whole prompt prefix: the ablation of the
compile phase's design choice (docs/lasm.md, "The compile phase").

    python benchmarks/bench_compile_ablation.py [--seeds 0,1] [--variants view,prefix]
        [--steps 400] [--batch 16] [--lr 3e-3] [--filler 0.5] [--ops 1,2,4,8] [--digits 4,20,100]
        [--splits train,heldout] [--forms expr,expr_parens,chain] [--n 50]
        [--numbers zero|raw] [--eval-seed 0] [--threads 1]
        [--json benchmarks/results_compile_ablation.json]

The compile loop (``llamacpu.learn.compiling.compile_main``) asks its policy for one
decision per step; the controller's compile head (``llamacpu.llm.compile_head``) takes it
from the :class:`~llamacpu.learn.compiling.View` it is shown. Two variants of what it is
shown, everything else equal:

- ``view``: the bounded view the head reads in llamacpu: the current token (of a run of
  words, its last ``compiling.WORDS`` words), the stack's top and, until the first push,
  the word run before the token (its last words likewise). A prompt of 8 operations shows
  the views prompts of 1-2 show.
- ``runs``: the same, with each run of words shown whole (``compile_main(..., words=
  None)``): a connector and the clause's words before its number are one token, so a new
  connector makes a new token.
- ``prefix``: the whole prompt up to the current token instead of the word run: ``View(
  prefix, token, top)`` with ``prefix`` all of the prompt's text before the current token,
  every digit run written ``0`` (``--numbers zero``, the default: the head reads a number
  token as ``0`` too, and the prefix then depends on the prompt's structure and wording,
  not on its digits; ``--numbers raw``: as written). The token and the top are those of
  ``runs``. This is the "attend to the whole prompt" alternative: its views grow with the
  number of operations.

The prefix of a decision is rebuilt from ``lex(prompt)`` by counting tokens: the loop
calls the policy once per decision, in order, and every decision but POP (and FINISH,
which ends) moves on to the next token (:func:`prefix_policy` for a running policy,
:func:`prefix_decisions` for the expert's decisions; the test checks that they agree with
the views ``compile_main`` passes).

Per seed and variant: ``torch.manual_seed(seed)``, a fresh tiny ``Controller(
ControllerConfig())``, Adam (``--lr``) on ``ctl.parameters()`` for ``--steps`` steps;
step k's batch is the expert's decisions (``expert_actions``) of ``--batch`` training
prompts, each distinct view once (``compile_loss``), ``--filler`` of them (the trainer's
share) with the trainer's filler words in front, before the first operand or at the end.
The prompts are the same for every variant of a seed (``random.Random(f"bench_compile_ablation/train/{seed}")``): expr or
chain with equal odds, 1-2 operations, 1-4 digits, expr with or without parentheses, in
the training wordings, none in the held-out partition (``is_heldout``) or holding a
held-out combination (``held_out_combination``), as the trainer draws them.

Scored: compile exactness, ``compile_main(prompt, policy) == main_calls(expert_program(
ex))`` (a CompileError is wrong), ``policy`` the head's most likely action on each view
(memoised per view; the logits of the views on the expert's path are computed in batches,
a view's logits not depending on its batch-mates but for rounding), on ``--n`` fresh prompts per cell
from ``draw_examples(task, digits, n, seed=--eval-seed, split=split, ops=ops,
parens=...)``: cells are form (``expr`` without parentheses, ``expr_parens`` with them,
``chain``) × split (the training wordings, the held-out ones) × ops × digits. The same
prompts for every seed and variant. Also per cell: ``decision_acc``, the share of the
expert's decisions the head takes on the expert's own path (teacher-forced), and
exactness on the prompts without the task's held-out combination (``HELD_OUT_COMBINATIONS``:
most expressions of 4-8 operations hold one); per trained view head, its certificate on
the training wordings (``certify_compile(..., combinations="trained")``; the prefix
variant's views are unbounded, nothing to enumerate).

Prints markdown tables (exactness per cell: mean over seeds and per seed) and writes JSON:
the command, the configuration, one training row per (seed, variant) with its seconds,
one row per (seed, variant, cell), and the means. Defaults take about 6 minutes on one
loaded core (the prefix variant's training and scoring most of it); ``--seeds 0 --ops 1,8
--digits 4 --n 20 --steps 80`` about 40 seconds.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llamacpu.cli import Parser
from llamacpu.core.link import main_calls
from llamacpu.learn.compiling import (
    WORDS,
    Action,
    CompileError,
    Decision,
    Kind,
    View,
    certify_compile,
    compile_main,
    expert_actions,
    held_out_combination,
    lex,
)
from llamacpu.learn.curriculum import is_heldout
from llamacpu.learn.evaluation import draw_examples
from llamacpu.learn.supervise import _with_filler
from llamacpu.learn.tasks import TASKS, Example, expert_program, heldout_key
from llamacpu.learn.train_config import TrainConfig
from llamacpu.llm.compile_head import ACTIONS, compile_logits, compile_loss
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.controller import Controller

VARIANTS = ("view", "runs", "prefix")
"""What the compile head reads: the bounded view, the same with whole word runs, or the
whole prompt prefix."""


def _words(variant: str) -> int | None:
    """How much of a word run ``variant``'s views show (``compile_main``'s ``words``)."""
    return WORDS if variant == "view" else None

FORMS = {"expr": ("expr", False), "expr_parens": ("expr", True), "chain": ("chain", None)}
"""Evaluation forms: (task, parens) of ``draw_examples``."""

SPLITS = ("train", "heldout")
NUMBERS = ("zero", "raw")
TRAIN_OPS = (1, 2)
TRAIN_DIGITS = 4


@dataclass(frozen=True)
class Cell:
    """One evaluation cell: ``n`` prompts of a form, split, operation count and length."""

    form: str     # a key of FORMS
    split: str    # "train" or "heldout": the wordings
    ops: int      # operations per prompt
    digits: int   # the longest number's digits


# ------------------------------------------------------------------ the prefix views


def prefixes(prompt: str, numbers: str = "zero") -> list[str]:
    """Each token's prefix (of ``lex(prompt)``, END's last): all of the prompt's text
    before it, every digit run written ``0`` (``numbers="zero"``) or as written
    (``"raw"``)."""
    out, text = [], ""
    for t in lex(prompt):
        out.append(text)
        text += "0" if numbers == "zero" and t.kind is Kind.NUMBER else t.text
    return out


def _moves_on(action: Action) -> bool:
    """Whether the loop goes on to the next token after ``action`` (all but POP; FINISH
    ends the run)."""
    return action.name not in ("POP", "FINISH")


def prefix_policy(prompt: str, policy: Callable[[View], Action], numbers: str = "zero",
                  seen: list[View] | None = None) -> Callable[[View], Action]:
    """A policy for ``compile_main(prompt, ·)`` that asks ``policy`` on the prefix view:
    the bounded view's token and top, and as head the prompt's text before the current
    token. The token is counted: every decision but POP and FINISH moves on. ``seen``
    collects the prefix views asked."""
    texts = prefixes(prompt, numbers)
    index = 0

    def wrapped(view: View) -> Action:
        nonlocal index
        pv = View(texts[index], view.token, view.top, view.opening, view.closing)
        if seen is not None:
            seen.append(pv)
        action = policy(pv)
        if _moves_on(action):  # (past END only for an action compile_main then refuses)
            index = min(index + 1, len(texts) - 1)
        return action

    return wrapped


def prefix_decisions(prompt: str, decisions: Sequence[Decision],
                     numbers: str = "zero") -> list[Decision]:
    """The prefix views of a run's decisions (``expert_actions``' or a trace), in order."""
    texts = prefixes(prompt, numbers)
    index, out = 0, []
    for d in decisions:
        out.append(Decision(View(texts[index], d.view.token, d.view.top, d.view.opening,
                                 d.view.closing), d.action))
        if _moves_on(d.action):
            index += 1
    return out


def variant_decisions(example: Example, variant: str, numbers: str = "zero") \
        -> list[Decision]:
    """The expert's decisions for ``example`` as ``variant`` shows their views."""
    decisions = expert_actions(example, _words(variant))
    return decisions if variant != "prefix" else prefix_decisions(example.prompt, decisions,
                                                                  numbers)


# -------------------------------------------------------------------- the head's policy


class HeadPolicy:
    """The compile head's most likely action on a view, memoised per view: ``prefill``
    computes many views' logits in batches, a call on a view not yet seen computes its own."""

    def __init__(self, controller, batch: int = 256) -> None:
        self.controller, self.batch = controller, batch
        self.memo: dict[View, Action] = {}

    def prefill(self, views: Sequence[View]) -> None:
        todo = list(dict.fromkeys(v for v in views if v not in self.memo))
        for start in range(0, len(todo), self.batch):
            part = todo[start:start + self.batch]
            with torch.no_grad():
                got = compile_logits(self.controller, part).argmax(-1).tolist()
            self.memo.update((v, _action(ACTIONS[g])) for v, g in zip(part, got))

    def __call__(self, view: View) -> Action:
        if view not in self.memo:
            self.prefill([view])
        return self.memo[view]


def _action(name: str) -> Action:
    return Action("PUSH", name[len("PUSH "):]) if name.startswith("PUSH ") else Action(name)


# --------------------------------------------------------------------------- training


def training_examples(seed: int, count: int, filler: float = 0.0) -> list[Example]:
    """``count`` training prompts of 1-2 operations and 1-4 digits in the training
    wordings, as the trainer's stages expr4 and chain4 draw them (never a held-out prompt
    or a held-out combination), a ``filler`` share of them with the trainer's filler words
    (``supervise._with_filler``); the same for every variant of a seed."""
    rng = random.Random(f"bench_compile_ablation/train/{seed}")
    out: list[Example] = []
    while len(out) < count:
        task = rng.choice(("expr", "chain"))
        sizes: dict = {"ops": rng.choice(TRAIN_OPS)}
        if task == "expr":
            sizes["parens"] = rng.random() < 0.5
        ex = TASKS[task].sample(rng, rng.randint(1, TRAIN_DIGITS), split="train", **sizes)
        if not is_heldout(heldout_key(ex)) and not held_out_combination(ex):
            out.append(_with_filler(ex, rng) if rng.random() < filler else ex)
    return out


def train(controller, batches: Sequence[Sequence[Decision]], lr: float) -> dict:
    """Adam on the compile loss, one step per batch of decisions (each distinct view once:
    ``compile_loss``); the last step's loss and accuracy."""
    opt = torch.optim.Adam(controller.parameters(), lr=lr)
    controller.train()
    m: dict = {"compile_loss": float("nan"), "compile_acc": float("nan")}
    for decisions in batches:
        loss, m = compile_loss(controller, [d.view for d in decisions],
                               [d.action for d in decisions])
        opt.zero_grad()
        loss.backward()
        opt.step()
    controller.eval()
    return m


# ------------------------------------------------------------------------- evaluation


@dataclass
class CellSet:
    """A cell's prompts, the expert main program of each, the expert's decisions (views
    of the last words of word runs, and of whole runs), and whether each holds its task's
    held-out combination."""

    cell: Cell
    examples: list[Example]
    expected: list[list[str]]
    decisions: list[list[Decision]]
    held_out: list[bool]
    run_decisions: list[list[Decision]]


def cell_set(cell: Cell, n: int, seed: int) -> CellSet:
    task, parens = FORMS[cell.form]
    examples = draw_examples(task, cell.digits, n, seed, cell.split, ops=cell.ops,
                             parens=parens)
    return CellSet(cell, examples, [main_calls(expert_program(e)) for e in examples],
                   [expert_actions(e) for e in examples],
                   [held_out_combination(e) for e in examples],
                   [expert_actions(e, None) for e in examples])


def evaluate_cell(policy: HeadPolicy, variant: str, s: CellSet, numbers: str) -> dict:
    """Compile exactness on a cell's prompts, the CompileErrors, the share of the
    expert's decisions the head takes on the expert's path, and exactness on the prompts
    without the held-out combination (a decision no training prompt shows: at 4-8
    operations most expressions hold one)."""
    shown = {"view": s.decisions, "runs": s.run_decisions}.get(variant) or [
        prefix_decisions(e.prompt, d, numbers) for e, d in zip(s.examples, s.run_decisions)]
    policy.prefill([d.view for ds in shown for d in ds])
    right = sum(policy(d.view) == d.action for ds in shown for d in ds)
    total = sum(map(len, shown))
    ok, errors = [], 0
    for e, want in zip(s.examples, s.expected):
        p = policy if variant != "prefix" else prefix_policy(e.prompt, policy, numbers)
        try:
            ok.append(compile_main(e.prompt, p, words=_words(variant)) == want)
        except CompileError:
            ok.append(False)
            errors += 1
    others = [x for x, held in zip(ok, s.held_out) if not held]
    return {**asdict(s.cell), "n": len(ok), "exact": sum(ok) / len(ok),
            "compile_errors": errors, "decision_acc": right / total,
            "held_out_combination": sum(s.held_out),
            "exact_without_combination": sum(others) / len(others) if others else None}


# ----------------------------------------------------------------------------- report


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Per variant and cell: exactness mean over seeds and per seed (and on the prompts
    without the held-out combination, None when every prompt holds it)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["form"], r["split"], r["ops"], r["digits"]),
                          []).append(r)
    return [{"variant": v, "form": f, "split": s, "ops": o, "digits": d,
             "exact_mean": statistics.fmean(r["exact"] for r in g),
             "exact_per_seed": {str(r["seed"]): r["exact"] for r in g},
             "decision_acc_mean": statistics.fmean(r["decision_acc"] for r in g),
             "n": g[0]["n"], "held_out_combination": g[0]["held_out_combination"],
             "exact_without_combination_mean": _mean_or_none(
                 r["exact_without_combination"] for r in g)}
            for (v, f, s, o, d), g in groups.items()]


def _mean_or_none(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _pooled(rows: Sequence[dict], key: str, n: Callable[[dict], int]) -> str:
    """The share of prompts right over several cells, each weighted by its ``n(row)``."""
    total = sum(n(r) for r in rows if r[key] is not None)
    return _pct(sum(r[key] * n(r) for r in rows if r[key] is not None) / total
                if total else None)


def tables(summary: Sequence[dict], variants: Sequence[str]) -> str:
    """Exactness by operations (over forms, splits, digits and seeds; all prompts, and
    those without the held-out combination), then per cell."""
    by = {(r["variant"], r["form"], r["split"], r["ops"], r["digits"]): r for r in summary}
    cells = list(dict.fromkeys(k[1:] for k in by))
    ops = sorted({c[2] for c in cells})
    out = ["| variant | prompts | " + " | ".join(f"ops {o}" for o in ops) + " |",
           "|---|---|" + "---:|" * len(ops)]
    for v in variants:
        for which, key, n in (("all", "exact_mean", lambda r: r["n"]),
                              ("without held-out combination",
                               "exact_without_combination_mean",
                               lambda r: r["n"] - r["held_out_combination"])):
            out.append(f"| {v} | {which} | " + " | ".join(
                _pooled([by[(v, *c)] for c in cells if c[2] == o], key, n)
                for o in ops) + " |")
    out += ["", "| form | split | ops | digits | " + " | ".join(
        f"{v} | {v} per seed" for v in variants) + " |",
        "|---|---|---:|---:|" + "---:|---|" * len(variants)]
    for c in cells:
        out.append(f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} | " + " | ".join(
            f"{_pct(by[(v, *c)]['exact_mean'])} | "
            + " / ".join(_pct(x) for x in by[(v, *c)]["exact_per_seed"].values())
            for v in variants) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None = None):
    """The command line, checked: a bad flag is one ``error:`` line naming it, exit 2."""
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--variants", default="view,runs,prefix", help="of view, runs, prefix")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps per seed and variant")
    ap.add_argument("--batch", type=int, default=16, help="training prompts per step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--filler", type=float, default=TrainConfig.filler,
                    help="share of training prompts with the trainer's filler words "
                    f"(default {TrainConfig.filler}, the trainer's)")
    ap.add_argument("--ops", default="1,2,4,8", help="comma-separated operation counts")
    ap.add_argument("--digits", default="4,20,100", help="comma-separated lengths")
    ap.add_argument("--splits", default="train,heldout", help="of train, heldout (wordings)")
    ap.add_argument("--forms", default="expr,expr_parens,chain",
                    help=f"of {', '.join(FORMS)}")
    ap.add_argument("--n", type=int, default=50, help="prompts per cell")
    ap.add_argument("--numbers", default="zero", help="how the prefix shows a number: "
                    "zero (every digit run as 0) or raw (as written)")
    ap.add_argument("--eval-seed", type=int, default=0, help="draw_examples' seed")
    ap.add_argument("--eval-batch", type=int, default=256, help="views per scoring pass")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results_compile_ablation"
                                                      ".json"))
    a = ap.parse_args(argv)
    a.seeds = ap.ints(a.seeds, "--seeds", 0)
    a.variants = ap.names(a.variants, "--variants", VARIANTS)
    a.ops = ap.ints(a.ops, "--ops", 1)
    a.digits = ap.ints(a.digits, "--digits", 1)
    a.splits = ap.names(a.splits, "--splits", SPLITS)
    a.forms = ap.names(a.forms, "--forms", tuple(FORMS))
    if a.numbers not in NUMBERS:
        ap.error(f"--numbers must be one of {', '.join(NUMBERS)}, got {a.numbers!r}")
    for flag, value, least in (("--steps", a.steps, 0), ("--batch", a.batch, 1),
                               ("--n", a.n, 1), ("--eval-batch", a.eval_batch, 1),
                               ("--eval-seed", a.eval_seed, 0)):
        if value < least:
            ap.error(f"{flag} must be at least {least}, got {value}")
    if not a.lr > 0:
        ap.error(f"--lr must be positive, got {a.lr}")
    if not 0 <= a.filler <= 1:
        ap.error(f"--filler must be in [0, 1], got {a.filler}")
    ap.check_threads(a.threads)
    ap.check_out_file(a.json, "--json")
    a.cells = [Cell(f, s, o, d) for f in a.forms for s in a.splits for o in a.ops
               for d in a.digits]
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    sets = [cell_set(c, a.n, a.eval_seed) for c in a.cells]
    training: list[dict] = []
    rows: list[dict] = []
    for seed in a.seeds:
        examples = training_examples(seed, a.steps * a.batch, a.filler)
        for variant in a.variants:
            shown = [variant_decisions(e, variant, a.numbers) for e in examples]
            batches = [[d for ds in shown[k:k + a.batch] for d in ds]
                       for k in range(0, len(shown), a.batch)]
            torch.manual_seed(seed)
            ctl = Controller(ControllerConfig())
            t0 = time.perf_counter()
            m = train(ctl, batches, a.lr)
            train_seconds = time.perf_counter() - t0
            policy = HeadPolicy(ctl, a.eval_batch)
            t0 = time.perf_counter()
            cells = [evaluate_cell(policy, variant, s, a.numbers) for s in sets]
            eval_seconds = time.perf_counter() - t0
            certificate = None if variant != "view" else {
                t: certify_compile(ctl, t, TASKS[t].templates("train"),
                                   combinations="trained").describe()
                for t in ("expr", "chain")}
            training.append({
                "seed": seed, "variant": variant, "steps": len(batches),
                "prompts": len(examples),
                "distinct_views": len({d.view for ds in shown for d in ds}),
                "final_loss": m["compile_loss"], "final_acc": m["compile_acc"],
                "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                "view_certificate": certificate})
            rows += [{"seed": seed, "variant": variant, **c} for c in cells]
            mean = statistics.fmean(c["exact"] for c in cells)
            print(f"seed {seed} {variant}: trained {len(batches)} steps in "
                  f"{train_seconds:.1f} s (last loss {m['compile_loss']:.4f}), "
                  f"exact {_pct(mean)} over {len(cells)} cells in {eval_seconds:.1f} s",
                  flush=True)
    summary = summarise(rows)
    config = {k: v for k, v in vars(a).items() if k not in ("json", "cells")}
    config.update(train_ops=list(TRAIN_OPS), train_digits=f"1-{TRAIN_DIGITS}",
                  train_split="train", optimizer="Adam", controller="ControllerConfig()",
                  prefix="the prompt's text before the current token, digit runs "
                  + ("as 0" if a.numbers == "zero" else "as written"))
    meta = {"command": " ".join(["python", "benchmarks/bench_compile_ablation.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "torch": torch.__version__, "threads": a.threads,
            "python": platform.python_version(), "machine": platform.machine(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": time.perf_counter() - started,
            "load_average_1min_at_start": load_start,
            "load_average_1min_at_end": os.getloadavg()[0]}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"meta": meta, "config": config, "training": training,
                                  "rows": rows, "summary": summary}, indent=2) + "\n")
    print()
    print(tables(summary, a.variants))
    print(f"\nJSON: {a.json}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
