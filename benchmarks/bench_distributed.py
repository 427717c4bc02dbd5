"""Training throughput: one process vs ``torchrun --nproc-per-node K`` (gloo) on this CPU.

Both runs train the same stage with the same global batch, seed and flags from scratch;
steps/s is measured from ``metrics.jsonl`` between the ``--warmup``-th step and the last
step before the final evaluation, so process start, imports and evaluation are excluded.
Each process uses one thread. Run::

    python benchmarks/bench_distributed.py --stage 2 --steps 40 --batch-size 32 --ranks 2

The two runs alternate (``--repeats`` times each) so that load from other jobs on a
shared machine hits both alike; the table reports each run and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, args: argparse.Namespace) -> float:
    """Steps per second of one training run with ``ranks`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        train = ["-m", "llamacpu.train", "--stage", str(args.stage), "--steps",
                 str(args.steps), "--batch-size", str(args.batch_size), "--seed", "0",
                 "--eval-every", "100000", "--ckpt-every", "100000", "--eval-size", "8",
                 "--out", tmp, "--no-resume", "--no-progress", "--threads", "1"]
        if ranks == 1:
            cmd = [sys.executable, *train]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                   str(ranks), "--master-port", str(_free_port()), *train]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        if len(lines) != args.steps:
            raise SystemExit(f"run with {ranks} rank(s) failed:\n{r.stderr[-3000:]}")
        t = {m["step"]: m["time"] for m in lines}
        last = args.steps - 1  # the last step ends with the final evaluation: left out
        return (last - args.warmup) / (t[last] - t[args.warmup])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out at the start")
    p.add_argument("--batch-size", type=int, default=32, help="global batch")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if not 0 <= args.warmup < args.steps - 2:
        p.error("--warmup must leave at least two timed steps")
    one, many = [], []
    for _ in range(args.repeats):
        one.append(run(1, args))
        many.append(run(args.ranks, args))
    print(f"stage {args.stage}, global batch {args.batch_size}, steps {args.warmup}.."
          f"{args.steps - 1} timed, {os.cpu_count()} CPUs\n")
    print("| processes | steps/s (each run) | median |")
    print("|---|---|---|")
    for n, xs in ((1, one), (args.ranks, many)):
        print(f"| {n} | {', '.join(f'{x:.2f}' for x in xs)} | {statistics.median(xs):.2f} |")
    print(f"\nspeed-up {args.ranks} vs 1: {statistics.median(many) / statistics.median(one):.2f}x")


if __name__ == "__main__":
    main()
