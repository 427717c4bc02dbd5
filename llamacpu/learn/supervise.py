"""Supervision for the curriculum trainer: a batch of prompts run through the expert
programs on the reference interpreter (traced), as targets for the plan, execute and OEU
losses.

The execute loss sees at most ``step_sample`` steps of each run, its rare ones (a loop's
exit) first (:func:`_subsample`), weighted so every kind of step counts the same
(:func:`_balance`). Training prompts may get filler words in front (:func:`_with_filler`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from llamacpu.core.interp import run as interp_run
from llamacpu.core.isa import Alphabet, Op, Program
from llamacpu.learn import distributed
from llamacpu.learn.compiling import is_composed
from llamacpu.learn.composed import EXPRESSION_SYMBOLS
from llamacpu.learn.tasks import TASKS, Example, Operands, default_out_size
from llamacpu.llm.heads import StepView
from llamacpu.llm.supervision import StepTrace, batch_steps, result_to_steps
from llamacpu.machine.oeu import OEUExamples, examples_from_traces, merge_examples

__all__: list[str] = []  # the trainer's internals: Trainer._train_step uses them


EXPERT_MAX_STEPS = 1_000_000  # a training prompt's expert run takes hundreds of steps


@dataclass
class _Supervision:
    """What one batch of expert runs gives every loss."""

    prompts: list[str]
    answers: list[str]
    programs: list[Program]
    step_args: tuple
    oeu: OEUExamples
    steps: list[int]     # each run's length in machine steps
    out_sizes: list[int]  # each run's output region
    plans: list[Program]  # what the plan phase emits (the compile marker for a composed
    #                       task, whose program is built by the compile phase)
    compile: tuple[list, list]  # the composed rows' compile views and expert actions


EXPERT_CACHE = 4096
"""Expert runs kept (:func:`_expert`): an entry holds a run's step views, about 150-200 kB
for a training prompt, so the cache stays under a gigabyte. Early stages draw the same
prompts again and again and hit it; later ones, and grammar wordings, rarely repeat a
prompt, and a larger cache only grows (50,000 entries held 9 GB in a grammar run)."""


@functools.lru_cache(maxsize=EXPERT_CACHE)
def _expert(example: Example, out_size: int):
    """The expert's traced run on a prompt, as execute-phase and ALU supervision (cached,
    :data:`EXPERT_CACHE`), and which steps are *rare*: at a pc the run visits several
    times, a decision other than the one it makes most often there — a loop's exit."""
    from llamacpu.learn.compiling import run_program

    prog = run_program(example)  # a composed prompt another task recalls: that task's
    res = interp_run(prog, example.prompt, EXPERT_MAX_STEPS, trace=True, out_size=out_size)
    steps = result_to_steps(prog, res)
    keys = [(t.pc, tuple(d)) for t, d in zip(res.trace, steps.targets.tolist())]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    usual: dict = {}
    for (pc, dec), n in counts.items():
        if n > counts.get((pc, usual.get(pc)), 0):
            usual[pc] = dec
    rare = tuple(i for i, (pc, dec) in enumerate(keys) if dec != usual[pc])
    return steps, examples_from_traces([res.trace]), len(res.trace), rare


def _subsample(steps: StepTrace, rare: Sequence[int], k: int,
               rng: random.Random) -> tuple[StepTrace, Tensor]:
    """At most ``k`` of a run's steps: its rare ones first, the rest drawn at random (their
    indices are returned too). Loop bodies repeat; their exits are what must not be missed."""
    T = len(steps.targets)
    if T <= k:
        idx = torch.arange(T)
    else:
        keep = list(rare) if len(rare) <= k else rng.sample(list(rare), k)
        rest = sorted(set(range(T)) - set(keep))
        keep += rng.sample(rest, k - len(keep))
        idx = torch.tensor(sorted(keep))
    view = StepView(*(None if x is None else x[idx] for x in steps.view))
    return StepTrace(view, steps.targets[idx]), idx


@functools.cache
def _filler(alphabet: Alphabet, reserved: str) -> str:
    """The characters of filler words: the alphabet's text characters but ':' and
    ``reserved`` (every one but the digits, in the default alphabet's order first)."""
    return "".join(c for c in alphabet.charset if c != ":" and c not in reserved)


FILLER_PLACES = ("front", "anywhere")
"""Where :func:`_with_filler` puts its words in a prompt of a task that is not composed."""


def _with_filler(ex: Example, rng: random.Random, where: str = "front",
                 letters: bool = False) -> Example:
    """``ex`` with one or two random words in its prompt, of the characters of the
    example's alphabet (``letters``: of its lower-case letters only, so no word holds a
    symbol that means something in a request, an operator or a bracket). They hold no
    digit and no ':', which every expert program skips (numbers are digit runs;
    copy/reverse read after the first ':'), nor the symbols the task reserves (fmap's ';',
    an expression's ``+ - * ( )``), so the answer is unchanged.

    ``where`` (:data:`FILLER_PLACES`): ``front``, in front of the prompt; ``anywhere``, at
    one word boundary drawn from all of the wording's: the prompt's start and end and every
    space, of the whole prompt when the task's operands are numbers or digits (its program
    reads digit runs wherever they are), else of the text before its payload (before the
    first ':', ';' or digit). A new wording puts its words anywhere, an ending or a word
    between two operands too, and the plan is the same.

    A composed prompt's words go in front, right before its first operand, or at its end,
    one of the three at random (whatever ``where`` is): its compile phase reads the words
    around the operands (opening, closing, the head of a first clause) one token at a time,
    and words where training put none are what a new wording brings."""
    if where not in FILLER_PLACES:
        raise ValueError(f"where must be one of {', '.join(FILLER_PLACES)}, got {where!r}")
    composed = is_composed(ex.task)
    chars = _filler(ex.alphabet, TASKS[ex.task].reserved + (EXPRESSION_SYMBOLS if composed
                                                             else ""))
    if letters:
        chars = "".join(c for c in chars if "a" <= c <= "z")
    words = " ".join(''.join(rng.choice(chars) for _ in range(rng.randint(1, 6)))
                     for _ in range(rng.randint(1, 2)))
    if composed:
        where = rng.choice(("front", "operand", "end"))
        if where == "end":
            return replace(ex, prompt=ex.prompt + " " + words)
        if where == "operand":
            i = next(i for i, c in enumerate(ex.prompt) if c.isdigit() or c == "(")
            return replace(ex, prompt=ex.prompt[:i] + words + " " + ex.prompt[i:])
    if where == "anywhere":
        return replace(ex, prompt=_insert_anywhere(ex, words, rng))
    return replace(ex, prompt=words + " " + ex.prompt)


def _insert_anywhere(ex: Example, words: str, rng: random.Random) -> str:
    """``ex.prompt`` with ``words`` at a word boundary drawn uniformly (``_with_filler``)."""
    p = ex.prompt
    if TASKS[ex.task].operands in (Operands.NUMBERS, Operands.DIGITS):
        end = len(p)
    else:  # the wording before the payload
        end = next((i for i, c in enumerate(p) if c in ":;" or c.isdigit()), len(p))
    places = sorted({0, *(i for i in range(end) if p[i] == " ")}
                    | ({len(p)} if end == len(p) else set()))
    i = rng.choice(places)
    if i == 0:
        return words + " " + p
    if i == len(p):
        return p + " " + words
    return p[:i] + " " + words + p[i:]  # at a space: " words" goes before it


_KINDS = len(Op) * 2 ** 5  # step kinds: op × (a is 0) × (a == b) × 3 decisions


def _balance(views: StepView, targets: Tensor, mask: Tensor,
             dist: distributed.Dist | None = None) -> Tensor:
    """Per-step loss weights ``[B, T]`` that give every kind of step the same total weight.

    A kind is (op, operand a is 0, operands a and b are equal, decisions). Loop bodies
    repeat one kind hundreds of times, while the step that leaves a loop on a zero digit
    appears once; without balancing the execute phase learns the common kinds and guesses
    the rare ones. With ``dist`` the kinds are counted over every rank's rows (the weights
    of the whole batch).
    """
    op = views.op.argmax(-1)                                                  # [B, T]
    a, b = views.values[..., 0, :], views.values[..., 1, :]                  # [B, T, V]
    zero = a[..., 0] > 0.5
    eq = (a * b).sum(-1) > 0.5
    key = op
    for bit in (zero, eq, *(targets > 0.5).unbind(-1)):
        key = key * 2 + bit.long()                                            # [B, T]
    real = mask > 0
    counts = torch.bincount(key[real], minlength=_KINDS)                      # [kinds]
    if dist is not None:
        counts = dist.sum(counts)
    # w = 1 / count of the step's kind, scaled to mean 1 over the real steps:
    # Σ w = number of kinds present, Σ real = counts.sum()
    w = torch.zeros_like(mask, dtype=torch.float32)
    w[real] = 1.0 / counts[key[real]].float()
    kinds = (counts > 0).sum().clamp(min=1)
    return w * (counts.sum().float() / kinds.float())


def _supervise(batch: Sequence[Example], step_sample: int,
               seeds: Sequence[int], dist: distributed.Dist | None = None) -> _Supervision:
    """Expert runs of ``batch`` (this rank's rows), each run's steps subsampled by its own
    seed (so a row's subsample does not depend on which rank owns it)."""
    from llamacpu.learn.compiling import (
        expert_actions,
        is_composed,
        plan_program,
        recalled_by,
        run_program,
    )

    programs, runs, oeu, idxs, sizes, lengths = [], [], [], [], [], []
    views: list = []
    actions: list = []
    # The expert's run is the supervision, so it must finish whatever the prompt's length
    # (review examples of earlier stages, grammar wordings with long questions around the
    # operands): the cap only stops an expert program that loops.
    for ex, seed in zip(batch, seeds):
        size = default_out_size(ex)
        steps, alu, T, rare = _expert(ex, size)
        sub, idx = _subsample(steps, rare, step_sample, random.Random(seed))
        programs.append(run_program(ex))
        runs.append(sub)
        idxs.append(idx)
        oeu.append(alu)
        sizes.append(size)
        lengths.append(T)
        if is_composed(ex.task) and recalled_by(ex) is None:  # it compiles
            for d in expert_actions(ex):
                views.append(d.view)
                actions.append(d.action)
    step_views, targets, mask = batch_steps(runs)
    mask = _balance(step_views, targets, mask, dist)
    K = targets.shape[1]
    step_idx = torch.stack([torch.nn.functional.pad(i, (0, K - len(i))) for i in idxs])
    return _Supervision([e.prompt for e in batch], [e.answer for e in batch], programs,
                        (step_views, targets, mask, step_idx), merge_examples(*oeu),
                        lengths, sizes, [plan_program(e) for e in batch], (views, actions))
