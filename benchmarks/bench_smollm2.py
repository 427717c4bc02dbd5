"""SmolLM2-135M alone vs llamacpu with SmolLM2-135M as its controller, on addition.

    python benchmarks/bench_smollm2.py [--checkpoint DIR ...] [--digits 2,3,5,20] [--n 200]
                                       [--seed 0] [--batch 25] [--threads 1]
                                       [--model smollm2-135m] [--skip-alone]
                                       [--json results.json]

Both systems get the SAME seeded problems (``--n`` per length, drawn by
``llamacpu.learn.tasks.TASKS["add"]`` from ``random.Random(f"bench_smollm2/add/{digits}/{seed}")``,
edge cases included: carry chains, equal operands, adding zero, leading zeros).

- **alone**: the pretrained model by itself, greedy decoding (``do_sample=False``), batched
  with left padding. The prompt is a natural question through the model's chat template
  (:func:`llamacpu.models.format_prompt`): ``What is {a}+{b}? Answer with the number
  only.`` with the operands exactly as written. The score is exact match of the FIRST
  integer in the reply (as asked: the number only); the "last integer" column is a lenient
  second reading that forgives an echoed equation ("12 + 34 = 46").
- **llamacpu**: the learned machine of a training checkpoint (``--checkpoint``, trained
  with ``--model smollm2-135m``), loaded with ``LearnedMachine.from_checkpoint``, running
  free (the controller compiles the prompt, the neural OEU computes, the execute phase
  sequences; nothing symbolic). ``--checkpoint`` may be repeated, e.g. to add a
  tiny-controller checkpoint as a reference row. Its prompt is the task wording it was trained on
  (``Example.prompt``, same operands); exact match of the machine's output.

Prints a markdown table (exact match and wall time per length) and writes JSON.
No network: the model must have been fetched (``python -m llamacpu.models fetch smollm2-135m``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from llamacpu.learn.tasks import TASKS, Example
from llamacpu.llm.models import ModelError, format_prompt, load_model

QUESTION = "What is {a}+{b}? Answer with the number only."
_INT = re.compile(r"\d+")


def problems(length: int, n: int, seed: int) -> list[Example]:
    """The seeded addition problems of one length (the same for both systems)."""
    rng = random.Random(f"bench_smollm2/add/{length}/{seed}")
    return [TASKS["add"].sample(rng, length) for _ in range(n)]


def integers(reply: str) -> list[int]:
    """The integers in a reply, in order (digit runs; thousands separators removed)."""
    return [int(x) for x in _INT.findall(re.sub(r"(?<=\d),(?=\d{3})", "", reply))]


def max_new_tokens(tokenizer, length: int) -> int:
    """Room for an echoed equation and the sum: the token count of 'a + b = c' plus slack."""
    eq = f"{'9' * length} + {'9' * length} = 1{'9' * length}"
    return len(tokenizer(eq, add_special_tokens=False).input_ids) + 8


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new: int, batch: int) -> list[str]:
    """Greedy replies, batched (left padding), special tokens stripped."""
    replies = []
    for i in range(0, len(prompts), batch):
        enc = tokenizer(list(prompts[i:i + batch]), return_tensors="pt", padding=True,
                        add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        replies += tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:],
                                          skip_special_tokens=True)
    return replies


def run_alone(model_name: str, sets: dict[int, list[Example]], batch: int) -> list[dict]:
    t0 = time.perf_counter()
    model, tok = load_model(model_name)
    model.eval()
    load_s = time.perf_counter() - t0
    rows = []
    for length, exs in sets.items():
        prompts = [format_prompt(tok, QUESTION.format(a=e.operands[0], b=e.operands[1]))
                   for e in exs]
        t = time.perf_counter()
        replies = generate(model, tok, prompts, max_new_tokens(tok, length), batch)
        secs = time.perf_counter() - t
        first = last = 0
        samples, every = [], []
        for e, r in zip(exs, replies):
            ints = integers(r)
            ok_first = bool(ints) and ints[0] == int(e.answer)
            ok_last = bool(ints) and ints[-1] == int(e.answer)
            first += ok_first
            last += ok_last
            every.append({"operands": list(e.operands), "answer": e.answer, "reply": r,
                          "first_ok": ok_first, "last_ok": ok_last})
            if len(samples) < 3:
                samples.append({"question": QUESTION.format(a=e.operands[0], b=e.operands[1]),
                                "answer": e.answer, "reply": r})
        row = {"system": f"{model_name} alone (greedy)", "digits": length, "n": len(exs),
               "exact_match": first / len(exs), "exact_match_last_int": last / len(exs),
               "seconds": secs, "load_seconds": load_s, "samples": samples, "replies": every}
        print(json.dumps({k: v for k, v in row.items() if k not in ("samples", "replies")}),
              flush=True)
        rows.append(row)
    del model
    return rows


def run_llamacpu(checkpoint: Path, sets: dict[int, list[Example]], batch: int) -> list[dict]:
    from llamacpu.learn.evaluation import load_learned, solve_examples

    t0 = time.perf_counter()
    machine = load_learned(checkpoint)
    load_s = time.perf_counter() - t0
    ctl = machine.cfg.controller
    base = ctl.model
    if getattr(ctl, "lora_r", 0):
        base += f" + LoRA r={ctl.lora_r}"
    if getattr(ctl, "quant", None):
        base += f", {ctl.quant}"
    rows = []
    for length, exs in sets.items():
        t = time.perf_counter()
        correct, samples = 0, []
        for e, s in solve_examples(machine, exs, batch):
            ok = s.output == e.answer and s.fault is None
            correct += ok
            if not ok and len(samples) < 3:
                samples.append({"prompt": e.prompt, "answer": e.answer,
                                "output": s.output, "fault": s.fault})
        secs = time.perf_counter() - t
        row = {"system": f"llamacpu, controller {base}", "digits": length, "n": len(exs),
               "exact_match": correct / len(exs), "exact_match_last_int": None,
               "seconds": secs, "load_seconds": load_s, "checkpoint": str(checkpoint),
               "failures": samples}
        print(json.dumps({k: v for k, v in row.items() if k != "failures"}), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| system | digits | problems | exact match | (last integer) | wall time |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        last = "" if r["exact_match_last_int"] is None else \
            f"{100 * r['exact_match_last_int']:.1f}%"
        out.append(f"| {r['system']} | {r['digits']} | {r['n']} | "
                   f"{100 * r['exact_match']:.1f}% | {last} | {r['seconds']:.1f} s |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, action="append", default=[],
                    help="llamacpu checkpoint dir trained with --model smollm2-135m; repeat "
                         "to compare several (e.g. a tiny-controller baseline); omit to run "
                         "only the model alone")
    ap.add_argument("--model", default="smollm2-135m", help="the model run alone")
    ap.add_argument("--digits", default="2,3,5,20", help="comma-separated operand lengths")
    ap.add_argument("--n", type=int, default=200, help="problems per length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=25, help="rows per generate/solve call")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--skip-alone", action="store_true", help="only the llamacpu half")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results_smollm2.json"),
                    help="where to write the results")
    a = ap.parse_args(argv)
    try:
        lengths = [int(x) for x in a.digits.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--digits must be comma-separated integers, got {a.digits!r}")
    if not lengths or min(lengths) < 1:
        ap.error(f"--digits must list lengths of at least 1, got {a.digits!r}")
    if a.n < 1 or a.batch < 1 or a.threads < 1:
        ap.error("--n, --batch and --threads must be at least 1")
    for c in a.checkpoint:
        if not c.is_dir():
            ap.error(f"--checkpoint {c}: no such checkpoint directory")
    if a.skip_alone and not a.checkpoint:
        ap.error("--skip-alone needs --checkpoint (nothing to run)")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    sets = {L: problems(L, a.n, a.seed) for L in lengths}
    rows: list[dict] = []
    try:
        if not a.skip_alone:
            rows += run_alone(a.model, sets, a.batch)
        for c in a.checkpoint:
            rows += run_llamacpu(c, sets, a.batch)
    except (ModelError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {"command": " ".join(["python", "benchmarks/bench_smollm2.py", *(argv or sys.argv[1:])]),
            "torch": torch.__version__, "threads": a.threads, "seed": a.seed, "n": a.n,
            "machine": platform.processor() or platform.machine(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "question": QUESTION}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print()
    print(table(rows))
    for r in rows:
        for s in r.get("samples", [])[:2]:
            print(f"  {r['digits']} digits: {s['question']!r} -> {s['reply']!r} "
                  f"(answer {s['answer']})")
    print(f"\nJSON: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
