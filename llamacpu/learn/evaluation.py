"""The evaluation core: the machine runs *free* on held-out prompts (no expert, no symbolic
part) and is scored by exact match against Python's answer. The trainer, ``python -m
llamacpu.eval``, ``python -m llamacpu.check`` (through ``evaluate.properties.check_learned``)
and ``python -m llamacpu.bench baselines`` all build on it.

- Loading: :func:`load_learned` (the machine of a checkpoint directory) and
  :func:`load_checkpoint_machine` (the checkpoint too).
- Drawing: :func:`draw_examples`, fresh problems of one length from their own seed
  (the curriculum's ``eval_set`` draws the trainer's sets; hypothesis draws the check's),
  written in the alphabet of the machine they are for (:func:`alphabet_of`: a checkpoint
  trained with ``--alphabet printable`` is asked capitalised wordings and payloads with
  any printable character).
- The reference: :func:`reference_run` (the reference interpreter on the expert program)
  and :func:`step_budget` (the machine steps a run may take, from the expert's).
- Running: :func:`solve_examples`, the machine free in batches, with a fixed step budget or
  one measured on the longest example.
- Scoring: :func:`exact` (the one definition of a right answer), :func:`evaluate` (accuracy,
  sharded with ``dist``), :func:`screened_evaluate` (stops once a check can no longer pass),
  :func:`evaluate_lengths` (exact match and per-token accuracy per length, with wall time
  and failures).
- Protocols: a published benchmark's test lengths and score (:class:`Protocol`,
  :data:`PROTOCOLS`; ``python -m llamacpu.eval --protocol chomsky``), scored by
  :func:`token_score` and :func:`per_token_accuracy` and summed up by
  :func:`protocol_summary`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet
from llamacpu.learn import checkpoint as ckpt
from llamacpu.learn import distributed
from llamacpu.learn.compiling import HELD_OUT_COMBINATIONS, held_out_combination
from llamacpu.learn.curriculum import is_heldout
from llamacpu.learn.learned import LearnedMachine, Solution
from llamacpu.learn.tasks import TASKS, Example, TaskError, default_out_size, heldout_key

__all__ = ["Check", "evaluate", "screened_evaluate", "exact",
           "step_budget", "reference_run", "solve_examples", "calibrate_abstention",
           "draw_examples", "alphabet_of",
           "evaluate_lengths", "load_learned", "load_checkpoint_machine", "Protocol",
           "CHOMSKY", "PROTOCOLS", "token_score", "per_token_accuracy", "protocol_summary"]

REFERENCE_MAX_STEPS = 100_000_000
"""Step limit of a reference run: far beyond any expert program on any task length."""


# ------------------------------------------------------------------------------ loading


def load_checkpoint_machine(path: Path) -> tuple[ckpt.Checkpoint, LearnedMachine]:
    """A checkpoint directory (safetensors + JSON, no pickle) and the learned machine it
    holds, in eval mode."""
    c = ckpt.load_checkpoint(path)
    return c, LearnedMachine.from_checkpoint(c).eval()


def load_learned(path: Path) -> LearnedMachine:
    """The learned machine saved in a checkpoint directory (safetensors + JSON, no pickle)."""
    return load_checkpoint_machine(path)[1]


# ------------------------------------------------------------------------------ drawing


def alphabet_of(model) -> Alphabet:
    """The alphabet a machine reads prompts in: a ``LearnedMachine``'s (its checkpoint's),
    else (anything else with ``solve``) the default one."""
    return getattr(model, "alphabet", DEFAULT_ALPHABET)


def draw_examples(task: str, length: int, n: int, seed: int = 0,
                  split: str = "train", uniform: bool = False,
                  alphabet: Alphabet = DEFAULT_ALPHABET, *, ops: int | None = None,
                  parens: bool | None = None, combinations: str = "any",
                  wordings: int | None = None) -> list[Example]:
    """``n`` problems of ``length`` from their own seed, written in ``alphabet``; for a task
    that holds something out besides prompts (fmap: functions, ``Task.heldout_key``) only
    held-out ones. With ``uniform``, no edge cases (``Task.edge_rate`` 0): a benchmark's
    own distribution. ``ops`` and ``parens``: a composed task's other sizes
    (``Task.draw_options``; a TaskError for a task without them); the problems of a
    composed task at given ``ops`` come from a seed of their own. ``combinations``:
    "any", or only problems that hold ("held_out") or do not hold ("trained") the task's
    held-out combination (``compiling.HELD_OUT_COMBINATIONS``), each from a seed of its
    own. ``wordings``: ``n`` problems in each of that many wordings of ``split`` (a seeded
    sample of them, the same at every length; all of them when there are fewer), each
    wording's from a seed of its own, wording after wording."""
    if combinations not in COMBINATIONS:
        raise ValueError(f"combinations must be one of {', '.join(COMBINATIONS)}, got "
                         f"{combinations!r}")
    if combinations != "any" and task not in HELD_OUT_COMBINATIONS:
        raise TaskError(f"task {task} holds no combination out (tasks that do: "
                        f"{', '.join(HELD_OUT_COMBINATIONS)})")
    sizes = "" if ops is None and parens is None else f"/{ops}/{parens}"
    sizes += "" if combinations == "any" else f"/{combinations}"
    spec = dataclasses.replace(TASKS[task], edge_rate=0.0) if uniform else TASKS[task]
    if wordings is not None:
        if wordings < 1:
            raise ValueError(f"wordings must be at least 1, got {wordings}")
        every = sorted(spec.templates(split, alphabet))
        if not every:
            raise TaskError(f"task {task} has no wordings in split {split}")
        picked = random.Random(f"eval/{task}/wordings/{split}/{seed}").sample(
            every, min(wordings, len(every)))
        return [e for t in picked for e in _draw(
            spec, random.Random(f"eval/{task}/{length}/{seed}{sizes}/{t}"), n, length,
            split, alphabet, ops, parens, combinations, t)]
    return _draw(spec, random.Random(f"eval/{task}/{length}/{seed}{sizes}"), n, length,
                 split, alphabet, ops, parens, combinations)


def _draw(spec, rng: random.Random, n: int, length: int, split: str, alphabet: Alphabet,
          ops: int | None, parens: bool | None, combinations: str,
          template: str | None = None) -> list[Example]:
    """:func:`draw_examples`' loop: ``n`` problems from ``rng``, in ``template`` if given
    (else a wording of ``split`` each)."""
    keyed = spec.heldout_key is not None
    out: list[Example] = []
    tries = 0
    while len(out) < n:
        if template is None:
            ex = spec.sample(rng, length, split=split, alphabet=alphabet, ops=ops,
                             parens=parens)
        else:
            spec.check_length(length)
            ex = spec.make(spec.draw_operands(rng, length, alphabet, ops=ops, parens=parens),
                           template, alphabet)
        tries += 1
        if combinations != "any" and held_out_combination(ex) != (combinations == "held_out"):
            if tries > 1000 * n:
                raise TaskError(f"{spec.name}: no {combinations.replace('_', '-')} combination "
                                f"in {tries} draws of {ops} operations")
            continue
        if not keyed or is_heldout(heldout_key(ex)):
            out.append(ex)
    return out


COMBINATIONS = ("any", "held_out", "trained")
"""What :func:`draw_examples` may restrict a composed task's problems to."""


# ------------------------------------------------------------------------------ the reference


def reference_run(example: Example, trace: bool = False):
    """The reference interpreter running the example's expert program: an ``interp.Result``
    (answer, steps and, with ``trace``, the trace)."""
    from llamacpu.core.interp import run
    from llamacpu.learn.tasks import expert_program

    return run(expert_program(example), example.prompt, REFERENCE_MAX_STEPS, trace=trace,
               out_size=default_out_size(example))


def step_budget(steps: int) -> int:
    """Machine steps allowed for a run whose expert run took ``steps``: double, plus 100."""
    return 2 * steps + 100


# ------------------------------------------------------------------------------ running


def solve_examples(model, examples: Sequence[Example], batch: int = 256,
                   max_steps: int | None = None, abstain_below: float | None = None
                   ) -> Iterator[tuple[Example, Solution]]:
    """The machine running free on ``examples`` in batches of ``batch``: yields ``(example,
    Solution)`` in order. ``model``: anything with ``LearnedMachine.solve``. ``max_steps``
    None: a generous budget per batch, :func:`step_budget` of the costliest reference run
    among its examples (not of the longest prompt: a binary product, a bubble sort or a
    square root costs more or less at the same length, with the operands).
    ``abstain_below``: ``solve``'s threshold on the plan's confidence."""
    extra = {} if abstain_below is None else {"abstain_below": abstain_below}
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        budget = max_steps if max_steps is not None else step_budget(
            max(reference_run(e).steps for e in chunk))
        sols = model.solve([e.prompt for e in chunk], max_steps=budget,
                           out_sizes=[default_out_size(e) for e in chunk], **extra)
        yield from zip(chunk, sols)


def calibrate_abstention(model: LearnedMachine, examples: Sequence[Example], rate: float,
                         batch: int = 256) -> dict:
    """The threshold on the plan's confidence (``Controller.emit_scored``) at which the
    machine declines to run at most ``rate`` of ``examples`` — prompts of tasks it knows,
    in held-out wordings: the confidence of the ``floor(rate · n)``-th least sure plan (a
    plan below it abstains, so at most that many do). Measure what it declines elsewhere
    on fresh problems (``evaluate_lengths(..., abstain_below=t)``): a threshold is only
    honest on prompts it was not chosen on."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if not examples:
        raise ValueError("calibration needs at least one prompt")
    conf: list[float] = []
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            _, c = model.controller.emit_scored([e.prompt for e in examples[i:i + batch]])
            conf += c.tolist()
    ranked = sorted(conf)
    threshold = ranked[int(rate * len(ranked))]
    return {"threshold": threshold, "rate": rate, "prompts": len(ranked),
            "abstained": sum(c < threshold for c in conf),
            "tasks": sorted({e.task for e in examples}),
            "least_sure": [round(c, 6) for c in ranked[:5]]}


# ------------------------------------------------------------------------------ scoring


def exact(example: Example, solution: Solution) -> bool:
    """Whether a free run answered ``example`` right: Python's answer, and no fault; for a
    task whose right answer is to decline (``Task.declines``), that it declined."""
    if TASKS[example.task].declines:
        return solution.abstained
    return solution.output == example.answer and solution.fault is None


def evaluate(model: LearnedMachine, examples: Sequence[Example], max_steps: int | None,
             batch: int = 256, dist: distributed.Dist | None = None) -> float:
    """Exact-match accuracy of the free-running machine on ``examples`` (``max_steps``
    None: each batch's budget from its reference runs, see :func:`solve_examples`); with
    ``dist``, each rank solves its stride of them and the counts are summed (the same
    number on every rank)."""
    mine = dist.take(examples) if dist is not None else list(examples)
    correct = sum(exact(e, s) for e, s in solve_examples(model, mine, batch, max_steps))
    if dist is not None:
        correct = int(dist.sum(torch.tensor([correct], dtype=torch.int64)).item())
    return correct / max(1, len(examples))


class Check(NamedTuple):
    """A competence check: exact matches among the first ``solved`` held-out prompts."""

    correct: int
    solved: int
    total: int

    @property
    def accuracy(self) -> float:
        """Exact match over the prompts solved."""
        return self.correct / max(1, self.solved)

    @property
    def best(self) -> float:
        """The most the whole set can score: the unsolved prompts counted as right."""
        return (self.correct + self.total - self.solved) / max(1, self.total)


def screened_evaluate(model: LearnedMachine, examples: Sequence[Example],
                      max_steps: int | None,
                      screen: int, competence: float,
                      dist: distributed.Dist | None = None) -> Check:
    """:func:`evaluate` that solves the first ``screen`` prompts and stops there when the
    whole set can no longer reach ``competence`` (:attr:`Check.best` below it); otherwise it
    solves the rest too. A stop cannot change a pass decision: only a check that could
    still pass goes on to the full set. ``screen`` 0: the full set at once."""
    n = len(examples)
    head = examples[:screen] if 0 < screen < n else examples
    correct = _count_correct(model, head, max_steps, dist=dist)
    check = Check(correct, len(head), n)
    if check.solved == n or check.best < competence:
        return check
    rest = _count_correct(model, examples[len(head):], max_steps, dist=dist)
    return Check(correct + rest, n, n)


def _count_correct(model: LearnedMachine, examples: Sequence[Example], max_steps: int | None,
                   batch: int = 256, dist: distributed.Dist | None = None) -> int:
    return round(evaluate(model, examples, max_steps, batch, dist) * len(examples))


def evaluate_lengths(model: LearnedMachine, task: str, lengths: Sequence[int], n: int,
                     seed: int = 0, split: str = "train", batch: int = 64,
                     log=None, sub_batch: int = 64, uniform: bool = False,
                     abstain_below: float | None = None,
                     alphabet: Alphabet | None = None, *, ops: int | None = None,
                     parens: bool | None = None, combinations: str = "any",
                     wordings: int | None = None) -> list[dict]:
    """Exact match and per-token accuracy (:func:`per_token_accuracy` over sub-batches of
    ``sub_batch`` problems) of the free-running machine per length (``n`` problems of
    :func:`draw_examples` each, in ``alphabet``, default the model's: :func:`alphabet_of`),
    with wall time, the most machine steps a run took, how many
    distinct wordings the problems were asked in, how many the machine declined ("cannot
    compile": the decline program, or a plan below ``abstain_below``) and the first three
    failing prompts (cut to 60 characters). ``ops``, ``parens``: a composed task's other
    sizes (:func:`draw_examples`), recorded in each row when given, as is
    ``combinations`` when not "any". ``wordings``: ``n`` problems in each of that many
    wordings (:func:`draw_examples`); each row then has every wording's exact match
    (``per_wording``) and the worst (``worst_wording``)."""
    terminated = TASKS[task].terminated
    alphabet = alphabet_of(model) if alphabet is None else alphabet
    rows = []
    for length in lengths:
        examples = draw_examples(task, length, n, seed, split, uniform, alphabet, ops=ops,
                                 parens=parens, combinations=combinations, wordings=wordings)
        start = time.time()
        correct, steps, abstained = 0, 0, 0
        failures, scores = [], []
        per: dict[str, list[int]] = {}
        for e, s in solve_examples(model, examples, batch, abstain_below=abstain_below):
            ok = exact(e, s)
            correct += ok
            per.setdefault(e.template, []).append(ok)
            abstained += s.abstained
            steps = max(steps, s.steps)
            scores.append(token_score(None if s.fault else s.output, e.answer, terminated))
            if not ok and len(failures) < 3:
                failures.append(e.prompt if len(e.prompt) < 60 else e.prompt[:57] + "...")
        row = {"task": task, "length": length, "n": len(examples),
               "exact_match": correct / len(examples),
               "per_token_accuracy": per_token_accuracy(scores, sub_batch),
               "seconds": time.time() - start, "max_machine_steps": steps,
               "wordings": len({e.template for e in examples}), "abstained": abstained,
               "failures": failures}
        row.update({k: v for k, v in (("ops", ops), ("parens", parens)) if v is not None})
        if combinations != "any":
            row["combinations"] = combinations
        if wordings is not None:
            row["per_wording"] = {t: sum(v) / len(v) for t, v in per.items()}
            worst = min(per, key=lambda t: (row["per_wording"][t], t))
            row["worst_wording"] = {"template": worst, "exact_match": row["per_wording"][worst]}
        rows.append(row)
        if log:
            log(row)
    return rows


# ------------------------------------------------------------------------------ protocols


@dataclass(frozen=True)
class Protocol:
    """A published benchmark's test protocol, which ``python -m llamacpu.eval --protocol``
    follows: the lengths its score averages over and how it scores one length."""

    name: str
    lengths: tuple[int, ...]  # test lengths (the task's unit), every one scored alike
    trained: int              # the benchmark trains its models on lengths 1..trained
    problems: int             # problems per test length the benchmark scores
    sub_batch: int            # it pools token accuracy over sub-batches of this many
    #                           problems, then averages the sub-batches (per_token_accuracy)
    source: str = ""          # where these numbers come from
    uniform: bool = True      # the benchmark draws uniformly: no edge cases

    def __post_init__(self) -> None:
        if not self.lengths or min(self.lengths) < 1 or self.problems < 1 \
                or self.sub_batch < 1:
            raise ValueError(f"protocol {self.name}: lengths of at least 1, problems and "
                             "sub_batch at least 1")


CHOMSKY = Protocol(
    "chomsky", tuple(range(41, 501)), trained=40, problems=512, sub_batch=64,
    source="Delétang et al., Neural Networks and the Chomsky Hierarchy (ICLR 2023); "
           "google-deepmind/neural_networks_chomsky_hierarchy: train on lengths 1..40 "
           "(experiments/example.py), score every length 1..500 (max_range_test_length=500 "
           "in the first release's training/example.py) on 512 sequences in sub-batches of "
           "64 (range_evaluation.py), average the lengths past 40")
"""The Chomsky-hierarchy benchmark: per-token accuracy averaged over the lengths 41..500."""

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (CHOMSKY,)}
"""Every protocol by name (``--protocol``)."""


def token_score(answer: str | None, target: str, terminated: bool = False) -> tuple[int, int]:
    """(right, positions): how many of the target's output positions the answer gets right,
    position by position, and how many there are (the benchmark's per-token accuracy before
    pooling). A shorter answer gets the positions it lacks wrong; a longer one's extra
    symbols fall on no target position and are not counted (the benchmark reads exactly the
    target's positions; exact match catches them). ``terminated`` (``Task.terminated``: the
    benchmark scores a termination token after the answer) appends one end position to both:
    an answer that stops early or runs on gets it wrong. ``answer`` None (a run that
    faulted: no answer) gets every position wrong."""
    want: tuple[str | None, ...] = tuple(target) + ((None,) if terminated else ())
    if answer is None:
        return 0, len(want)
    got: tuple[str | None, ...] = tuple(answer) + ((None,) if terminated else ())
    return sum(a == b for a, b in zip(got, want)), len(want)


def per_token_accuracy(scores: Sequence[tuple[int, int]], sub_batch: int = 64) -> float:
    """The benchmark's accuracy of one length from :func:`token_score`s: within each run of
    ``sub_batch`` consecutive problems, right positions over positions (pooled), then the
    mean over those sub-batches (``range_evaluation``; a last, smaller one counts like the
    others). With at most ``sub_batch`` problems it is simply the fraction of all positions
    right. A sub-batch without positions does not count; none at all: 1.0 (nothing to get
    wrong)."""
    groups = [scores[i:i + sub_batch] for i in range(0, len(scores), sub_batch)]
    rates = [sum(r for r, _ in g) / sum(p for _, p in g) for g in groups
             if sum(p for _, p in g)]
    return sum(rates) / len(rates) if rates else 1.0


def protocol_summary(rows: Sequence[dict], protocol: Protocol) -> dict[str, dict]:
    """Per task of :func:`evaluate_lengths` rows: the score (per-token accuracy averaged over
    the lengths evaluated, each length alike, as the benchmark averages its test lengths),
    the mean exact match, the lengths and problems, and whether the lengths were exactly
    the protocol's."""
    out: dict[str, dict] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        lengths = [r["length"] for r in mine]
        out[task] = {"score": sum(r["per_token_accuracy"] for r in mine) / len(mine),
                     "exact_match": sum(r["exact_match"] for r in mine) / len(mine),
                     "lengths": len(lengths), "min_length": min(lengths),
                     "max_length": max(lengths), "problems": sum(r["n"] for r in mine),
                     "protocol_lengths": sorted(lengths) == sorted(protocol.lengths)}
    return out

