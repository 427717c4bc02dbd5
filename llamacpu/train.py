"""The curriculum trainer: ``python -m llamacpu.train --stage 0``.

The command line of ``llamacpu.learn.trainer``. ``--list`` prints the stage table (one
stage a line, its index first) and exits without importing the trainer or torch; so the
trainer is imported inside the functions that need it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llamacpu.cli import Parser
from llamacpu.core.isa import LlamacpuError
from llamacpu.learn.curriculum import (
    STAGES,
    parse_stages,
)

if TYPE_CHECKING:
    from llamacpu.learn.trainer import TrainConfig

# ---------------------------------------------------------------------- CLI


def stage_table() -> str:
    """The curriculum, one stage a line, its index first: name, task, lengths, machine-step
    budget, competence and what it trains (docs/training.md has the same table)."""
    from llamacpu.learn.curriculum import lengths_text

    lines = []
    for s in STAGES:  # the review of every task: "*" (curriculum.EVERY_TASK)
        lines.append(f"{s.index:<3d} {s.name:<11s} {s.task:<10s} "
                     f"{lengths_text(s):<20s} max steps {s.max_steps:<5d} "
                     f"competence {s.competence:<4g}  {s.description}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    from llamacpu.learn.trainer import OPTIMIZERS, TrainConfig

    p = Parser(prog="python -m llamacpu.train", description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true",
                   help="print the stage table (index first on each line) and exit")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stage", help="train this stage (index or name, e.g. 0 or add1)")
    g.add_argument("--stages", help="train these stages in order, e.g. 0-3")
    p.add_argument("--model", default="tiny",
                   help="controller language model: tiny (default), smollm2-135m (after "
                        "python -m llamacpu.models fetch smollm2-135m), a local Hugging Face "
                        "directory, or a hub id (with LLAMACPU_ALLOW_HUB=1)")
    p.add_argument("--lora-r", type=int, default=0,
                   help="LoRA rank on a pretrained model's projections (0: train heads only)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2·r)")
    p.add_argument("--quant", choices=("4bit", "8bit"), default=None,
                   help="bitsandbytes quantization of a pretrained base model (NF4 / int8)")
    p.add_argument("--optim", choices=OPTIMIZERS, default="adamw",
                   help="optimizer: adamw (torch) or adamw8bit (bitsandbytes)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="minutes a stage may train; then a final evaluation and checkpoint")
    p.add_argument("--step-sample", type=int, default=None,
                   help="machine steps per run the execute loss looks at (default 24 for "
                        "tiny, 12 for pretrained models)")
    p.add_argument("--oeu-steps", type=int, default=None,
                   help="OEU optimizer steps on its replay per training step (default 2 for "
                        "tiny, 1 with --no-certify, 8 for pretrained models)")
    p.add_argument("--answer-every", type=int, default=None,
                   help="steps between end-to-end answer-loss terms (0: off; default 8 for "
                        "tiny, off for pretrained models)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps,
                   help="training steps a stage may take")
    p.add_argument("--batch-size", type=int, default=None,
                   help="prompts per step (default 32 for tiny, 8 for pretrained models)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 3e-3 for tiny, 1e-3 for pretrained models)")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--out", type=Path, default=TrainConfig.out, help="checkpoint directory")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between competence checks (default 25 for tiny, 20 for "
                        "pretrained models)")
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--eval-screen", type=int, default=None,
                   help="a check solves this many held-out prompts first and stops when the "
                        "set can no longer pass (0: off; default 0 for tiny, 16 for "
                        "pretrained models)")
    p.add_argument("--no-shared-prompt", action="store_true",
                   help="encode each step's prompts separately for the plan and execute "
                        "losses (the default for tiny; slower for pretrained models)")
    p.add_argument("--retention-size", type=int, default=TrainConfig.retention_size,
                   help="held-out prompts per earlier task when measuring what a competent "
                        "stage retained (0: never measure)")
    p.add_argument("--retention", type=float, default=TrainConfig.retention,
                   help="retention floor: a competent stage keeps training, review weighted to "
                        "earlier tasks below it, until all clear it or the budget is spent "
                        "(default 0.9; 0: measure only)")
    p.add_argument("--competence", type=float, default=None,
                   help="exact match needed to pass a stage (default: the stage's, 0.99)")
    p.add_argument("--no-certify", action="store_true",
                   help="ablation: pass a stage on the sampled free-running check alone, "
                        "without certifying the learned tables (docs/certify.md)")
    p.add_argument("--certify-views", type=int, default=None, metavar="K",
                   help="views per task a controller certificate checks (default 32 for "
                        "tiny, 8 for pretrained models)")
    p.add_argument("--certify-all-views", action="store_true",
                   help="before a stage passes, certify every view of the trained tasks' "
                        "training wordings, not only the sampled ones (minutes a check on "
                        "the later stages; docs/certify.md)")
    p.add_argument("--certify-patterns", type=int, default=TrainConfig.certify_patterns,
                   metavar="P", help="execute-table rows per batch row per training step "
                                     "(0: none)")
    p.add_argument("--ema", type=float, default=TrainConfig.ema, metavar="DECAY",
                   help="check, certify and save the exponential moving average of the "
                        "weights, this decay per step (e.g. 0.999; default 0: the weights "
                        "as trained; tiny controller only)")
    p.add_argument("--anneal", type=float, default=TrainConfig.anneal, metavar="F",
                   help="learning-rate factor per check that finds a stage competent but "
                        "not certified, down to 1/32 (default 0.5; 1: no annealing)")
    p.add_argument("--review", type=float, default=None,
                   help="fraction of each batch drawn from earlier stages (default: the "
                        "stage's own, 0.2-0.25; 0 when training one stage from scratch)")
    p.add_argument("--channel-lr", type=float, default=TrainConfig.channel_lr,
                   help="learning-rate multiplier of the weight-token channel's modules")
    p.add_argument("--ckpt-every", type=int, default=TrainConfig.ckpt_every)
    p.add_argument("--no-answer-loss", action="store_true",
                   help="ablation: train without the end-to-end answer loss")
    p.add_argument("--absolute-positions", action="store_true",
                   help="ablation: the execute phase sees the step index as its position")
    # the controller's bounded view of a prompt (llamacpu.llm.view; docs/view.md)
    p.add_argument("--digit-window", type=int, default=TrainConfig.digit_window, metavar="N",
                   help="the controller's LM reads the first N digits of each digit run (the "
                        "machine's input keeps all of them); 0: every digit (default "
                        f"{TrainConfig.digit_window})")
    p.add_argument("--item-window", type=int, default=TrainConfig.item_window, metavar="N",
                   help="the controller's LM reads the first N items of each list of numbers; "
                        "0: every item "
                        f"(default {TrainConfig.item_window})")
    p.add_argument("--text-window", type=int, default=TrainConfig.text_window, metavar="N",
                   help="the controller's LM reads the first N characters of the text payload "
                        f"after a prompt's first ':'; 0: all, ':' is no marker (default {TrainConfig.text_window})")
    p.add_argument("--operand-window", type=int, default=TrainConfig.operand_window,
                   metavar="N", help="a prompt of N or more numbers (an expression, a chain "
                   "of instructions) reads as far as its N-th, brackets dropped; 0: whole "
                   f"(default {TrainConfig.operand_window})")
    p.add_argument("--keep-payload", action="store_true",
                   help="ablation: the LM reads the kept digits and characters as typed "
                        "(default: as placeholders, so every wording has a few views)")
    p.add_argument("--wordings", default=TrainConfig.wordings, metavar="WHICH",
                   help="what training prompts are worded as: templates (the tasks' "
                        "hand-written ones) or grammar (those and the train split of each "
                        "task's grammar; competence judged on its recombined split too; "
                        f"docs/wordings.md) (default {TrainConfig.wordings})")
    p.add_argument("--alphabet", default=TrainConfig.alphabet, metavar="NAME",
                   help="the symbols the machine reads and writes: default (digits, "
                        "' +-*/%%=<>,;:.()?!_' and a-z; V = 55) or printable (every printable "
                        "ASCII character, capitals included, so a prompt can be typed as "
                        "people type it; V = 96): the run's prompts, payloads and expert "
                        f"programs are written in it (default {TrainConfig.alphabet})")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    a = p.parse_args(argv)
    try:
        if a.stages is not None:
            stages = tuple(parse_stages(a.stages))
        else:
            stages = tuple(parse_stages(a.stage if a.stage is not None else "0"))
        return TrainConfig(stages=stages, model=a.model, steps=a.steps, batch_size=a.batch_size,
                           lr=a.lr, seed=a.seed, out=a.out, resume=not a.no_resume,
                           device=a.device, threads=a.threads, eval_every=a.eval_every,
                           eval_size=a.eval_size, competence=a.competence,
                           review=a.review, channel_lr=a.channel_lr,
                           eval_screen=a.eval_screen,
                           shared_prompt=False if a.no_shared_prompt else None,
                           retention_size=a.retention_size, retention=a.retention,
                           certify=not a.no_certify, certify_views=a.certify_views,
                           certify_all=a.certify_all_views,
                           certify_patterns=a.certify_patterns, anneal=a.anneal, ema=a.ema,
                           ckpt_every=a.ckpt_every, answer_loss=not a.no_answer_loss,
                           lora_r=a.lora_r, lora_alpha=a.lora_alpha, quant=a.quant,
                           optim=a.optim, time_budget=a.time_budget,
                           step_sample=a.step_sample, answer_every=a.answer_every,
                           oeu_steps=a.oeu_steps,
                           absolute_positions=a.absolute_positions,
                           digit_window=a.digit_window, item_window=a.item_window,
                           text_window=a.text_window, abstract_payload=not a.keep_payload,
                           operand_window=a.operand_window,
                           wordings=a.wordings, alphabet=a.alphabet,
                           progress=not a.no_progress)
    except ValueError as e:
        p.error(str(e))
    raise AssertionError("unreachable")


def main(cfg: TrainConfig) -> int:
    """Train ``cfg.stages``; 0 when every stage passed, 1 when one did not, 130 on Ctrl-C.

    Under torchrun only rank 0 reports the outcome; the other ranks exit 0 after a normal
    end, since torchrun stops the whole job when any rank exits non-zero."""
    from llamacpu.learn import distributed
    from llamacpu.learn.trainer import Trainer

    trainer = Trainer(cfg, log=lambda s: print(s, flush=True))
    try:
        done = trainer.run()
    finally:
        distributed.shutdown()
    if trainer.dist is not None and not trainer.dist.main:
        return 0
    if trainer.stopped:
        return 130
    return 0 if done and all(st.passed for st in done.values()) and len(done) == len(
        cfg.stages) else 1


def cli(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--list" in args:  # before the trainer (and torch) is imported
        if args != ["--list"]:
            Parser(prog="python -m llamacpu.train").error("--list takes no other flags")
        print(stage_table())
        return 0
    from llamacpu.llm.models import ModelError

    cfg = parse_args(argv)
    try:
        return main(cfg)
    except (LlamacpuError, OSError, ModelError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(cli())
