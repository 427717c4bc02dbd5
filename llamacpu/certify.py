"""Certify a learned machine's tables: ``python -m llamacpu.certify --checkpoint DIR``.

Checks the neural OEU entry by entry over every input the tasks' expert programs can give
it in the hard machine, at any input length (``llamacpu.learn.certify``); prints CERTIFIED with
what was enumerated, or every wrong entry and, for the first few, a witness: a prompt the
free-running machine answers wrong, found by running it. Then the plan and execute tables,
per view of the prompt (``llamacpu.llm.view``): the emitted program against the expert's
and every decision at every reachable instruction for every flag pattern its operands can
produce. With a bounded view that abstracts payload content (the default since the view
exists) ``--views all`` checks every view of the tasks' wordings: a statement about every
prompt in them, at every length. A checkpoint whose view keeps payload content has too
many views per wording; ``--views N`` samples N prompts per task.

Exit codes: 0 everything checked is certified, 1 it is not, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from llamacpu.cli import Parser
from llamacpu.core.isa import LlamacpuError

__all__ = ["main"]


def _views(text: str) -> str | int:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"expected 'all' or a count >= 0, got {text!r}")
    return n


def _parser() -> Parser:
    p = Parser(prog="python -m llamacpu.certify", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a checkpoints/stage_N directory")
    p.add_argument("--task", action="append", default=None, metavar="T",
                   help="certify the ops of this task's expert program (repeatable; default: "
                        "every task the checkpoint's curriculum stages trained)")
    p.add_argument("--domain", choices=("program", "isa"), default="program",
                   help="program: the inputs the tasks' expert programs can give the OEU "
                        "(carry and operand analysis over their control-flow graphs); isa: "
                        "every input the instruction set allows for their ops")
    p.add_argument("--views", type=_views, default="all", metavar="all|N",
                   help="all: every view of the tasks' wordings (a checkpoint whose view "
                        "keeps payload content falls back to 100 sampled prompts per task); "
                        "N: N sampled prompts per task; 0: skip the plan and execute tables")
    p.add_argument("--wordings", default="train",
                   choices=("train", "heldout", "all", "grammar_train", "recombined",
                            "new_words"),
                   help="the wordings those prompts are drawn in (train: those the checkpoint "
                        "trained on; all: those and heldout; the grammar's splits: "
                        "docs/wordings.md)")
    p.add_argument("--plans-only", action="store_true",
                   help="check the plans alone (each view's emitted program against the "
                        "expert's), not the execute tables: the plans' emission, without "
                        "the minutes the tables take on thousands of views")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled prompts")
    p.add_argument("--witnesses", type=int, default=3, metavar="K",
                   help="look for a witness prompt for the first K wrong entries (0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the certificate (what was enumerated, every wrong entry, "
                        "the witnesses) as JSON to PATH")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    p.check_threads(args.threads)
    if args.json is not None:  # before any work
        p.check_out_file(args.json, "--json")
    import torch

    from llamacpu.evaluate.report import trained_tasks
    from llamacpu.learn.certify import (
        certify_oeu,
        find_witness,
        isa_domain,
        task_ops,
        tasks_domain,
    )
    from llamacpu.learn.checkpoint import load_checkpoint
    from llamacpu.learn.curriculum import trained_stages
    from llamacpu.learn.learned import LearnedMachine
    from llamacpu.learn.tasks import TASKS
    from llamacpu.learn.train_config import training_split

    torch.set_num_threads(args.threads)
    try:
        ck = load_checkpoint(args.checkpoint)
        model = LearnedMachine.from_checkpoint(ck).eval()
        args.train_split = training_split(ck.config)  # the wordings it trained on
    except (LlamacpuError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    learned = trained_tasks(ck.stage, trained=trained_stages(ck))
    tasks = args.task or list(learned)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        p.error(f"--task: unknown task {unknown[0]!r} (known: {', '.join(TASKS)})")
    alphabet = model.cfg.oeu.alphabet
    domain = (tasks_domain(tasks, alphabet) if args.domain == "program"
              else isa_domain(alphabet, task_ops(tasks)))
    cert = certify_oeu(model.oeu, alphabet, domain)
    print(f"checkpoint {args.checkpoint} (stage {ck.stage}), tasks {', '.join(tasks)}, "
          f"domain: {args.domain}")
    print(cert.summary(alphabet))
    witnesses = []
    for entry in cert.failures[: args.witnesses]:
        users = [t for t in tasks if entry.op in task_ops([t])]
        w = find_witness(model, entry, users)
        witnesses.append(w)
        if w is None:
            print(f"  no witness found for {entry.describe(alphabet)} in {', '.join(users)}")
        else:
            got = w.output if w.fault is None else f"{w.output!r}, fault: {w.fault}"
            print(f"  witness for {entry.describe(alphabet)}: {w.prompt!r} -> {got} "
                  f"(want {w.answer})")
    ctl, plan_witnesses = None, []
    views = None
    compiled: dict = {}
    if args.views != 0:
        ctl, answers, views, task_of = _controller_certificate(model, tasks, learned, args)
        print(ctl.summary())
        if args.plans_only:
            print("execute tables: not checked (--plans-only)")
        plan_witnesses = _plan_witnesses(model, ctl, answers, args.witnesses)
        compiled = _compile_certificates(model, tasks, args)
    else:
        print("plan and execute tables: not checked (--views 0)")
    compile_ok = all(c.certified for c in compiled.values())
    if args.json is not None:
        record = {
            "command": "python -m llamacpu.certify " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "checkpoint": str(args.checkpoint), "stage": ck.stage, "tasks": tasks,
            "domain": args.domain, "certified": cert.certified and compile_ok and (
                ctl is not None and ctl.certified),
            "compile": {t: {"certified": c.certified, "views": c.views,
                            "wrong": [{"view": str(v), "head": g, "expert": str(w)}
                                      for v, g, w in c.wrong]}
                        for t, c in compiled.items()},
            "oeu_certified": cert.certified,
            "controller": None if ctl is None else {
                "certified": ctl.certified, "views": ctl.views, "prompts": ctl.prompts,
                "decisions": ctl.decisions, "wordings": args.wordings, "seed": args.seed,
                "enumerated": ctl.enumerated, "view": model.cfg.controller.view.describe(),
                "views_per_task": views, "plans_only": args.plans_only,
                "plan_failures_per_task": {t: sum(task_of[f.prompt] == t
                                                  for f in ctl.plan_failures) for t in tasks},
                "plan_failures": [asdict(f) for f in ctl.plan_failures],
                "plan_witnesses": plan_witnesses,
                "step_failures": [asdict(f) for f in ctl.step_failures[:1000]],
                "step_failures_total": len(ctl.step_failures)},
            "ops": [o.name for o in cert.ops], "inputs": cert.inputs, "outputs": cert.outputs,
            "failures_total": len(cert.failures),
            "failures": [{**asdict(f), "op": f.op.name} for f in cert.failures],
            "witnesses": [None if w is None else {"entry": w.entry.describe(alphabet),
                                                  "prompt": w.prompt, "answer": w.answer,
                                                  "output": w.output, "fault": w.fault}
                          for w in witnesses],
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0 if cert.certified and compile_ok and (ctl is None or ctl.certified) else 1


def _compile_certificates(model, tasks, args) -> dict:
    """The compile head on every view of each composed task's wordings (the same splits as
    the plan and execute tables): {task: CompileCertificate}."""
    from llamacpu.learn.compiling import certify_compile, is_composed
    from llamacpu.learn.tasks import TASKS

    splits = {"all": (args.train_split, "heldout"), "train": (args.train_split,)}.get(
        args.wordings, (args.wordings,))
    out = {}
    for task in tasks:
        if is_composed(task):
            templates = sorted({t for s in splits
                                for t in TASKS[task].templates(s, model.alphabet)})
            out[task] = certify_compile(model.controller, task, templates)
            print(f"{task}: {out[task].describe()}, {len(templates)} wordings, any number of "
                  "operations")
    return out


def _controller_certificate(model, tasks, trained, args):
    """The plan and execute tables on every view of the tasks' wordings (``--views all``,
    when the checkpoint's view allows it), else on sampled prompts per task. Returns the
    certificate, {prompt: answer}, when enumerated {task: {"views", "drawn",
    "never_drawn"}} (None when sampled), and {prompt: task}. ``--plans-only``: the plans
    alone."""

    from llamacpu.learn.compiling import plan_program, run_program
    from llamacpu.learn.controller_tables import certify_controller, every_view
    from llamacpu.learn.tasks import TASKS

    splits = {"all": (args.train_split, "heldout"), "train": (args.train_split,)}.get(
        args.wordings, (args.wordings,))
    view = model.cfg.controller.view
    examples, per_task = [], {}
    if args.views == "all":
        for task in tasks:
            try:
                vs = every_view(task, view, splits, seed=args.seed, alphabet=model.alphabet)
            except ValueError as e:
                print(f"views of {task}: {e}; sampling 100 prompts instead")
                examples += _sampled(TASKS[task], 100, trained.get(task, 1), splits, args.seed,
                                     model.alphabet)
                continue
            examples += vs.examples
            per_task[task] = {"views": vs.grid, "drawn": len(vs.examples),
                              "never_drawn": vs.missing}
            note = (f"; {len(vs.missing)} shapes its operands never take, such as "
                    f"{vs.missing[0]!r}" if vs.missing else "")
            print(f"views of {task}: all {len(vs.examples)} of its {'/'.join(splits)} "
                  f"wordings at every length{note}")
    else:
        for task in tasks:
            examples += _sampled(TASKS[task], args.views, trained.get(task, 1), splits,
                                 args.seed, model.alphabet)
    prompts = [ex.prompt for ex in examples]
    cert = certify_controller(model, prompts, [run_program(ex) for ex in examples],
                              plans=[plan_program(ex) for ex in examples],
                              execute=not args.plans_only)
    cert.enumerated = bool(per_task) and len(per_task) == len(tasks)
    return (cert, {ex.prompt: ex.answer for ex in examples}, per_task or None,
            {ex.prompt: ex.task for ex in examples})


def _sampled(t, n: int, top: int, splits, seed: int, alphabet) -> list:
    """``n`` prompts of task ``t`` at lengths 1..``top``, in ``splits`` by turns, written in
    ``alphabet`` (the checkpoint's)."""
    import random

    rng = random.Random(f"certify/{t.name}/{seed}")
    return [t.sample(rng, 1 + i % top, splits[i % len(splits)], alphabet) for i in range(n)]


def _plan_witnesses(model, ctl, answers: dict[str, str], k: int) -> list[dict]:
    """The first ``k`` prompts with a wrong plan, run free: a wrong plan is a witness when
    the machine then answers the prompt wrong (a wrong slot that no run reads is not)."""
    out = []
    fails = ctl.plan_failures[:k]
    if not fails:
        return out
    solved = model.solve([f.prompt for f in fails])  # the default step budget
    for f, s in zip(fails, solved):
        want = answers[f.prompt]
        wrong = s.fault is not None or s.output != want
        out.append({"prompt": f.prompt, "answer": want, "output": s.output, "fault": s.fault,
                    "answered_wrong": wrong})
        got = s.output if s.fault is None else f"{s.output!r}, fault: {s.fault}"
        print(f"  plan witness {f.prompt!r} -> {got!r} (want {want!r})"
              + ("" if wrong else ": answered right all the same"))
    return out


if __name__ == "__main__":
    sys.exit(main())
