"""SmolLM2-135M alone vs llamacpu with SmolLM2-135M as its controller, on addition and on
the composed tasks (expr, chain).

    python benchmarks/bench_smollm2.py [--checkpoint DIR ...] [--digits 2,3,5,20] [--n 200]
                                       [--seed 0] [--batch 25] [--threads 1]
                                       [--model smollm2-135m] [--skip-alone]
                                       [--json results.json]
    python benchmarks/bench_smollm2.py --task expr --ops 1,2,4,8 --digits 4,20,100 \\
                                       --parens with|without|any [--split train] [--shots 3]
                                       [--n 50] [--checkpoint DIR ...] [--json results.json]
    python benchmarks/bench_smollm2.py --task chain --ops 1,2,4,8 --digits 4,20,100 \\
                                       [--split heldout] [--n 50]

Both systems get the SAME seeded problems.

- ``--task add`` (the default): ``--n`` per length, drawn by
  ``llamacpu.learn.tasks.TASKS["add"]`` from
  ``random.Random(f"bench_smollm2/add/{digits}/{seed}")``, edge cases included: carry
  chains, equal operands, adding zero, leading zeros.
- ``--task expr`` / ``--task chain``: one cell per operation count (``--ops``; default the
  task's own draw, 1 or 2) and length, ``--n`` problems each (default 50) from
  ``llamacpu.learn.evaluation.draw_examples(task, digits, n, seed, split, ops=, parens=)``:
  the problems ``python -m llamacpu.eval --task expr --ops ... --digits ... --n ... --seed
  ... --split ...`` measures a checkpoint on, problem for problem (its ``--split
  templates``, or ``train`` for a checkpoint trained on the hand-written templates; here
  ``train`` is those templates; default alphabet).

- **alone**: the pretrained model by itself, greedy decoding (``do_sample=False``), batched
  with left padding. add asks a natural question: ``What is {a}+{b}? Answer with the
  number only.`` with the operands exactly as written; a composed task asks the example's
  own prompt (its wording), then a new line and ``Answer with the number only.``. Few-shot
  (``--shots K``; default 0 for add, 3 for the composed tasks): K solved examples come
  first as earlier chat turns (the user asks in the same format, the assistant replies
  with Python's answer alone), then the question, all through the model's chat template
  (:func:`few_shot_messages`, :func:`chat_prompt`; "Q:"/"A:" lines for a model without
  one). The shots are the same for every problem of a cell, drawn from a seed of their
  own (``bench_smollm2/shots/{task}/{digits}/{seed}``) in the training templates, by the
  task's own draw (1 or 2 operations; expr with or without parentheses) at
  ``min(digits, 4)`` digits: what llamacpu trains on (at most 2 operations, at most 4
  digits), and short prompts at 100 digits. None has the operands of a test problem. The
  score is exact match of the FIRST integer in the reply (as asked: the number only); the
  "last integer" column is a lenient second reading that forgives an echoed equation
  ("12 + 34 = 46"). A composed reply may run to ``digits + 4 * ops`` digits (the longest
  answer: each operation adds at most 4, every product having a factor of at most 4
  digits) plus 16 tokens.
- **llamacpu**: the learned machine of a training checkpoint (``--checkpoint``, trained
  with ``--model smollm2-135m``), loaded with ``LearnedMachine.from_checkpoint``, running
  free (the controller compiles the prompt, the neural OEU computes, the execute phase
  sequences; nothing symbolic). ``--checkpoint`` may be repeated, e.g. to add a
  tiny-controller checkpoint as a reference row. Its prompt is the task wording it was trained on
  (``Example.prompt``, same operands; no shots); exact match of the machine's output. A
  checkpoint that never trained a task is still run on it (and scores low).

Prints a markdown table (exact match and wall time per cell) and writes JSON (default
``benchmarks/results_smollm2.json``, ``results_smollm2_{task}.json`` for a composed task):
a row per system and cell, with the cell (a composed task's rows: task, digits, ops,
parens, split, shots), exact match, seconds and every reply.
No network: the model must have been fetched (``python -m llamacpu.models fetch smollm2-135m``).
"""

from __future__ import annotations

import json
import platform
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from llamacpu.cli import Parser
from llamacpu.core.isa import LlamacpuError
from llamacpu.learn.evaluation import draw_examples
from llamacpu.learn.tasks import ALL_SPLITS, TASKS, Example
from llamacpu.llm.models import ModelError, format_prompt, load_model

QUESTION = "What is {a}+{b}? Answer with the number only."
ASK = "Answer with the number only."
"""What a composed task's question adds, on a line after the example's prompt."""
COMPOSED = ("expr", "chain")
SHOT_DIGITS = 4
"""The shots have at most this many digits (what llamacpu trains the composed tasks on)."""
ANSWER_SLACK = 16
"""Tokens a composed reply may take beyond its longest possible answer."""
_INT = re.compile(r"\d+")


class Cell(NamedTuple):
    """The problems of one row: a task at one length; a composed task also at a number of
    operations, with or without parentheses, in the wordings of a split; asked after
    ``shots`` solved examples."""

    task: str
    digits: int
    ops: int | None = None      # composed tasks: operations (None: the task's draw, 1 or 2)
    parens: bool | None = None  # expr: with parentheses, without (None: either)
    split: str = "train"        # composed tasks: the wordings of the prompts
    shots: int = 0              # solved examples shown before the question

    def fields(self) -> dict:
        """What a row records of its cell: zero-shot add its digits (its JSON as it
        always was), anything else the whole cell."""
        if self.task == "add" and not self.shots:
            return {"digits": self.digits}
        return {"task": self.task, "digits": self.digits, "ops": self.ops,
                "parens": self.parens, "split": self.split, "shots": self.shots}


class CellSet(NamedTuple):
    """A cell, its test problems and the solved examples shown before each of them."""

    cell: Cell
    examples: list[Example]
    shots: list[Example]


def problems(length: int, n: int, seed: int) -> list[Example]:
    """The seeded addition problems of one length (the same for both systems)."""
    rng = random.Random(f"bench_smollm2/add/{length}/{seed}")
    return [TASKS["add"].sample(rng, length) for _ in range(n)]


def cell_problems(cell: Cell, n: int, seed: int) -> list[Example]:
    """A cell's ``n`` test problems: add's :func:`problems`; a composed task's those of
    ``draw_examples`` for the same arguments, which ``python -m llamacpu.eval`` measures."""
    if cell.task == "add":
        return problems(cell.digits, n, seed)
    return draw_examples(cell.task, cell.digits, n, seed, cell.split, ops=cell.ops,
                         parens=cell.parens)


def draw_shots(cell: Cell, tests: Sequence[Example], seed: int) -> list[Example]:
    """``cell.shots`` solved examples from a seed of their own, distinct, none with the
    operands of a test problem: the task's own draw (a composed task's 1 or 2 operations)
    in the training templates at ``min(digits, SHOT_DIGITS)`` digits. A ValueError when
    the length has too few other problems (add at 1 digit)."""
    length = min(cell.digits, SHOT_DIGITS)
    rng = random.Random(f"bench_smollm2/shots/{cell.task}/{length}/{seed}")
    taken = {e.operands for e in tests}
    out: list[Example] = []
    for _ in range(1000 * cell.shots):
        if len(out) == cell.shots:
            break
        e = TASKS[cell.task].sample(rng, length)
        if e.operands not in taken:
            taken.add(e.operands)
            out.append(e)
    if len(out) < cell.shots:
        raise ValueError(f"{cell.task} at {length} digits: found only {len(out)} of "
                         f"{cell.shots} shots that are not test problems")
    return out


def cell_sets(cells: Sequence[Cell], n: int, seed: int) -> list[CellSet]:
    """Each cell with its test problems and its shots."""
    out = []
    for cell in cells:
        tests = cell_problems(cell, n, seed)
        out.append(CellSet(cell, tests, draw_shots(cell, tests, seed)))
    return out


def question(e: Example) -> str:
    """What the model alone is asked: add's :data:`QUESTION`, a composed task's prompt and
    :data:`ASK` on a line of its own."""
    if e.task == "add":
        return QUESTION.format(a=e.operands[0], b=e.operands[1])
    return f"{e.prompt}\n{ASK}"


def few_shot_messages(shots: Sequence[Example], e: Example) -> list[dict[str, str]]:
    """The chat: per shot a user turn (its question) and an assistant turn (Python's
    answer), then the question of ``e``."""
    msgs = []
    for s in shots:
        msgs += [{"role": "user", "content": question(s)},
                 {"role": "assistant", "content": s.answer}]
    return msgs + [{"role": "user", "content": question(e)}]


def chat_prompt(tokenizer, msgs: Sequence[dict[str, str]]) -> str:
    """The messages through the tokenizer's chat template, ready for the reply; one
    message is :func:`format_prompt`'s user turn (zero-shot add as it always was). Without
    a chat template: "Q: ..."/"A: ..." lines ending in "A:"."""
    if len(msgs) == 1:
        return format_prompt(tokenizer, msgs[0]["content"])
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(msgs), tokenize=False,
                                             add_generation_prompt=True)
    lines = [f"{'Q' if m['role'] == 'user' else 'A'}: {m['content']}" for m in msgs]
    return "\n".join([*lines, "A:"])


def integers(reply: str) -> list[int]:
    """The integers in a reply, in order (digit runs; thousands separators removed)."""
    return [int(x) for x in _INT.findall(re.sub(r"(?<=\d),(?=\d{3})", "", reply))]


def max_new_tokens(tokenizer, length: int) -> int:
    """Room for an echoed equation and the sum: the token count of 'a + b = c' plus slack."""
    eq = f"{'9' * length} + {'9' * length} = 1{'9' * length}"
    return len(tokenizer(eq, add_special_tokens=False).input_ids) + 8


def answer_digits(cell: Cell) -> int:
    """The most digits a composed cell's answer has: each operation adds at most 4 to the
    longest number (a sum 1; every product has a factor of at most 4 digits)."""
    return cell.digits + 4 * (2 if cell.ops is None else cell.ops)


def reply_budget(tokenizer, cell: Cell) -> int:
    """``max_new_tokens`` of a cell: add's :func:`max_new_tokens`; a composed task's the
    tokens of its longest possible answer plus :data:`ANSWER_SLACK`."""
    if cell.task == "add":
        return max_new_tokens(tokenizer, cell.digits)
    longest = "9" * answer_digits(cell)
    return len(tokenizer(longest, add_special_tokens=False).input_ids) + ANSWER_SLACK


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


def score_replies(exs: Sequence[Example], replies: Sequence[str]) -> dict:
    """Exact match of the first and of the last integer of each reply, every reply, and
    three samples."""
    first = last = 0
    samples, every = [], []
    for e, r in zip(exs, replies):
        ints = integers(r)
        ok_first = bool(ints) and ints[0] == int(e.answer)
        ok_last = bool(ints) and ints[-1] == int(e.answer)
        first += ok_first
        last += ok_last
        entry = {"operands": list(e.operands), "answer": e.answer, "reply": r,
                 "first_ok": ok_first, "last_ok": ok_last}
        every.append(entry if e.task == "add" else {"prompt": e.prompt, **entry})
        if len(samples) < 3:
            samples.append({"question": question(e), "answer": e.answer, "reply": r})
    return {"exact_match": first / len(exs), "exact_match_last_int": last / len(exs),
            "samples": samples, "replies": every}


def run_alone(model_name: str, sets: Sequence[CellSet], batch: int) -> list[dict]:
    t0 = time.perf_counter()
    model, tok = load_model(model_name)
    model.eval()
    load_s = time.perf_counter() - t0
    rows = []
    for cell, exs, shots in sets:
        prompts = [chat_prompt(tok, few_shot_messages(shots, e)) for e in exs]
        t = time.perf_counter()
        replies = generate(model, tok, prompts, reply_budget(tok, cell), batch)
        secs = time.perf_counter() - t
        scored = score_replies(exs, replies)
        row = {"system": f"{model_name} alone (greedy)", **cell.fields(), "n": len(exs),
               "exact_match": scored["exact_match"],
               "exact_match_last_int": scored["exact_match_last_int"],
               "seconds": secs, "load_seconds": load_s, "samples": scored["samples"],
               "replies": scored["replies"]}
        if shots:
            row["shown"] = [{"question": question(s), "answer": s.answer} for s in shots]
        print(json.dumps({k: v for k, v in row.items()
                          if k not in ("samples", "replies", "shown")}), flush=True)
        rows.append(row)
    del model
    return rows


def machine_score(machine, exs: Sequence[Example], batch: int) -> tuple[int, list[dict]]:
    """The machine running free on the problems (``solve_examples``): how many it answers
    exactly, and its first three failures."""
    from llamacpu.learn.evaluation import solve_examples

    correct, samples = 0, []
    for e, s in solve_examples(machine, exs, batch):
        ok = s.output == e.answer and s.fault is None
        correct += ok
        if not ok and len(samples) < 3:
            samples.append({"prompt": e.prompt, "answer": e.answer,
                            "output": s.output, "fault": s.fault})
    return correct, samples


def run_llamacpu(checkpoint: Path, sets: Sequence[CellSet], batch: int) -> list[dict]:
    from llamacpu.learn.evaluation import load_learned

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
    for cell, exs, _ in sets:
        t = time.perf_counter()
        correct, samples = machine_score(machine, exs, batch)
        secs = time.perf_counter() - t
        row = {"system": f"llamacpu, controller {base}", **cell._replace(shots=0).fields(),
               "n": len(exs), "exact_match": correct / len(exs), "exact_match_last_int": None,
               "seconds": secs, "load_seconds": load_s, "checkpoint": str(checkpoint),
               "failures": samples}
        print(json.dumps({k: v for k, v in row.items() if k != "failures"}), flush=True)
        rows.append(row)
    return rows


def _cell_label(r: dict) -> str:
    """A row's cell for the table: 'expr (2 ops), parentheses, train, 3-shot'."""
    if r["task"] == "add":
        return f"add, {r['shots']}-shot"
    ops = "1 or 2" if r["ops"] is None else r["ops"]
    parens = {True: ", parentheses", False: ", no parentheses"}.get(r["parens"], "")
    return f"{r['task']} ({ops} ops){parens}, {r['split']}, {r['shots']}-shot"


def table(rows: list[dict]) -> str:
    cells = any("task" in r for r in rows)
    out = ["| system | " + ("cell | " if cells else "") + "digits | problems | "
           "exact match | (last integer) | wall time |",
           "|---|" + ("---|" if cells else "") + "---:|---:|---:|---:|---:|"]
    for r in rows:
        last = "" if r["exact_match_last_int"] is None else \
            f"{100 * r['exact_match_last_int']:.1f}%"
        what = (f"{_cell_label(r) if 'task' in r else 'add'} | " if cells else "")
        out.append(f"| {r['system']} | {what}{r['digits']} | {r['n']} | "
                   f"{100 * r['exact_match']:.1f}% | {last} | {r['seconds']:.1f} s |")
    return "\n".join(out)


def _numbers(p: Parser, text: str, flag: str) -> list[int]:
    """A comma-separated list of numbers of at least 1 (``--digits``, ``--ops``)."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        p.error(f"{flag} must be comma-separated integers, got {text!r}")
    if not out or min(out) < 1:
        p.error(f"{flag} must list numbers of at least 1, got {text!r}")
    return out


def _parser() -> Parser:
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, action="append", default=[],
                    help="llamacpu checkpoint dir trained with --model smollm2-135m; repeat "
                         "to compare several (e.g. a tiny-controller baseline); omit to run "
                         "only the model alone")
    ap.add_argument("--model", default="smollm2-135m", help="the model run alone")
    ap.add_argument("--task", choices=("add", *COMPOSED), default="add",
                    help="add (default), or a composed task: expr, chain")
    ap.add_argument("--digits", default=None, help="comma-separated operand lengths "
                    "(default 2,3,5,20 for add, 4,20,100 for expr and chain)")
    ap.add_argument("--ops", default=None, help="expr, chain: comma-separated numbers of "
                    "operations, e.g. 1,2,4,8 (default the task's draw: 1 or 2)")
    ap.add_argument("--parens", choices=("any", "with", "without"), default="any",
                    help="expr: with parentheses that change the order, without, or either")
    ap.add_argument("--split", default="train", help="expr, chain: the prompts' wordings, "
                    f"one of {', '.join(ALL_SPLITS)} (train: the hand-written training "
                    "templates)")
    ap.add_argument("--shots", type=int, default=None, help="solved examples shown before "
                    "each question (default 0 for add, 3 for expr and chain)")
    ap.add_argument("--n", type=int, default=None,
                    help="problems per cell (default 200 for add, 50 for expr and chain)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=25, help="rows per generate/solve call")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--skip-alone", action="store_true", help="only the llamacpu half")
    ap.add_argument("--json", type=Path, default=None, help="where to write the results "
                    "(default benchmarks/results_smollm2.json for add, "
                    "benchmarks/results_smollm2_TASK.json for expr and chain)")
    return ap


def parse_args(argv: Sequence[str] | None = None):
    """The command line, checked (a bad flag: one ``error:`` line, exit 2), with the
    task's defaults filled in and ``a.cells``, the cells to run in order."""
    ap = _parser()
    a = ap.parse_args(argv)
    composed = a.task in COMPOSED
    takes = TASKS[a.task].draw_options
    if a.ops is not None and "ops" not in takes:
        ap.error(f"--ops: task {a.task} has no operation count (tasks with one: "
                 f"{', '.join(COMPOSED)})")
    if a.parens != "any" and "parens" not in takes:
        ap.error(f"--parens: task {a.task} has no parentheses (only expr has them)")
    if a.split not in ALL_SPLITS:
        ap.error(f"--split must be one of {', '.join(ALL_SPLITS)}, got {a.split!r}")
    if a.split != "train" and not composed:
        ap.error(f"--split: task add has one question, {QUESTION!r} (splits are for expr "
                 "and chain)")
    lengths = _numbers(ap, a.digits or ("4,20,100" if composed else "2,3,5,20"), "--digits")
    ops_list = [None] if a.ops is None else _numbers(ap, a.ops, "--ops")
    try:
        TASKS[a.task].check_length(max(lengths))
    except ValueError as e:
        ap.error(f"--digits: {e}")
    a.n = a.n if a.n is not None else 50 if composed else 200
    a.shots = a.shots if a.shots is not None else 3 if composed else 0
    a.json = a.json or Path("benchmarks/results_smollm2"
                            f"{f'_{a.task}' if composed else ''}.json")
    if a.n < 1 or a.batch < 1 or a.threads < 1:
        ap.error("--n, --batch and --threads must be at least 1")
    if a.shots < 0:
        ap.error(f"--shots must be at least 0, got {a.shots}")
    for c in a.checkpoint:
        if not c.is_dir():
            ap.error(f"--checkpoint {c}: no such checkpoint directory")
    if a.skip_alone and not a.checkpoint:
        ap.error("--skip-alone needs --checkpoint (nothing to run)")
    parens = {"any": None, "with": True, "without": False}[a.parens]
    a.cells = [Cell(a.task, length, ops, parens, a.split, a.shots)
               for ops in ops_list for length in lengths]
    return a


def meta_of(a, argv: Sequence[str] | None) -> dict:
    """What the JSON records of the run (beyond add's: the cell's task, split and shots)."""
    meta = {"command": " ".join(["python", "benchmarks/bench_smollm2.py",
                                 *(argv or sys.argv[1:])]),
            "torch": torch.__version__, "threads": a.threads, "seed": a.seed, "n": a.n,
            "machine": platform.processor() or platform.machine(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "question": QUESTION if a.task == "add" else "{prompt}\n" + ASK}
    if a.task != "add" or a.shots:
        meta.update(task=a.task, split=a.split, shots=a.shots,
                    shot_digits=f"min(digits, {SHOT_DIGITS})", shots_as="earlier chat turns (Q:/A: lines without a chat template)")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rows: list[dict] = []
    try:
        sets = cell_sets(a.cells, a.n, a.seed)
        if not a.skip_alone:
            rows += run_alone(a.model, sets, a.batch)
        for c in a.checkpoint:
            rows += run_llamacpu(c, sets, a.batch)
    except (LlamacpuError, ModelError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"meta": meta_of(a, argv), "rows": rows}, indent=2) + "\n")
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
