"""Compiled execution beside the neural run, on the same seeded problems.

    python benchmarks/bench_compiled.py --checkpoint checkpoints/stage_3 [--task add]
        [--digits 100,1000] [--n 5] [--threads 1] [--json benchmarks/results_compiled.json]

For each length: the learned machine running free as ``solve`` runs it (the LM's execute
phase and the neural OEU at every machine step, the batch of ``n`` problems at once), and
``solve(..., compiled=True)`` (llamacpu.learn.compiled: certified prompts run on the
tables they were proven equal to, the others on the neural machine). Both see the same
problems; the script checks that every answer is identical and reports seconds per
problem and the speed-up. Compiled runs first, on a fresh runner, so its time includes the
certificates it has to compute for every new view and program.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--task", default="add")
    ap.add_argument("--digits", default="100,1000", help="comma-separated lengths")
    ap.add_argument("--n", type=int, default=5, help="problems per length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results_compiled.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from llamacpu.learn.compiled import CompiledRunner
    from llamacpu.learn.evaluation import draw_examples, exact, load_learned

    model = load_learned(a.checkpoint)
    rows = []
    for length in [int(x) for x in a.digits.split(",")]:
        examples = draw_examples(a.task, length, a.n, a.seed, "train", alphabet=model.alphabet)
        prompts = [e.prompt for e in examples]
        runner = CompiledRunner(model)
        start = time.perf_counter()
        compiled = runner.solve(prompts)
        t_compiled = time.perf_counter() - start
        start = time.perf_counter()
        neural = model.solve(prompts)
        t_neural = time.perf_counter() - start
        row = {
            "task": a.task, "length": length, "n": a.n,
            "identical": compiled == neural,
            "exact_neural": sum(exact(e, s) for e, s in zip(examples, neural)) / a.n,
            "exact_compiled": sum(exact(e, s) for e, s in zip(examples, compiled)) / a.n,
            "compiled_prompts": runner.stats.compiled, "neural_fallbacks": runner.stats.neural,
            "seconds_per_problem_neural": t_neural / a.n,
            "seconds_per_problem_compiled": t_compiled / a.n,
            "speedup": t_neural / t_compiled,
            "max_machine_steps": max(s.steps for s in neural),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"command": " ".join(["python", "benchmarks/bench_compiled.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "torch": torch.__version__, "threads": a.threads, "python": platform.python_version(),
            "machine": platform.machine(),
            "load_average_1min_at_end": os.getloadavg()[0]}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"JSON: {a.json}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
