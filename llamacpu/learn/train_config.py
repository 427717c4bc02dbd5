"""What one training run is: :class:`TrainConfig`, the fields the CLI
(``llamacpu/train.py``) parses into and :class:`~llamacpu.learn.trainer.Trainer` runs,
with the defaults that depend on the controller (tiny or pretrained) and the checks that
turn bad values into one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, Alphabet
from llamacpu.learn.learned import LearnedConfig
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.models import ModelError, resolve
from llamacpu.machine.oeu import OEUConfig

OPTIMIZERS = ("adamw", "adamw8bit")

__all__ = ["ALPHABETS", "OPTIMIZERS", "TrainConfig", "WORDINGS", "alphabet_name",
           "resolve_split", "training_split"]

ALPHABETS: Mapping[str, Alphabet] = {"default": DEFAULT_ALPHABET,
                                     "printable": PRINTABLE_ALPHABET}
"""``TrainConfig.alphabet`` → the alphabet a run's machine reads and writes: ``default``
(digits, ``" +-*/%=<>,;:.()?!_"`` and a–z; V = 55) or ``printable`` (the same symbols
under the same numbers, then capitals and the rest of printable ASCII; V = 96)."""


def alphabet_name(alphabet: Alphabet) -> str:
    """The :data:`ALPHABETS` name of an alphabet, else its description."""
    return next((k for k, a in ALPHABETS.items() if a == alphabet), alphabet.describe())


WORDINGS = {"templates": "train", "grammar": "grammar_train"}
"""``TrainConfig.wordings`` → the split its prompts are drawn from (``tasks.TRAINING_SPLITS``)."""


def training_split(config: Mapping[str, Any]) -> str:
    """The split a checkpoint's run drew its prompts from, from the checkpoint's ``config``
    (``train`` for runs from before ``--wordings``)."""
    return WORDINGS.get(config.get("train", {}).get("wordings", "templates"), "train")


def resolve_split(split: str, config: Mapping[str, Any]) -> str:
    """The task split a command's ``--split`` names for a checkpoint: ``train`` is the
    wordings its run trained on (:func:`training_split`), ``templates`` the hand-written
    training templates whatever it trained on (what ``--wordings templates`` trains on);
    any other split is itself."""
    if split == "train":
        return training_split(config)
    return WORDINGS["templates"] if split == "templates" else split


@dataclass(frozen=True)
class TrainConfig:
    """One training run. The CLI parses into this; ``main(cfg)`` runs it."""

    stages: tuple[int, ...] = (0,)      # stage indices to train, in order
    model: str = "tiny"                 # controller LM: "tiny" (built in code), "smollm2-135m",
    #                                     a local HF directory or a hub id (llamacpu.models)
    lora_r: int = 0                     # pretrained models: LoRA rank (0: heads only)
    lora_alpha: float | None = None     # LoRA alpha (default 2 · lora_r)
    quant: str | None = None            # pretrained models: None, "4bit" (NF4) or "8bit"
    optim: str = "adamw"                # "adamw" (torch) or "adamw8bit" (bitsandbytes)
    time_budget: float | None = None    # minutes a stage may train before it stops (then a
    #                                     final evaluation and checkpoint); None: no limit
    steps: int = 1500                   # training steps a stage may take before giving up
    batch_size: int | None = None       # prompts per step (None: 32 for the tiny model, 8
    #                                     for a pretrained one, whose step costs seconds)
    lr: float | None = None             # peak AdamW learning rate (warmup, then cosine).
    #                                     None: 3e-3 for the tiny model, 1e-3 for LoRA on a
    #                                     pretrained one (3e-3 oscillated there: measured)
    warmup: int = 20                    # linear warmup steps at the start of each stage
    seed: int = 0                       # seeds the model init, data and evaluation sets
    out: Path = Path("checkpoints")     # where stage_N/ checkpoints and logs go
    resume: bool = True                 # continue from the latest checkpoint in ``out``
    device: str = "cpu"                 # torch device of the model ("cpu" or "cuda")
    threads: int = 1                    # torch CPU threads (1 is fastest for the tiny model)
    eval_every: int | None = None       # steps between free-running competence checks
    #                                     (None: 25 for the tiny model, 20 for a pretrained one)
    eval_size: int | None = None        # held-out prompts per check (None: the stage's own)
    eval_screen: int | None = None      # a check first solves this many of the held-out
    #                                     prompts and stops when the whole set can no longer
    #                                     reach competence (the pass decision is the full
    #                                     set's either way); 0: always the full set. None:
    #                                     0 for the tiny model (1 s), 16 for a pretrained one
    #                                     (every emitted slot and machine step is an LM pass)
    retention_size: int = 50            # held-out prompts per EARLIER task when measuring
    #                                     what a competent stage retained (0: never measure)
    retention: float = 0.9              # floor for every earlier task: a competent stage
    #                                     keeps training (review weighted to what dropped)
    #                                     until all are back above it (0: measure, don't act)
    competence: float | None = None     # exact match needed to pass (None: the stage's 0.99)
    certify: bool = True                # a stage passes only with the learned tables of its
    #                                     task and of every earlier task certified
    #                                     (learn/certified.py); False: sampled-only (ablation)
    certify_views: int | None = None    # views per task a controller certificate checks
    certify_all: bool = False           # a check whose sampled views all pass then checks
    #                                     every view of the trained tasks' training wordings
    #                                     before the stage may pass (minutes at stage 18)
    #                                     (None: 32 for the tiny model, 8 for a pretrained one)
    certify_patterns: int = 8           # execute-table rows per batch row per step (0: none)
    ema: float = 0.0                    # decay of the weights' exponential moving average,
    #                                     the machine checked, certified and saved (0: the
    #                                     weights as trained; learn/averaging.py)
    anneal: float = 0.5                 # learning-rate factor per check that found the stage
    #                                     competent but not certified (down to ANNEAL_FLOOR):
    #                                     near convergence the peak rate moves plans of earlier
    #                                     tasks back and forth (measured); 1: no annealing
    channel_lr: float = 1.0             # learning-rate multiplier of the weight-token channel's
    #                                     modules (metatokens, lookup, weight head); 5× stalls
    #                                     its attention (measured), so 1× by default
    review: float | None = None         # fraction of each batch from earlier stages (None:
    #                                     the stage's own; 0 for a stage trained from scratch)
    ckpt_every: int = 100               # steps between checkpoints (also at stage end)
    answer_loss: bool = True            # add the end-to-end answer loss through the soft machine
    step_sample: int | None = None      # machine steps per run the execute loss looks at
    #                                     (None: 24 for the tiny model, 12 for a pretrained one)
    shared_prompt: bool | None = None   # run each step's prompts through the LM once for
    #                                     the plan and execute losses (Controller.encode_prefix;
    #                                     the same losses, fewer LM tokens). None: on for a
    #                                     pretrained model, off for the tiny one (bit-identical
    #                                     to its earlier runs)
    filler: float = 0.5                 # chance a training prompt gets random filler words in
    #                                     front (every non-digit symbol but ':'), so the ALU
    #                                     sees every symbol in the parser's comparisons, not
    #                                     only the letters of the training wordings
    prompt_mix: float = 0.5             # chance the execute loss pairs a step with another
    #                                     row's prompt: a jump/write/halt decision is a
    #                                     function of the machine state, not of the wording
    answer_every: int | None = None     # steps between answer-loss terms; 0: never; None:
    #                                     8 for the tiny model, never for a pretrained one (a
    #                                     soft run through a big LM at every machine step
    #                                     costs more than everything else in a step)
    answer_batch: int = 4               # prompts in each answer-loss term
    oeu_steps: int | None = None        # optimizer steps of the OEU on its replay per training
    #                                     step (the extra ones OEU-only: milliseconds each,
    #                                     worth it when the controller's step costs seconds).
    #                                     None: 8 for a pretrained model; 1 for the tiny one,
    #                                     3 with certify (its replay holds the whole OEU table:
    #                                     stage 0 certified at step 100 / 75 on seeds 0 / 1,
    #                                     with 2 at 125 / 100, with 1 at 175)
    answer_weight: float = 0.2          # its weight in the total loss
    absolute_positions: bool = False    # ablation: execute phase sees the step index
    digit_window: int = ControllerConfig.digit_window  # the LM's bounded view of a prompt
    item_window: int = ControllerConfig.item_window    #   (llamacpu.llm.view): digits of a
    text_window: int = ControllerConfig.text_window    #   run, items of a list, characters
    abstract_payload: bool = ControllerConfig.abstract_payload  # after ':'; 0: all
    operand_window: int = ControllerConfig.operand_window  # payloads of an expression/chain
    wordings: str = "templates"         # what the prompts are worded as: the tasks'
    #                                     hand-written templates, or "grammar": those and the
    #                                     train split of each task's grammar, with competence
    #                                     judged on the recombined split too (docs/wordings.md)
    alphabet: str = "default"           # the symbols the machine reads and writes, a name
    #                                     of ALPHABETS: "default" (no capitals) or
    #                                     "printable" (every printable ASCII character);
    #                                     every prompt, payload, filler word and expert
    #                                     program of the run is written in it
    progress: bool = True               # tqdm progress bar

    def __post_init__(self) -> None:
        tiny = self.model == "tiny"
        defaults = {"lr": (3e-3, 1e-3), "batch_size": (32, 8), "eval_every": (25, 20),
                    "step_sample": (24, 12),
                    "oeu_steps": (3 if self.certify else 1, 8), "eval_screen": (0, 16),
                    "shared_prompt": (False, True), "certify_views": (32, 8)}
        for name, (for_tiny, for_pretrained) in defaults.items():
            if getattr(self, name) is None:  # frozen: resolve the model-dependent defaults
                object.__setattr__(self, name, for_tiny if tiny else for_pretrained)
        positive = ("steps", "batch_size", "eval_every", "ckpt_every",
                    "answer_batch", "threads", "step_sample", "oeu_steps", "certify_views")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, "
                                 f"got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.alphabet not in ALPHABETS:
            raise ValueError(f"--alphabet must be one of {', '.join(ALPHABETS)}, "
                             f"got {self.alphabet!r}")
        if self.wordings not in WORDINGS:
            raise ValueError(f"--wordings must be one of {', '.join(WORDINGS)}, "
                             f"got {self.wordings!r}")
        if self.eval_screen < 0:
            raise ValueError(f"--eval-screen must be >= 0 (0: off), got {self.eval_screen}")
        if self.certify_patterns < 0:
            raise ValueError(f"--certify-patterns must be >= 0 (0: none), got "
                             f"{self.certify_patterns}")
        if self.retention_size < 0:
            raise ValueError(f"--retention-size must be >= 0 (0: off), got "
                             f"{self.retention_size}")
        if not 0.0 <= self.retention <= 1.0:
            raise ValueError(f"--retention must be in [0, 1] (0: off), got {self.retention}")
        if self.answer_every is not None and self.answer_every < 0:
            raise ValueError(f"--answer-every must be >= 0 (0: off), got {self.answer_every}")
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"--optim must be one of {', '.join(OPTIMIZERS)}, got {self.optim!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"--time-budget must be positive (minutes), got {self.time_budget}")
        try:
            resolve(self.model)  # offline: registry model fetched, directory exists, hub opt-in
        except ModelError as e:
            raise ValueError(f"--model {self.model!r}: "
                             + " ".join(line.strip() for line in str(e).splitlines())) from None
        if self.model == "tiny" and (self.lora_r or self.quant):
            raise ValueError("--lora-r and --quant apply to pretrained models (--model "
                             "smollm2-135m, a local HF directory, a hub id); the tiny model "
                             "trains all its weights")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be cpu or cuda[:N], got {self.device!r}")
        if self.device != "cpu" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available on this machine")
        if self.competence is not None and not 0 < self.competence <= 1:
            raise ValueError(f"--competence must be in (0, 1], got {self.competence}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema must be in [0, 1) (0: off), got {self.ema}")
        if self.ema and not tiny:
            raise ValueError("--ema applies to the tiny controller (the average of a "
                             "pretrained one would hold a second copy of its base model)")
        if not 0 < self.anneal <= 1:
            raise ValueError(f"--anneal must be in (0, 1], got {self.anneal}")
        if not self.channel_lr > 0:
            raise ValueError(f"--channel-lr must be positive, got {self.channel_lr}")
        for name in ("digit_window", "item_window", "text_window", "operand_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0: the LM reads "
                                 f"all of it), got {getattr(self, name)}")
        if self.review is not None and not 0 <= self.review < 1:
            raise ValueError(f"--review must be in [0, 1), got {self.review}")
        if not self.stages:
            raise ValueError("no stages to train")

    @property
    def answer_period(self) -> int:
        """Steps between answer-loss terms (0: never)."""
        if not self.answer_loss:
            return 0
        if self.answer_every is None:
            return 8 if self.model == "tiny" else 0
        return self.answer_every

    @property
    def split(self) -> str:
        """The split the run's prompts are drawn from: ``train`` or ``grammar_train``."""
        return WORDINGS[self.wordings]

    @property
    def symbols(self) -> Alphabet:
        """The run's alphabet (:data:`ALPHABETS` of :attr:`alphabet`)."""
        return ALPHABETS[self.alphabet]

    def model_config(self) -> LearnedConfig:
        return LearnedConfig(ControllerConfig(
            model=self.model, lora_r=self.lora_r, lora_alpha=self.lora_alpha, quant=self.quant,
            absolute_positions=self.absolute_positions, digit_window=self.digit_window,
            item_window=self.item_window, text_window=self.text_window,
            abstract_payload=self.abstract_payload, operand_window=self.operand_window,
            alphabet=self.symbols),
            OEUConfig(alphabet=self.symbols))


def _cfg_json(cfg: TrainConfig) -> dict:
    d = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    d["out"] = str(cfg.out)
    d["stages"] = list(cfg.stages)
    return d
