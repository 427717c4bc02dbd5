"""Seconds per training step of a pretrained controller: the step before and after sharing the
prompt pass, side by side in one process, and the cost of a competence check.

    python benchmarks/bench_smollm2_step.py [--model smollm2-135m] [--lora-r 8]
                                            [--quant 4bit] [--pairs 5] [--threads 2]
                                            [--batch-size 8] [--step-sample 12]
                                            [--json results.json]

One model, one optimizer, stage 0. The steps alternate between

- **before**: the plan loss and the execute loss each run the batch's prompts through the
  LM (``--no-shared-prompt``), the OEU takes one optimizer step per training step
  (``--oeu-steps 1``): the trainer as it was;
- **after**: the batch's distinct prompts run once (``Controller.encode_prefix``; the common
  chat-template prefix once at batch 1), shared by both losses; ``--oeu-steps 8``

so both see the same machine load (alternating A/B, the first pair dropped as warm-up).
Then a competence check on the stage's held-out set: the full set, and the screened check
(``--eval-screen 16``) the trainer now runs for pretrained models, at the same weights.
Prints the mean s/step of each and their ratio, and the load average.
No network: the model must have been fetched (``python -m llamacpu.models fetch smollm2-135m``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from llamacpu.learn import distributed
from llamacpu.learn.curriculum import STAGES, eval_set
from llamacpu.learn.evaluation import evaluate, screened_evaluate
from llamacpu.learn.trainer import TrainConfig, Trainer
from llamacpu.machine.oeu import examples_from_traces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--quant", choices=("4bit", "8bit"), default=None)
    ap.add_argument("--pairs", type=int, default=5, help="before/after step pairs (+1 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--step-sample", type=int, default=12)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    stage = STAGES[0]
    after = TrainConfig(model=a.model, lora_r=a.lora_r, quant=a.quant, batch_size=a.batch_size,
                        step_sample=a.step_sample, shared_prompt=True, oeu_steps=8,
                        threads=a.threads, progress=False, out=Path("/tmp/bench_smollm2_step"))
    before = replace(after, shared_prompt=False, oeu_steps=1)
    trainer = Trainer(after, log=lambda s: None, dist=distributed.from_env("cpu"))
    model = trainer._new_model()
    opt = trainer._optimizer(model)
    replay = examples_from_traces(())
    times: dict[str, list[float]] = {"before": [], "after": []}
    loads = []
    for pair in range(a.pairs + 1):
        for name, cfg in (("before", before), ("after", after)):
            trainer.cfg = cfg
            rng = random.Random(pair)  # the same batch for both halves of a pair
            t0 = time.perf_counter()
            m, replay = trainer._train_step(stage, model, opt, rng, pair, replay)
            dt = time.perf_counter() - t0
            if pair:
                times[name].append(dt)
            print(f"pair {pair} {name:6s} {dt:6.2f} s  plan_loss {m['plan_loss']:.3f} "
                  f"step_loss {m['step_loss']:.3f}", flush=True)
        loads.append(os.getloadavg()[0])
    mean = {k: statistics.mean(v) for k, v in times.items()}
    res = {"model": a.model, "lora_r": a.lora_r, "quant": a.quant, "threads": a.threads,
           "batch_size": a.batch_size, "step_sample": a.step_sample, "s_per_step": mean,
           "steps": times, "speedup": mean["before"] / mean["after"],
           "load_avg_1min": loads}
    print(f"s/step before {mean['before']:.2f}, after {mean['after']:.2f}: "
          f"{res['speedup']:.2f}x (load average {min(loads):.1f}-{max(loads):.1f})")
    if not a.skip_eval:
        held = eval_set(stage, seed=1, size=stage.eval_size)
        t0 = time.perf_counter()
        full = evaluate(model, held, stage.max_steps)
        t_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        check = screened_evaluate(model, held, stage.max_steps, 16, stage.competence)
        t_screen = time.perf_counter() - t0
        res["eval"] = {"full_s": t_full, "full_accuracy": full, "screened_s": t_screen,
                       "screened_solved": check.solved, "screened_best": check.best,
                       "size": len(held), "load_avg_1min": os.getloadavg()[0]}
        print(f"competence check at step {a.pairs * 2 + 2}: full {len(held)} prompts "
              f"{t_full:.1f} s (accuracy {full:.3f}); screened {t_screen:.1f} s "
              f"({check.solved} solved, best possible {check.best:.3f})")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
