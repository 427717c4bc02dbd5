"""The in-context op, channel on vs channel off, trained for the same budget.

Trains a FunctionReader (tiny Llama + metatokens) twice from the same seed — once writing
the prompt's function into a WEIGHTS slot through the weight head (channel on), once
writing it into ten DATA slots (channel off) — then runs the hard machine free on
held-out functions with 5- and 100-digit payloads and prints exact match side by side.

    python benchmarks/bench_incontext.py                 # the README numbers
    python benchmarks/bench_incontext.py --steps 300     # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from llamacpu.learn.incontext import IncontextConfig, evaluate, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="training steps per variant")
    ap.add_argument("--batch", type=int, default=32, help="prompts per step")
    ap.add_argument("--n", type=int, default=200, help="held-out problems per length")
    ap.add_argument("--digits", default="5,100", help="payload lengths to evaluate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--answer-weight", type=float, default=0.0,
                    help="weight of the end-to-end answer loss through the soft machine")
    ap.add_argument("--answer-every", type=int, default=50,
                    help="steps between answer-loss batches (2 prompts each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON line per variant")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        lengths = [int(x) for x in args.digits.split(",")]
    except ValueError:
        print(f"--digits must be comma-separated integers, got {args.digits!r}", file=sys.stderr)
        return 2
    rows = []
    for channel in (True, False):
        cfg = IncontextConfig(channel=channel, steps=args.steps, batch=args.batch,
                              seed=args.seed, answer_weight=args.answer_weight,
                              answer_every=args.answer_every)
        name = "channel on (WEIGHTS slot, APPLY)" if channel else "channel off (DATA slots)"
        t0 = time.time()
        reader = train(cfg, log_every=max(1, args.steps // 10),
                       log=lambda s, name=name: print(f"[{name}] {s}", flush=True))
        t_train = time.time() - t0
        row = {"variant": name, "steps": args.steps, "train_s": round(t_train, 1)}
        for d in lengths:
            t0 = time.time()
            exact, tables = evaluate(reader, d, args.n, seed=1000 + d)
            row[f"exact_{d}"] = exact
            row[f"tables_{d}"] = tables
            row[f"eval_s_{d}"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row) if args.json else row, flush=True)
    print()
    head = "| variant | " + " | ".join(f"{d} digits" for d in lengths) + " | train time |"
    print(head)
    print("|---|" + "---:|" * (len(lengths) + 1))
    for r in rows:
        cells = " | ".join(f"{100 * r[f'exact_{d}']:.1f}%" for d in lengths)
        print(f"| {r['variant']} | {cells} | {r['train_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
