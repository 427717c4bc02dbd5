"""The in-context op as curriculum stages: weight-token channel on (fmap5) vs off (fmap5_data).

Trains stage ``fmap5`` (the controller's plan emits the whole program, its WEIGHTS
slot decoded by the weight head) and stage ``fmap5_data`` (the same problem, the
function emitted as ten DATA slots by the plan's value head) with the normal trainer
(``llamacpu.train``), the same budget each, from scratch or from a given checkpoint; then
runs the hard machine free (emitted program, neural OEU, learned execute phase) on
held-out FUNCTIONS (never trained on) at each payload length and prints exact match side
by side with the times.

    python benchmarks/bench_fmap.py --from checkpoints/stage_11 --steps 400
    python benchmarks/bench_fmap.py --steps 400                     # from scratch

The work directory (``--out``) holds one trainer output directory per variant (a copy of
``--from`` in it, never the original), so a re-run resumes and only evaluates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from llamacpu.learn import checkpoint as ckpt
from llamacpu.learn.curriculum import parse_stage
from llamacpu.learn.evaluation import draw_examples, solve_examples
from llamacpu.learn.learned import LearnedMachine
from llamacpu.learn.trainer import TrainConfig
from llamacpu.train import main as train_main

VARIANTS = (("channel on (WEIGHTS slot, APPLY)", "fmap5", "fmap"),
            ("channel off (DATA slots)", "fmap5_data", "fmap_data"))


def _train(stage: int, out: Path, args) -> tuple[float, int]:
    cfg = TrainConfig(stages=(stage,), out=out, steps=args.steps, seed=args.seed,
                      eval_every=args.eval_every, eval_size=args.eval_size,
                      answer_every=args.answer_every, threads=1, progress=False,
                      retention_size=0, competence=args.competence,
                      review=args.review if args.review is not None
                      else (None if args.source else 0.0))
    t0 = time.time()
    code = train_main(cfg)
    return time.time() - t0, code


def _evaluate(model: LearnedMachine, task: str, digits: int, n: int, seed: int) -> dict:
    examples = draw_examples(task, digits, n, seed=seed, alphabet=model.alphabet)
    t0 = time.time()
    ok = sum(s.output == e.answer and s.fault is None
             for e, s in solve_examples(model, examples, batch=100))
    return {"exact": ok / n, "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", type=Path, default=None,
                    help="a checkpoint directory (e.g. checkpoints/stage_11) to start both "
                         "variants from (copied; default: from scratch)")
    ap.add_argument("--out", type=Path, default=Path("bench_fmap_runs"),
                    help="work directory (one trainer --out per variant)")
    ap.add_argument("--steps", type=int, default=400, help="training steps per variant")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-size", type=int, default=100,
                    help="held-out prompts per competence check during training")
    ap.add_argument("--answer-every", type=int, default=0,
                    help="steps between soft answer-loss terms (0: off, the default here: "
                         "a soft run of a 5-digit fmap costs seconds on a CPU)")
    ap.add_argument("--review", type=float, default=None,
                    help="batch fraction from earlier stages (default: the stage's with "
                         "--from, 0 from scratch)")
    ap.add_argument("--competence", type=float, default=None,
                    help="exact match that passes the stage's check (default: the stage's, "
                         "0.99); 1.0 trains on until the whole check is right or the budget")
    ap.add_argument("--n", type=int, default=200, help="held-out functions per length")
    ap.add_argument("--digits", default="5,100", help="payload lengths to evaluate")
    ap.add_argument("--variants", default="on,off", help="which variants: on, off or on,off")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        lengths = [int(x) for x in args.digits.split(",")]
    except ValueError:
        print(f"error: --digits must be comma-separated integers, got {args.digits!r}",
              file=sys.stderr)
        return 2
    if args.source is not None and not args.source.is_dir():
        print(f"error: --from {args.source}: no such checkpoint directory", file=sys.stderr)
        return 2
    chosen = {"on": VARIANTS[0], "off": VARIANTS[1]}
    try:
        variants = [chosen[v.strip()] for v in args.variants.split(",")]
    except KeyError:
        print(f"error: --variants takes on, off or on,off; got {args.variants!r}",
              file=sys.stderr)
        return 2
    rows = []
    for name, stage_name, task in variants:
        stage = parse_stage(stage_name)
        out = args.out / stage_name
        out.mkdir(parents=True, exist_ok=True)
        if args.source is not None and not (out / args.source.name).exists():
            shutil.copytree(args.source, out / args.source.name)
        train_s, code = _train(stage, out, args)
        c = ckpt.load_checkpoint(ckpt.find_latest(out, stage))
        model = LearnedMachine.from_checkpoint(c).eval()
        row = {"variant": name, "stage": stage_name, "steps": c.step, "passed": c.passed,
               "train_s": round(train_s, 1)}
        for d in lengths:
            r = _evaluate(model, task, d, args.n, seed=args.seed + 1000 + d)
            row[f"exact_{d}"], row[f"eval_s_{d}"] = r["exact"], r["seconds"]
            print(json.dumps({"variant": name, "digits": d, **r}), flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    head = " | ".join(f"{d} digits" for d in lengths)
    print(f"\n| variant | stage | steps | {head} | train time | eval time |")
    print("|---|---|---:|" + "---:|" * len(lengths) + "---:|---:|")
    for r in rows:
        cells = " | ".join(f"{100 * r[f'exact_{d}']:.1f}%" for d in lengths)
        ev = " + ".join(f"{r[f'eval_s_{d}']:.0f} s" for d in lengths)
        print(f"| {r['variant']} | {r['stage']} | {r['steps']} | {cells} | "
              f"{r['train_s']:.0f} s | {ev} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
