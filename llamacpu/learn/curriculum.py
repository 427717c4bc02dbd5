"""The curriculum: a table of stages, how batches and eval sets are drawn, and when to move on.

A stage is one task at a range of lengths, one line of :data:`STAGES` that names the task
(a task is one file, ``programs/<task>.py``: docs/extending.md). The trainer works through
:data:`STAGES` in order; a stage is passed when the whole machine, run free (no expert),
answers at least ``competence`` of the stage's eval set exactly and, unless the trainer
runs the sampled-only ablation, the learned tables of its task and of every earlier task are
certified entry by entry (``learn/certified.py``) (:func:`decide`, a pure function of the
measured numbers). Each training batch mixes in a ``review`` fraction of
examples from earlier stages so old skills are rehearsed. The last stage teaches no task:
it reviews every one (:data:`EVERY_TASK`) at a low rate until what was learned settles.

Rehearsal alone does not stop forgetting (a 25% review let the compare stage wipe out
subtraction), so the rule also looks back. Once a stage passes its own check, the trainer
measures what the machine *retained* of every earlier task (free-running exact match on
held-out prompts at the widest lengths that task was trained at). Any task below the
``retention`` floor keeps the stage open: :data:`Decision.CONSOLIDATE`, training goes on
with a larger review share weighted towards the tasks that dropped
(:func:`review_weights`), until both the stage's own check and every earlier task clear
their bars again, or the stage's step budget is spent (then it advances, with the shortfall
logged: the stage itself was learned).

Held-out evaluation, disjoint by construction. Every prompt falls in one of
``HOLDOUT_BUCKETS`` buckets by a stable hash of its text (:func:`is_heldout`: bucket 0 is
held out); a task may hash something else instead (``Task.heldout_key``: fmap hashes the
FUNCTION its prompt defines, so evaluation uses functions training never sees, in any
order, wording or payload). :func:`sample_batch` never returns a held-out prompt and :func:`eval_set` returns
only held-out ones, drawn from its own RNG stream (seeded by the stage and the eval seed,
never by the trainer's RNG), so no training batch can contain an eval prompt whatever seeds
either side uses. ``eval_set(..., seen=...)`` also rejects any prompt in a given set (for
training data from elsewhere). With ``split="heldout"`` the eval set uses the task's
held-out wordings instead, which training never uses (so every such prompt qualifies): a
test of generalisation to unseen phrasing.

Small stages have few distinct prompts (1-digit addition: 100 operand pairs × 6 wordings,
about 60 of them held out), so :func:`eval_set` returns at most the distinct held-out
prompts it finds, possibly fewer than ``eval_size``; it never repeats one.

Every drawing function takes the ``alphabet`` the examples are written in (a run's
``--alphabet``; default ``isa.DEFAULT_ALPHABET``). The held-out partition hashes the prompt
whatever its alphabet, so it stays disjoint from training in every alphabet.
"""

from __future__ import annotations

import enum
import hashlib
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet
from llamacpu.learn.tasks import (
    ALL_SPLITS,
    TASKS,
    TASKS_ENV,
    TRAINING_SPLITS,
    Example,
    heldout_key,
)

__all__ = [
    "Stage", "STAGES", "EVERY_TASK", "Decision", "decide", "sample_batch", "eval_set",
    "is_heldout", "review_weights", "CONSOLIDATE_REVIEW", "last_stages", "task_text",
    "lengths_text", "competence_set",
    "parse_stage", "parse_stages", "check_stages", "HOLDOUT_BUCKETS", "stages_table",
    "trained_tasks", "trained_stages",
]

HOLDOUT_BUCKETS = 10
"""One prompt in this many (by hash) is reserved for evaluation and never trained on."""

EVERY_TASK = "*"
"""The task of a closing review stage: every task the machine trained before it, each at
the widest lengths it was trained at (:func:`last_stages`), drawn uniformly."""


@dataclass(frozen=True)
class Stage:
    """One row of the curriculum: a task at a range of lengths, and when it is passed."""

    index: int            # position in STAGES, from 0
    name: str             # short handle for the command line ("add2")
    task: str             # key of tasks.TASKS (the task file programs/<task>.py)
    min_length: int       # lengths are drawn uniformly from min_length..max_length
    max_length: int       #   (in the task's unit: digits, items or characters)
    review: float         # fraction of each batch drawn from earlier stages
    max_steps: int        # machine steps per example: ~1.5 × the expert's worst case
    description: str
    competence: float = 0.99  # exact-match accuracy, run free, that passes the stage
    eval_size: int = 200      # eval examples (fewer when the stage has fewer prompts)
    # A stage that settles rather than learns (the closing review): it trains
    # ``train_steps`` steps (or the run's --steps, if more) on a cosine from ``lr_scale`` ×
    # the run's peak rate, its weights averaged at ``ema`` (a run without --ema: none), and
    # is judged from the cosine's end on (at its floor rate, replaying what a certificate
    # found wrong, for at most as many steps again). None: judged every --eval-every steps.
    train_steps: int | None = None
    lr_scale: float = 1.0
    ema: float | None = None

    @property
    def reviews_all(self) -> bool:
        """Whether this is a review of every earlier task (:data:`EVERY_TASK`)."""
        return self.task == EVERY_TASK

    def __post_init__(self) -> None:
        where = f"stage {self.index} ({self.name})"
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"{where}: train_steps must be at least 1")
        if not self.lr_scale > 0 or not (self.ema is None or 0 < self.ema < 1):
            raise ValueError(f"{where}: need lr_scale > 0 and ema in (0, 1)")
        if self.reviews_all:
            if self.index == 0:
                raise ValueError(f"{where}: a review of every earlier task cannot be first")
            return
        if self.task not in TASKS:
            raise ValueError(f"{where}: unknown task {self.task!r} (known: "
                             f"{', '.join(TASKS)}; a task file outside programs/ is found "
                             f"through {TASKS_ENV})")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"{where}: need 1 <= min_length <= max_length, "
                             f"got {self.min_length}..{self.max_length}")
        top = TASKS[self.task].max_length
        if top is not None and self.max_length > top:
            raise ValueError(f"{where}: task {self.task} supports lengths up to {top}")
        if not 0.0 <= self.review < 1.0:
            raise ValueError(f"{where}: review must be in [0, 1), got {self.review}")
        if not 0.0 < self.competence <= 1.0:
            raise ValueError(f"{where}: competence must be in (0, 1], got {self.competence}")
        if self.eval_size < 1 or self.max_steps < 1:
            raise ValueError(f"{where}: eval_size and max_steps must be at least 1")

    def sample(self, rng: random.Random, split: str = "train",
               alphabet: Alphabet = DEFAULT_ALPHABET) -> Example:
        """One example of this stage's own task and lengths (no review, no hold-out)."""
        if self.reviews_all:
            raise ValueError(f"stage {self.name} reviews every earlier task: draw its "
                             f"examples with sample_batch or eval_set, which know them")
        return TASKS[self.task].sample(rng, rng.randint(self.min_length, self.max_length),
                                       split, alphabet)


STAGES: tuple[Stage, ...] = (
    #     idx name       task      lengths review max_steps  description
    Stage(0, "add1",     "add",     1, 1,  0.0,   200,  "1-digit addition",
          competence=1.0),  # 100 digit pairs: a table the machine must have exactly
    Stage(1, "add2",     "add",     1, 2,  0.2,   250,  "addition up to 2 digits"),
    Stage(2, "add3",     "add",     1, 3,  0.2,   300,  "addition up to 3 digits"),
    Stage(3, "add4",     "add",     1, 4,  0.2,   350,  "addition up to 4 digits"),
    Stage(4, "sub4",     "sub",     1, 4,  0.25,  400,  "subtraction up to 4 digits, A ≥ B"),
    Stage(5, "cmp4",     "cmp",     1, 4,  0.25,  450,  "compare numbers up to 4 digits"),
    Stage(6, "copy8",    "copy",    1, 8,  0.25,  150,  "copy up to 8 characters"),
    Stage(7, "reverse8", "reverse", 1, 8,  0.25,  200,  "reverse up to 8 characters"),
    Stage(8, "max8",     "max",     1, 8,  0.25,  350,  "largest of up to 8 digits"),
    Stage(9, "sort6",    "sort",    1, 6,  0.25,  550,  "sort up to 6 digits"),
    Stage(10, "mul2",    "mul",     1, 2,  0.25,  350,  "multiplication up to 2 digits"),
    Stage(11, "mul3",    "mul",     1, 3,  0.25,  450,  "multiplication up to 3 digits"),
    # The Chomsky-hierarchy benchmark's tasks (Delétang et al. 2023; docs/results.md): trained
    # short, evaluated at 41-500 symbols (python -m llamacpu.eval --protocol chomsky).
    Stage(12, "revstr8", "reverse_string", 1, 8, 0.25, 220, "reverse a bit string "
                                                                     "of up to 8 bits"),
    Stage(13, "dupstr8", "duplicate_string", 1, 8, 0.25, 260, "a bit string twice, "
                                                                        "up to 8 bits"),
    Stage(14, "odds8", "odds_first", 1, 8, 0.25, 300, "odd-indexed bits first, up to "
                                                            "8 bits"),
    Stage(15, "binadd8", "binary_addition", 1, 8, 0.25, 340, "add two little-endian "
                                                                      "binary numbers, 8 "
                                                                      "symbols"),
    Stage(16, "bsort8", "bucket_sort", 1, 8, 0.25, 420, "sort a string of 5 tokens, up "
                                                              "to 8"),
    Stage(17, "binmul8", "binary_multiplication", 1, 8, 0.25, 450,
          "multiply two little-endian binary numbers, 8 symbols"),
    Stage(18, "sqrt8", "compute_sqrt", 1, 8, 0.25, 600, "floor of the square root "
                                                                "of a binary number, 8 bits"),
    # Requests no program of the machine computes (docs/wordings.md): the plan is the
    # decline program, which solve reports as "cannot compile". Half of each batch reviews
    # the known tasks, so the controller learns where the line between them runs.
    Stage(19, "declnum4", "foreign_numbers", 1, 4, 0.5, 100,
          "decline requests about two numbers it has no program for"),
    Stage(20, "decllist6", "foreign_list", 1, 6, 0.5, 100,
          "decline requests about a list of digits"),
    Stage(21, "decltext8", "foreign_text", 1, 8, 0.5, 100,
          "decline requests about a text"),
    # The weight-token channel (docs/weights.md): f is written into a WEIGHTS slot by the
    # controller's weight head; held out by function. fmap5_data is the same problem with f
    # in ten DATA slots (the channel-off baseline, its own wordings).
    Stage(22, "fmap5",   "fmap",    1, 5,  0.2,   600,  "apply an in-context digit function "
                                                          "to up to 5 digits (WEIGHTS slot)"),
    Stage(23, "fmap5_data", "fmap_data", 1, 5, 0.2, 800, "the same with the function in "
                                                          "DATA slots (channel off)"),
    # Composed requests (docs/lasm.md, "The compile phase"): the plan is the compile
    # marker, and the controller's compile head builds the main program of library calls
    # from the prompt, one bounded view at a time; the library runs on the execute phase
    # and the OEU. At most 2 operations: longer prompts are the test.
    Stage(24, "expr4",   "expr",    1, 4,  0.25,  1400,  "arithmetic expressions, 1-2 operations "
                                                          "over numbers up to 4 digits"),
    Stage(25, "chain4",  "chain",   1, 4,  0.25,  1700, "instructions in words, 1-2 steps over "
                                                          "numbers up to 4 digits"),
    # The closing review (docs/training.md): every task so far, uniformly, for a whole
    # cosine from a tenth of the peak rate under a slow average. Each stage is left at a
    # high rate when it passes, so which few held-out wordings read right still moves with
    # every step; the review lets the plans settle. Budget: the largest stage's (chain4).
    Stage(26, "review", EVERY_TASK, 1, 1, 0.0, 1700, "every task so far, uniformly, at a "
          "tenth of the rate: the plans settle", eval_size=1000, train_steps=3000,
          lr_scale=0.1, ema=0.999),
)


def check_stages(stages: Sequence[Stage]) -> None:
    """Raise ValueError unless indices run 0, 1, ..., names are unique and stage 0 reviews
    nothing (it has no earlier stages)."""
    if not stages:
        raise ValueError("a curriculum needs at least one stage")
    for i, s in enumerate(stages):
        if s.index != i:
            raise ValueError(f"stage {s.name!r} has index {s.index}, expected {i}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    if stages[0].review != 0.0:
        raise ValueError("stage 0 has no earlier stages to review: its review must be 0")


check_stages(STAGES)


def stages_table(stages: Sequence[Stage] = STAGES) -> str:
    """The table as Markdown (for the README and ``--help`` texts)."""
    rows = ["| # | name | task | lengths | review | max steps | competence | what |",
            "|---|---|---|---|---|---|---|---|"]
    for s in stages:
        rows.append(f"| {s.index} | {s.name} | {task_text(s)} | {lengths_text(s, '–')} | "
                    f"{s.review:g} | {s.max_steps} | {s.competence:g} | "
                    f"{s.description} |")
    return "\n".join(rows) + "\n"


def task_text(stage: Stage) -> str:
    """The task column of a stage table."""
    return "every task" if stage.reviews_all else stage.task


def lengths_text(stage: Stage, dash: str = "-") -> str:
    """The lengths column of a stage table (``1–4 digits``)."""
    if stage.reviews_all:
        return "each task's widest"
    span = f"{stage.min_length}" + (f"{dash}{stage.max_length}"
                                    if stage.max_length > stage.min_length else "")
    return f"{span} {TASKS[stage.task].unit}"


# ---------------------------------------------------------------------------- drawing


def is_heldout(key: str, buckets: int = HOLDOUT_BUCKETS) -> bool:
    """Whether a prompt (or a task's held-out key, ``tasks.heldout_key``) is reserved for
    evaluation: a stable hash of the text (not ``hash``, which changes per process) puts it
    in bucket 0 of ``buckets``."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets == 0


_MAX_TRIES = 1000  # rejection-sampling attempts per training example before giving up


def _training_example(stage: Stage, rng: random.Random, split: str = "train",
                      alphabet: Alphabet = DEFAULT_ALPHABET) -> Example:
    from llamacpu.learn.compiling import held_out_combination

    for _ in range(_MAX_TRIES):
        ex = stage.sample(rng, split, alphabet)
        if not is_heldout(heldout_key(ex)) and not held_out_combination(ex):
            return ex
    raise RuntimeError(f"stage {stage.name}: no training prompt outside the held-out "
                       f"partition in {_MAX_TRIES} draws")


CONSOLIDATE_REVIEW = 0.5
"""Review share of a batch while a stage consolidates (see :data:`Decision.CONSOLIDATE`)."""


def review_weights(retained: Mapping[str, float]) -> dict[str, float]:
    """Per-task weights for choosing review examples, from retained accuracies: ``1 + 9 ·
    (1 − accuracy)``, so a task kept perfectly keeps its plain share and a forgotten one
    gets ten times it (every task keeps some: weighting only the dropped ones would let the
    others go next)."""
    out = {}
    for task, acc in retained.items():
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"retained accuracy of {task} must be in [0, 1], got {acc}")
        out[task] = 1.0 + 9.0 * (1.0 - acc)
    return out


def sample_batch(stage: Stage, rng: random.Random, batch_size: int,
                 stages: Sequence[Stage] = STAGES, *, review: float | None = None,
                 weights: Mapping[str, float] | None = None,
                 split: str = "train",
                 alphabet: Alphabet = DEFAULT_ALPHABET,
                 trained: Collection[int] | None = None) -> list[Example]:
    """A training batch: ``round(review · batch_size)`` examples from earlier stages, the
    rest from this stage, shuffled, in the wordings of ``split`` (one of
    ``tasks.TRAINING_SPLITS``), written in ``alphabet``. Never a held-out prompt (see the
    module docstring).

    ``review`` overrides the stage's own share. Each review example comes from an earlier
    stage chosen with probability proportional to ``weights[its task]`` (default 1 for every
    task, i.e. uniformly over stages; tasks missing from ``weights`` count 1). ``trained``:
    the indices of the earlier stages the machine learned (a run that skipped stages:
    :func:`trained_stages`); None: every earlier stage.

    A review of every task (:data:`EVERY_TASK`) draws its own share from the last stage of
    each task trained before it (:func:`last_stages`), uniformly over tasks (by ``weights``,
    if given), and its review share as any stage does.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if split not in TRAINING_SPLITS:
        raise ValueError(f"split must be one of {', '.join(TRAINING_SPLITS)}, got {split!r}")
    share = stage.review if review is None else review
    if not 0.0 <= share < 1.0:
        raise ValueError(f"review must be in [0, 1), got {share}")
    earlier = [s for s in stages[: stage.index] if trained is None or s.index in trained]
    n_review = round(share * batch_size) if earlier else 0
    if weights is None:
        pick = lambda: rng.choice(earlier)  # noqa: E731
    else:
        w = [weights.get(s.task, 1.0) for s in earlier]
        if any(x < 0 for x in w) or not sum(w) > 0:
            raise ValueError(f"review weights must be >= 0 with a positive sum, got {weights}")
        pick = lambda: rng.choices(earlier, weights=w)[0]  # noqa: E731
    batch = [_training_example(pick(), rng, split, alphabet) for _ in range(n_review)]
    if stage.reviews_all:
        tasks = last_stages(stage, stages, trained)
        if not tasks:
            raise ValueError(f"stage {stage.name}: no earlier task to review")
        w = [1.0 if weights is None else weights.get(s.task, 1.0) for s in tasks]
        batch += [_training_example(rng.choices(tasks, weights=w)[0], rng, split, alphabet)
                  for _ in range(batch_size - n_review)]
    else:
        batch += [_training_example(stage, rng, split, alphabet)
                  for _ in range(batch_size - n_review)]
    rng.shuffle(batch)
    return batch


def eval_set(stage: Stage, seed: int, size: int | None = None,
             seen: Collection[str] = frozenset(), split: str = "train",
             alphabet: Alphabet = DEFAULT_ALPHABET, stages: Sequence[Stage] = STAGES,
             trained: Collection[int] | None = None) -> list[Example]:
    """Fresh eval examples for a stage: distinct held-out prompts not in ``seen``.

    ``split="train"`` (or ``"grammar_train"``): training wordings, prompts in the held-out
    partition only;
    ``split="heldout"``: wordings training never uses, any prompt; ``"recombined"``,
    ``"new_words"``: the grammar's held-out splits (``learn/wordings.py``), any prompt.

    Written in ``alphabet`` (its wordings and payloads). Deterministic in (stage.index,
    stage.name, seed, size, seen, split, alphabet), independent of any training RNG. ``split="heldout"`` uses wordings training never sees. Returns fewer than
    ``size`` (default ``stage.eval_size``) only when the stage has fewer such prompts.

    A review of every task (:data:`EVERY_TASK`): ``size`` split evenly over the last stages
    of the tasks trained before it (``stages``, ``trained``: :func:`last_stages`), each
    drawn as that stage's eval set.
    """
    if split not in ALL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(ALL_SPLITS)}, got {split!r}")
    size = stage.eval_size if size is None else size
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if stage.reviews_all:
        return [e for s, each in _shares(stage, size, stages, trained)
                for e in eval_set(s, seed, each, seen, split, alphabet)]
    from llamacpu.learn.compiling import held_out_combination

    rng = random.Random(f"llamacpu.eval/{stage.index}/{stage.name}/{split}/{seed}")
    out: list[Example] = []
    taken: set[str] = set()
    for _ in range(10 * HOLDOUT_BUCKETS * size):  # ample: ~1 draw in HOLDOUT_BUCKETS fits
        ex = stage.sample(rng, split, alphabet)
        if ex.prompt in taken or ex.prompt in seen or held_out_combination(ex):
            continue  # (a held-out combination is the test of the stage, not its check)
        # held-out wordings need no partition (never trained on), unless the task holds
        # out something else too (fmap: its functions)
        keyed = TASKS[stage.task].heldout_key is not None
        if (split in TRAINING_SPLITS or keyed) and not is_heldout(heldout_key(ex)):
            continue
        taken.add(ex.prompt)
        out.append(ex)
        if len(out) == size:
            break
    return out


def _shares(stage: Stage, size: int, stages: Sequence[Stage],
            trained: Collection[int] | None) -> list[tuple[Stage, int]]:
    """A review's ``size`` prompts split evenly over the tasks it reviews (at least one
    each): (that task's last stage, its share)."""
    tasks = last_stages(stage, stages, trained)
    return [(s, max(1, size // len(tasks))) for s in tasks]


def competence_set(stage: Stage, seed: int, split: str = "train",
                   alphabet: Alphabet = DEFAULT_ALPHABET, stages: Sequence[Stage] = STAGES,
                   trained: Collection[int] | None = None) -> list[Example]:
    """What the trainer's competence check solves: ``stage.eval_size`` held-out prompts of
    the training wordings, topped up with prompts of the held-out wordings when the
    training wordings' held-out partition has fewer (small stages).

    Stage 0 has 100 digit pairs and only 67 held-out prompts in its training wordings,
    which hold 52 of the pairs: a machine passed whose OEU still had 3 + 0 = 4. Topped up
    to 200 with held-out wordings, the check holds 92 of them. Larger stages keep their
    training wordings only: a held-out wording such as ``difference of a and b`` names
    the task with words training never used, which a from-scratch LM cannot be asked to
    read (measured: the subtraction stage stuck at 86% on such a check, every miss a
    held-out wording compiled as addition).

    ``split="grammar_train"`` (a run trained on the tasks' grammars, ``train --wordings
    grammar``): ``stage.eval_size`` held-out prompts of those wordings and half as many in
    the recombined split (words and structures trained, in combinations never trained).
    Every prompt is written in ``alphabet`` (the run's). A review of every task: the union
    of its tasks' competence sets at ``stage.eval_size`` split evenly over them.
    """
    if stage.reviews_all:
        return [e for s, each in _shares(stage, stage.eval_size, stages, trained)
                for e in competence_set(replace(s, eval_size=each), seed, split, alphabet)]
    if split == "grammar_train":  # the run trains on the grammar: judge recombined too
        first = eval_set(stage, seed=seed, size=stage.eval_size, split=split,
                         alphabet=alphabet)
        return first + eval_set(stage, seed=seed, size=stage.eval_size // 2,
                                split="recombined", seen={e.prompt for e in first},
                                alphabet=alphabet)
    first = eval_set(stage, seed=seed, size=stage.eval_size, alphabet=alphabet)
    if len(first) >= stage.eval_size:
        return first
    return first + eval_set(stage, seed=seed, size=stage.eval_size - len(first),
                            split="heldout", seen={e.prompt for e in first},
                            alphabet=alphabet)


# ---------------------------------------------------------------------------- the rule


class Decision(enum.Enum):
    """What the trainer does after an evaluation."""

    ADVANCE = "advance"   # competence reached: go to the next stage
    STAY = "stay"         # keep training this stage
    GIVE_UP = "give_up"   # the stage's training budget is spent without competence
    CONSOLIDATE = "consolidate"  # competence reached, but an earlier task fell below the
    #                              retention floor: keep training, review weighted to it


def decide(stage: Stage, accuracy: float, steps_in_stage: int,
           max_steps_in_stage: int, retained: Mapping[str, float] | None = None,
           retention: float = 0.0, certified: bool | None = None) -> Decision:
    """The curriculum rule, a pure function of measured numbers (no hidden state).

    ``accuracy`` is exact-match accuracy of free runs on the stage's eval set;
    ``steps_in_stage`` and ``max_steps_in_stage`` count *training* steps (optimizer
    updates), not machine steps (that is ``Stage.max_steps``). Competence wins over the
    budget: a stage passed on its last step advances.

    ``retained`` maps each earlier task to its measured accuracy (None: not measured);
    with a ``retention`` floor above 0, a competent stage whose earlier tasks are not all
    at or above it CONSOLIDATEs until its budget is spent, then ADVANCEs (its own task is
    learned; the caller reports the shortfall).

    ``certified`` says whether the learned tables of the stage's task and of every earlier
    task were certified at this check (``learn/certified.py``; None: not checked, the
    sampled-only rule). False keeps a competent stage open until its budget is spent, then
    it gives up (GIVE_UP): a stage with a wrong table entry is not passed, whatever the sample says.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if steps_in_stage < 0 or max_steps_in_stage < 1:
        raise ValueError(f"need steps_in_stage >= 0 and max_steps_in_stage >= 1, got "
                         f"{steps_in_stage} and {max_steps_in_stage}")
    if not 0.0 <= retention <= 1.0:
        raise ValueError(f"retention must be in [0, 1], got {retention}")
    for task, acc in (retained or {}).items():
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"retained accuracy of {task} must be in [0, 1], got {acc}")
    if accuracy >= stage.competence and certified is not False:
        forgot = retention > 0 and any(a < retention for a in (retained or {}).values())
        if forgot and steps_in_stage < max_steps_in_stage:
            return Decision.CONSOLIDATE
        return Decision.ADVANCE
    if steps_in_stage >= max_steps_in_stage:
        return Decision.GIVE_UP
    return Decision.STAY


# ---------------------------------------------------------------------------- parsing


def _allowed(stages: Sequence[Stage]) -> str:
    return (f"stages are 0-{len(stages) - 1} "
            f"({', '.join(f'{s.index}={s.name}' for s in stages)})")


def parse_stage(text: str, stages: Sequence[Stage] = STAGES) -> int:
    """A stage index from its number or its name (``"2"`` or ``"add3"``)."""
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        i = int(t)
        if i < len(stages):
            return i
        raise ValueError(f"stage {i} is out of range: {_allowed(stages)}")
    for s in stages:
        if s.name == t:
            return s.index
    raise ValueError(f"unknown stage {text!r}: {_allowed(stages)}")


def parse_stages(text: str, stages: Sequence[Stage] = STAGES) -> list[int]:
    """Stage indices, sorted and distinct, from ``"0-3"``, ``"0,2,5"``, ``"1-3,mul2"`` or
    ``"all"``. A range ``a-b`` includes both ends and needs ``a <= b``."""
    t = text.strip()
    if t == "all":
        return list(range(len(stages)))
    if not t:
        raise ValueError(f"no stages given: {_allowed(stages)}")
    chosen: set[int] = set()
    for part in t.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\w+)\s*-\s*(\w+)", part)
        if m and not any(s.name == part for s in stages):
            lo, hi = parse_stage(m[1], stages), parse_stage(m[2], stages)
            if lo > hi:
                raise ValueError(f"stage range {part!r} runs backwards: write {hi}-{lo}")
            chosen.update(range(lo, hi + 1))
        elif part:
            chosen.add(parse_stage(part, stages))
        else:
            raise ValueError(f"empty item in stage list {text!r}: {_allowed(stages)}")
    return sorted(chosen)


def trained_tasks(stage: int, stages: Sequence[Stage] = STAGES,
                  trained: Collection[int] | None = None) -> dict[str, int]:
    """{task: longest trained length} over the stages up to index ``stage`` (only those in
    ``trained``, when given: :func:`trained_stages`), in curriculum order: what a checkpoint
    of that stage has learned."""
    out: dict[str, int] = {}
    for s in stages[: stage + 1]:
        if (trained is None or s.index in trained) and not s.reviews_all:
            out[s.task] = max(out.get(s.task, 0), s.max_length)
    return out


def last_stages(stage: Stage, stages: Sequence[Stage] = STAGES,
                trained: Collection[int] | None = None) -> list[Stage]:
    """For each task trained before ``stage`` other than its own (only the stages in
    ``trained``, when given), the last stage that trained it: the widest lengths that task
    has seen, in the order the tasks were first trained."""
    last: dict[str, Stage] = {}
    for s in stages[: stage.index]:
        if (s.task != stage.task and not s.reviews_all
                and (trained is None or s.index in trained)):
            last[s.task] = s
    return list(last.values())


def trained_stages(checkpoint) -> list[int]:
    """The stages a checkpoint's machine trained on, its own included (passed or not): what
    the trainer recorded (``extra["trained_stages"]``: a run that started a stage from an
    earlier stage's checkpoint skipped the ones between), else every stage up to its own."""
    extra = getattr(checkpoint, "extra", None) or {}
    if "trained_stages" in extra:
        return [int(i) for i in extra["trained_stages"]]
    return list(range(checkpoint.stage + 1))
