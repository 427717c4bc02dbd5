"""The stage-0 command's time beside a baseline revision's, in one run.

    python benchmarks/bench_stage0.py --baseline REV [--seeds 0,1] [--repeats 1]
        [--json benchmarks/results_stage0_time.json]

README's first command, ``python -m llamacpu.train --stage 0``, run as a user runs it (a
fresh process, a fresh output directory) from this checkout and from ``REV`` checked out in
a temporary git worktree, alternating (baseline, current) for every seed and repeat so a
drift of the machine's speed hits both alike. Each run's wall time (process start to exit,
imports included), the step at which stage 0 passed and the trainer's own stage time are
recorded; the report gives per-seed means and the ratio current / baseline. Time it on an
idle machine: the runs use one thread each (the command's default), one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PASSED = re.compile(r"stage 0 \(\w+\): passed at step (\d+).*?, ([0-9.]+) s")


def _run(checkout: Path, seed: int) -> dict:
    """One stage-0 command in ``checkout`` (its own code first on the path)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "llamacpu.train", "--stage", "0", "--seed", str(seed),
               "--out", out]
        env = dict(os.environ, PYTHONPATH=str(checkout))
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    log = (proc.stdout + proc.stderr).replace("\r", "\n")
    m = _PASSED.search(log)
    if proc.returncode != 0 or m is None:
        tail = "\n".join(log.strip().splitlines()[-5:])
        raise SystemExit(f"bench_stage0: the stage-0 command failed in {checkout} "
                         f"(exit {proc.returncode}):\n{tail}")
    return {"seed": seed, "wall_s": round(wall, 2), "passed_at_step": int(m.group(1)),
            "stage_s": float(m.group(2))}


def _summary(rows: list[dict]) -> dict:
    def mean(key: str) -> float:
        return round(sum(r[key] for r in rows) / len(rows), 2)

    return {"wall_s": mean("wall_s"), "stage_s": mean("stage_s"),
            "passed_at_step": sorted({r["passed_at_step"] for r in rows})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="git revision to compare with")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (0 is the default "
                    "command's)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per seed and checkout")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results_stage0_time.json")
    a = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        print(f"bench_stage0: --seeds takes comma-separated integers, got {a.seeds!r}",
              file=sys.stderr)
        return 2
    base_rev = subprocess.run(["git", "rev-parse", "--verify", a.baseline + "^{commit}"],
                              cwd=ROOT, capture_output=True, text=True)
    if base_rev.returncode != 0:
        print(f"bench_stage0: --baseline {a.baseline!r} is not a commit of this repository",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base),
                        base_rev.stdout.strip()], cwd=ROOT, check=True)
        try:
            rows: dict[str, list[dict]] = {"baseline": [], "current": []}
            for seed in seeds:
                for _ in range(a.repeats):
                    for name, checkout in (("baseline", base), ("current", ROOT)):
                        r = _run(checkout, seed)
                        rows[name].append(r)
                        print(f"{name:8s} seed {seed}: passed at step {r['passed_at_step']}, "
                              f"stage {r['stage_s']:.1f} s, command {r['wall_s']:.1f} s",
                              flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    per_seed = {}
    for seed in seeds:
        b = _summary([r for r in rows["baseline"] if r["seed"] == seed])
        c = _summary([r for r in rows["current"] if r["seed"] == seed])
        per_seed[str(seed)] = {"baseline": b, "current": c,
                               "ratio_wall": round(c["wall_s"] / b["wall_s"], 3)}
    b, c = _summary(rows["baseline"]), _summary(rows["current"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    report = {
        "command": "python -m llamacpu.train --stage 0 --seed S",
        "baseline": a.baseline, "baseline_commit": base_rev.stdout.strip(),
        "current_commit": head, "seeds": seeds, "repeats": a.repeats,
        "per_seed": per_seed, "ratio_wall": round(c["wall_s"] / b["wall_s"], 3),
        "runs": rows, "python": platform.python_version(), "cpu_count": os.cpu_count(),
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"current / baseline wall time: {report['ratio_wall']:.3f} "
          f"({c['wall_s']:.1f} s / {b['wall_s']:.1f} s); wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
