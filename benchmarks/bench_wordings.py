"""How training prompts are drawn against how the plan generalises to unseen wordings: an
ablation of filler words on the plan phase alone (docs/wordings.md).

    python benchmarks/bench_wordings.py [--seeds 0,1] [--variants none,front,anywhere_letters]
        [--steps 4000] [--batch 32] [--lr 3e-3] [--filler 0.5] [--drop 0.25] [--stage 21]
        [--tasks ...]
        [--splits grammar_train,recombined[,new_words]] [--fit-rounds 0] [--fit-steps 250]
        [--ema 0] [--views 0] [--model tiny] [--lora-r 0] [--quant 4bit|8bit] [--threads 1]
        [--from CHECKPOINT] [--json benchmarks/results_wordings.json]

A grammar curriculum's plan phase must emit a task's program for wordings it never saw:
``recombined`` (every part seen, never in that combination) and ``new_words``
(``llamacpu/learn/wordings.py``). The full curriculum takes hours per seed; this bench
isolates the plan. Per seed and variant: ``torch.manual_seed(seed)``, a fresh controller as
``python -m llamacpu.train`` builds it (``TrainConfig().model_config()``), Adam (``--lr``)
on the plan loss alone (``Controller.plan_loss``, teacher-forced, the expert's plans:
``compiling.plan_program``), its rate falling from ``--lr`` to a tenth on a cosine, for
``--steps`` steps of ``--batch`` prompts: every task the
curriculum has trained by ``--stage`` (default 21: the 18 tasks of stages 0-21, fmap's
stages being the first without a grammar), each prompt's task uniform, drawn by the stage
that trains it last (``curriculum.sample_batch``, no review) in the grammar's training
wordings (``grammar_train``, as ``train --wordings grammar``); the same prompts for every
variant of a seed. Variants, what ``--filler`` of the prompts get
(``supervise._with_filler``):

- ``none``: nothing;
- ``front``: one or two random words of the alphabet's text characters in front (what
  the trainer does);
- ``anywhere``: the same words at a word boundary anywhere in the wording (its start, end,
  any space; the whole prompt for number and digit-list tasks, the text before the
  payload for the others);
- ``front_letters``, ``anywhere_letters``: as ``front`` and ``anywhere`` with words of
  lower-case letters only (no operator, bracket or other symbol, which in a request mean
  something);
- ``front_drop``: as ``front``, and first ``--drop`` of the prompts lose one word of their
  wording (word dropout: a word of lower-case letters, when the wording has two or more,
  so that no verb, prefix or ending carries the task alone); a deletion that makes a
  held-out wording (recombined, new words, hand-written held-out) is not made.

``--fit-rounds R`` then does what ``train --certify-all-views`` does before a stage may
pass: up to R rounds of checking the plan of every training view and, while some are wrong,
``--fit-steps`` more steps at the rate's last value with up to a quarter of each batch
replaying the wrong views (the JSON's ``fit``: each round's count); so the bench tells
whether a plan right on every training view is right on the unseen wordings too.
``--views N`` scores a seeded sample of N views per task and split instead of every view
(the same views for every controller and seed): a pretrained controller emits a plan in
about a second on a CPU, and ``new_words`` has 63,000 views of add, sub and cmp alone.
``--model smollm2-135m --lora-r 8 --quant 4bit`` trains a pretrained controller's plan the
same way (its LoRA adapter and heads; the base frozen, as ``train --model`` does), for the
tiny controller's numbers beside a pretrained prior's on the same prompts.
``--ema D`` scores (and fit-checks) the exponential moving average of the weights, decay D
per step (``torch.optim.swa_utils``), instead of the weights as last trained.
``--from CHECKPOINT`` trains a curriculum checkpoint's controller instead of a fresh one
(its model and view; ``--stage`` at most the checkpoint's, ``--model`` and the LoRA flags
ignored) and scores it before too (the JSON's ``start``): the probe of the curriculum's
closing review (``train``'s stage ``review``, docs/training.md), which goes on from a
trained machine at a tenth of the rate under a slow average.

Scored: per task and split of ``--splits`` (``new_words`` has ~128,000 views, ten
minutes of emitting), the plan on every view of the split's
wordings (``controller_tables.every_view``: one prompt per view the controller's prompt
view can show, so no sample is missing a wording), exact when the emitted program is the
expert's slot for slot (what the stage certificate checks); with the wordings that have a
wrong view. Writes JSON with the configuration, per-seed training time and loss, and the
per-task scores; prints a markdown table (wrong views per split, each seed).
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from llamacpu.cli import Parser
from llamacpu.learn.compiling import is_composed, plan_program
from llamacpu.learn.controller_tables import every_view
from llamacpu.learn.curriculum import STAGES, sample_batch, trained_tasks
from llamacpu.learn.supervise import _with_filler
from llamacpu.learn.tasks import GRAMMAR_SPLITS, TASKS, render
from llamacpu.learn.train_config import TrainConfig
from llamacpu.llm.controller import Controller

VARIANTS = {"none": None, "front": ("front", False), "anywhere": ("anywhere", False),
            "front_letters": ("front", True), "anywhere_letters": ("anywhere", True),
            "front_drop": ("front", False)}
DROPPABLE = re.compile(r"[a-z]+[,.!?]?")
"""A word word-dropout may delete: lower-case letters, maybe one punctuation mark after
(never an operand, an operator symbol, a bracket or a payload's ':')."""
SPLITS = ("grammar_train", "recombined", "new_words")
EMIT_BATCH = 64


def bench_tasks(stage: int) -> list[str]:
    """The tasks trained by ``stage`` that have a grammar and enumerable views (not the
    composed ones, not fmap's)."""
    return [t for t in trained_tasks(stage) if TASKS[t].grammar is not None
            and not is_composed(t) and not t.startswith("fmap")]


def last_stage(task: str, stage: int):
    return [s for s in STAGES[: stage + 1] if s.task == task][-1]


def training_prompts(tasks: Sequence[str], stage: int, seed: int, count: int, alphabet,
                     part: str = "train"):
    """``count`` training examples, each task uniform, drawn as the stage that trains it
    last draws them (no review) in the grammar's training wordings (``part`` names the
    stream: the same seed and part draw the same prompts)."""
    rng = random.Random(f"bench_wordings/{part}/{seed}")
    stages = {t: last_stage(t, stage) for t in tasks}
    return [sample_batch(stages[rng.choice(tasks)], rng, 1, review=0.0,
                         split="grammar_train", alphabet=alphabet)[0] for _ in range(count)]


@functools.cache
def held_out(task: str, alphabet) -> frozenset:
    """Every wording of ``task`` training must not contain: the grammar's held-out splits
    and the hand-written held-out templates."""
    t = TASKS[task]
    return frozenset(t.heldout_templates).union(*(t.templates(s, alphabet)
                                                  for s in GRAMMAR_SPLITS))


def with_dropped_word(ex, rng: random.Random):
    """``ex`` with one of its wording's letter words (:data:`DROPPABLE`) deleted, if the
    wording has at least two: word dropout, so that no single word (a verb, a prefix, an
    ending) carries the task alone. The program reads no word, so the answer and the plan
    stay; a wording so made that is held out (:func:`held_out`) is not used (``ex``
    stays as it is): training never sees a held-out wording."""
    words = ex.template.split(" ")
    can = [i for i, w in enumerate(words) if DROPPABLE.fullmatch(w)]
    if len(can) < 2:
        return ex
    i = rng.choice(can)
    template = " ".join(words[:i] + words[i + 1:])
    if template in held_out(ex.task, ex.alphabet):
        return ex
    return replace(ex, template=template,
                   prompt=render(template, TASKS[ex.task].operands, ex.operands))


def with_filler(examples, variant: str, share: float, seed: int, drop: float = 0.0):
    """``examples`` as ``variant`` has them: ``share`` of them with filler words; a
    ``_drop`` variant first deletes a word (:func:`with_dropped_word`) in ``drop`` of them."""
    spec = VARIANTS[variant]
    if variant.endswith("_drop"):
        dropper = random.Random(f"bench_wordings/drop/{seed}")
        examples = [with_dropped_word(e, dropper) if dropper.random() < drop else e
                    for e in examples]
    if spec is None:
        return list(examples)
    rng = random.Random(f"bench_wordings/filler/{seed}")
    return [_with_filler(e, rng, spec[0], spec[1]) if rng.random() < share else e
            for e in examples]


def trainable(ctl: Controller) -> list:
    """What the optimizer moves: every weight of the tiny controller; of a pretrained one
    the LoRA adapter and the heads (its base is frozen, as in training)."""
    return [p for p in ctl.parameters() if p.requires_grad]


def train(ctl: Controller, examples, batch: int, lr: float, log_every: int = 250,
          ema: AveragedModel | None = None) -> dict:
    opt = torch.optim.Adam(trainable(ctl), lr=lr)
    steps = len(examples) // batch
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine from lr to lr / 10
        opt, lambda k: 0.1 + 0.45 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    ctl.train()
    curve = []
    for k in range(0, len(examples) - batch + 1, batch):
        part = examples[k:k + batch]
        loss, m = ctl.plan_loss([e.prompt for e in part], [plan_program(e) for e in part])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(ctl)
        step = k // batch + 1
        if step % log_every == 0:
            curve.append({"step": step, "loss": loss.item(), "program_acc": m.program_acc})
            print(f"  step {step}: plan loss {loss.item():.4f}, programs exact "
                  f"{m.program_acc:.3f}", flush=True)
    ctl.eval()
    return {"curve": curve}


def fit(ctl: Controller, tasks: Sequence[str], a, seed: int, variant: str, alphabet,
        ema: AveragedModel | None = None) -> list:
    """Up to ``a.fit_rounds`` rounds of what ``train --certify-all-views`` does before a
    stage may pass: the plan of every training view (``grammar_train``); if all are right,
    stop; else ``a.fit_steps`` steps at the schedule's last rate (``lr / 10``) on batches of
    fresh training prompts (the variant's filler) with up to a quarter of the wrong views
    replayed (``Certifier.plan_rows``). With ``ema``, the views are checked on the average
    (which goes on averaging) and the steps train ``ctl``. Returns each round's count of
    wrong training views."""
    rounds = []
    opt = torch.optim.Adam(trainable(ctl), lr=a.lr / 10)
    rng = random.Random(f"bench_wordings/replay/{seed}")
    for r in range(a.fit_rounds + 1):
        judged = ctl if ema is None else ema.module
        wrong = [e for t in tasks for e in wrong_views(judged, t, "grammar_train", alphabet)[1]]
        rounds.append({"round": r, "wrong_training_views": len(wrong)})
        print(f"  fit round {r}: {len(wrong)} training views wrong", flush=True)
        if not wrong or r == a.fit_rounds:
            break
        fresh = with_filler(training_prompts(tasks, a.stage, seed, a.fit_steps * a.batch,
                                             alphabet, part=f"fit{r}"),
                            variant, a.filler, seed + 1000 * (r + 1), a.drop)
        replay = max(1, a.batch // 4)
        ctl.train()
        for k in range(a.fit_steps):
            part = (fresh[k * a.batch: (k + 1) * a.batch - min(replay, len(wrong))]
                    + rng.sample(wrong, min(replay, len(wrong))))
            loss, _ = ctl.plan_loss([e.prompt for e in part], [plan_program(e) for e in part])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(ctl)
        ctl.eval()
    return rounds


def views_of(task: str, split: str, view, alphabet, sample: int = 0) -> list:
    """One prompt per view of ``task``'s ``split`` wordings; with ``sample``, that many of
    them (fewer if there are fewer), the same for every controller and seed."""
    exs = every_view(task, view, (split,), alphabet=alphabet).examples
    if sample and sample < len(exs):
        picked = sorted(random.Random(f"bench_wordings/views/{task}/{split}").sample(
            range(len(exs)), sample))
        exs = [exs[i] for i in picked]
    return exs


@torch.no_grad()
def emitted_views(ctl: Controller, task: str, split: str, alphabet, sample: int = 0):
    """The views of ``task``'s ``split`` wordings (:func:`views_of`) and the plan emitted
    for each."""
    exs = views_of(task, split, ctl.cfg.view, alphabet, sample)
    return exs, [p for i in range(0, len(exs), EMIT_BATCH)
                 for p in ctl.emit([e.prompt for e in exs[i:i + EMIT_BATCH]])]


def wrong_views(ctl: Controller, task: str, split: str, alphabet, sample: int = 0
                ) -> tuple[list, list]:
    """The views scored and those whose emitted plan is not the expert's slot for slot."""
    exs, emitted = emitted_views(ctl, task, split, alphabet, sample)
    return exs, [e for e, p in zip(exs, emitted)
                 if tuple(p.slots) != tuple(plan_program(e).slots)]


def score(ctl: Controller, tasks: Sequence[str], splits: Sequence[str], alphabet,
          sample: int = 0) -> dict:
    out: dict = {}
    for task in tasks:
        for split in splits:
            exs, missed = wrong_views(ctl, task, split, alphabet, sample)
            wrong: dict[str, int] = defaultdict(int)
            for e in missed:
                wrong[e.template] += 1
            wordings = {e.template for e in exs}
            out.setdefault(task, {})[split] = {
                "views": len(exs), "wrong_views": sum(wrong.values()),
                "wordings": len(wordings), "wrong_wordings": len(wrong),
                "examples_of_wrong": sorted(wrong)[:5]}
    return out


def table(rows: Sequence[dict], tasks: Sequence[str], splits: Sequence[str]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    head = "| task | " + " | ".join(f"{v}: {s}" for v in variants for s in splits) + " |"
    lines = [head, "|---" * (1 + len(variants) * len(splits)) + "|"]
    for task in [*tasks, "all"]:
        cells = []
        for v in variants:
            for s in splits:
                per_seed = []
                for r in rows:
                    if r["variant"] != v:
                        continue
                    ts = tasks if task == "all" else [task]
                    w = sum(r["scores"][t][s]["wrong_views"] for t in ts)
                    n = sum(r["scores"][t][s]["views"] for t in ts)
                    per_seed.append(f"{w}/{n}")
                cells.append(", ".join(per_seed))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None):
    """The command line, checked: a bad flag is one ``error:`` line naming it, exit 2."""
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--variants", default="none,front,anywhere_letters",
                    help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=4000, help="Adam steps per seed and variant")
    ap.add_argument("--batch", type=int, default=32, help="training prompts per step")
    ap.add_argument("--lr", type=float, default=3e-3, help="the first step's rate")
    ap.add_argument("--filler", type=float, default=TrainConfig.filler,
                    help="share of training prompts with filler words "
                    f"(default {TrainConfig.filler}, the trainer's)")
    ap.add_argument("--drop", type=float, default=0.25,
                    help="a _drop variant: share of training prompts with a word deleted")
    ap.add_argument("--stage", type=int, default=21,
                    help="the tasks the curriculum has trained by this stage")
    ap.add_argument("--tasks", default=None, help="comma-separated: only these of them")
    ap.add_argument("--splits", default="grammar_train,recombined",
                    help=f"of {', '.join(SPLITS)}")
    ap.add_argument("--views", type=int, default=0,
                    help="score this many views per task and split, a seeded sample, the "
                    "same for every controller (0: every view)")
    ap.add_argument("--fit-rounds", type=int, default=0,
                    help="after training, up to this many rounds of replaying wrong "
                    "training views until every one is right (0: off)")
    ap.add_argument("--fit-steps", type=int, default=250, help="steps per fit round")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="score (and fit-check) an exponential moving average of the "
                    "weights with this decay per step, e.g. 0.999 (0: the weights as trained)")
    ap.add_argument("--model", default="tiny", help="the controller's LM, as train --model: "
                    "tiny, smollm2-135m (after python -m llamacpu.models fetch smollm2-135m), "
                    "a local Hugging Face directory")
    ap.add_argument("--lora-r", type=int, default=0, help="a pretrained model's LoRA rank")
    ap.add_argument("--quant", choices=("4bit", "8bit"), default=None,
                    help="a pretrained model's base in 4 or 8 bits (bitsandbytes)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--from", dest="start", type=Path, default=None,
                    help="a checkpoint directory whose controller trains (default: fresh)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results_wordings.json"))
    a = ap.parse_args(argv)
    a.seeds = ap.ints(a.seeds, "--seeds", 0)
    a.variants = ap.names(a.variants, "--variants", tuple(VARIANTS))
    a.splits = ap.names(a.splits, "--splits", SPLITS)
    if not 0 <= a.stage < len(STAGES):
        ap.error(f"--stage must be in 0..{len(STAGES) - 1}, got {a.stage}")
    a.tasks = bench_tasks(a.stage) if a.tasks is None else ap.names(
        a.tasks, "--tasks", bench_tasks(a.stage))
    if not 0 <= a.ema < 1:
        ap.error(f"--ema must be in [0, 1), got {a.ema}")
    if a.views < 0:
        ap.error(f"--views must be >= 0 (0: every view), got {a.views}")
    if a.fit_rounds < 0:
        ap.error(f"--fit-rounds must be >= 0, got {a.fit_rounds}")
    for flag, value in (("--steps", a.steps), ("--batch", a.batch), ("--fit-steps", a.fit_steps)):
        if value < 1:
            ap.error(f"{flag} must be at least 1, got {value}")
    if not a.lr > 0:
        ap.error(f"--lr must be positive, got {a.lr}")
    if not 0 <= a.filler <= 1:
        ap.error(f"--filler must be in [0, 1], got {a.filler}")
    if not 0 <= a.drop <= 1:
        ap.error(f"--drop must be in [0, 1], got {a.drop}")
    ap.check_threads(a.threads)
    try:
        a.train_config = TrainConfig(model=a.model, lora_r=a.lora_r, quant=a.quant,
                                     wordings="grammar")
    except ValueError as e:  # the trainer's own checks: an unknown or unfetched model, ...
        ap.error(str(e))
    if a.ema and a.model != "tiny":
        ap.error("--ema applies to the tiny controller (the average of a pretrained one "
                 "would copy its base model)")
    ap.check_out_file(a.json, "--json")
    if a.start is not None:
        from llamacpu.learn.checkpoint import CheckpointError, load_checkpoint
        from llamacpu.learn.curriculum import trained_stages

        try:
            ck = load_checkpoint(a.start)
        except (CheckpointError, OSError) as e:
            ap.error(f"--from {a.start}: {e}")
        known = trained_tasks(ck.stage, trained=trained_stages(ck))
        if not set(a.tasks) <= set(known):
            ap.error(f"--from {a.start}: the checkpoint (stage {ck.stage}) never trained "
                     f"{', '.join(t for t in a.tasks if t not in known)}: lower --stage")
    return a


def controller(a, seed: int) -> Controller:
    """The controller a seed trains: fresh (``torch.manual_seed(seed)``) or ``--from``'s."""
    torch.manual_seed(seed)
    if a.start is None:
        return Controller(a.train_config.model_config().controller)
    from llamacpu.learn.evaluation import load_learned

    return load_learned(a.start).controller


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    config = controller(a, 0).cfg
    alphabet = config.alphabet
    tasks = a.tasks
    rows = []
    start = None if a.start is None else score(controller(a, 0).eval(), tasks, a.splits,
                                                alphabet, a.views)
    for seed in a.seeds:
        base = training_prompts(tasks, a.stage, seed, a.steps * a.batch, alphabet)
        for variant in a.variants:
            examples = with_filler(base, variant, a.filler, seed, a.drop)
            ctl = controller(a, seed)
            ema = None if not a.ema else AveragedModel(
                ctl, multi_avg_fn=get_ema_multi_avg_fn(a.ema))
            print(f"seed {seed} {variant}:", flush=True)
            t0 = time.perf_counter()
            trained = train(ctl, examples, a.batch, a.lr, ema=ema)
            if a.fit_rounds:
                trained["fit"] = fit(ctl, tasks, a, seed, variant, alphabet, ema=ema)
            train_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores = score(ctl if ema is None else ema.module.eval(), tasks, a.splits,
                           alphabet, a.views)
            eval_seconds = time.perf_counter() - t0
            rows.append({"seed": seed, "variant": variant, "train_seconds": train_seconds,
                         "eval_seconds": eval_seconds, **trained, "scores": scores})
            summary = ", ".join(
                f"{s} {sum(scores[t][s]['wrong_views'] for t in tasks)}/"
                f"{sum(scores[t][s]['views'] for t in tasks)} wrong" for s in a.splits)
            print(f"  trained in {train_seconds:.0f} s, scored in {eval_seconds:.0f} s: "
                  f"{summary}", flush=True)
    meta = {"command": " ".join(["python", "benchmarks/bench_wordings.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "torch": torch.__version__, "threads": a.threads,
            "python": platform.python_version(), "machine": platform.machine(),
            "seconds": time.perf_counter() - started,
            "load_average_1min_at_start": load_start,
            "load_average_1min_at_end": os.getloadavg()[0]}
    cfg = {k: v for k, v in vars(a).items() if k not in ("json", "train_config")}
    cfg.update(controller=f"TrainConfig(model={a.model!r}, lora_r={a.lora_r}, quant="
               f"{a.quant!r}, wordings='grammar').model_config().controller"
               if a.start is None else f"the controller of {a.start}",
               view=config.view.describe(), optimizer="Adam, cosine to lr / 10",
               loss="Controller.plan_loss", train_split="grammar_train")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    cfg["from"] = None if cfg.pop("start") is None else str(a.start)
    a.json.write_text(json.dumps({"meta": meta, "config": cfg, "rows": rows,
                                  **({} if start is None else {"start": start})}, indent=2)
                      + "\n")
    print()
    before = [] if start is None else [{"variant": "(--from, before)", "scores": start}]
    print(table(before + rows, tasks, a.splits))
    print(f"\nJSON: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
