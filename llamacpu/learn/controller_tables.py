"""Certificates of the controller's tables: the plan and the execute phase, per view.

The OEU half of the certificate, the program analysis both halves share, and the argument
from tables to every length are in :mod:`llamacpu.learn.certify` (docs/certify.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet, Kind, n_ops, opcode
from llamacpu.learn.certify import (
    _carry_sets,
    _digits_only,
)

__all__ = ["Decision", "ControllerCertificate", "certify_controller", "StepPatterns",
           "step_patterns", "failing_rows"]


# ------------------------------------------------------------------ the controller's tables
#
# The plan phase is a function of the LM's view of the prompt (``ControllerConfig.view``,
# :mod:`llamacpu.llm.view`: every payload bounded): the emitted program. The execute phase
# is a function of that view and of what the step head sees of the step
# (``llm.heads.StateEncoder``): the op,
# the operand modes, whether each operand's symbol is 0, which operands are equal (and, with
# ``state_values``, the symbols and the carry themselves). For one view both are finite:
# :func:`certify_controller` checks, per view, the emitted program against the expert's and
# every decision (jump taken, write, halt) at every reachable instruction of the expert
# program for every flag pattern its operands can produce, against the exact sequencer.
# Views are not enumerated here: a task has about a million per two-operand wording, so the
# caller passes the prompts (a sample) and the certificate says how many views it covered.


@dataclass(frozen=True)
class Decision:
    """One wrong decision of the execute phase, or a wrong plan (``what == "plan"``: ``pc``
    is the first slot where the emitted program differs from the expert's)."""

    prompt: str
    pc: int | None
    instruction: str
    values: tuple[int, ...]  # the operand symbols of the pattern (one representative)
    what: str                # "taken", "write", "halt" or "plan"
    want: object
    got: object


@dataclass
class ControllerCertificate:
    views: int                      # distinct views of the prompts checked
    prompts: int
    decisions: int                  # decisions checked
    plan_failures: list[Decision] = field(default_factory=list)
    step_failures: list[Decision] = field(default_factory=list)
    enumerated: bool = False        # the views are every view of the wordings checked (set
    #                                 by the caller that enumerated them: every_view)

    @property
    def certified(self) -> bool:
        return not (self.plan_failures or self.step_failures)

    def summary(self, limit: int = 10) -> str:
        head = (f"plan and execute tables {'CERTIFIED' if self.certified else 'NOT CERTIFIED'}"
                f" on {self.views} views ({self.prompts} prompts, "
                f"{'every view of their wordings' if self.enumerated else 'sampled'}): "
                f"{self.views - len(self.plan_failures)} emitted programs equal to the "
                f"expert's, {self.decisions} decisions checked")
        lines = [head]
        for name, fails in (("plan", self.plan_failures), ("execute", self.step_failures)):
            if fails:
                lines.append(f"{len(fails)} wrong {name} entries:")
                lines += [f"  {f.prompt!r}: emitted {f.got}, want {f.want}" if f.what == "plan"
                          else f"  {f.prompt!r} pc {f.pc} {f.instruction} values {f.values}: "
                          f"{f.what} {f.got}, want {f.want}" for f in fails[:limit]]
                if len(fails) > limit:
                    lines.append(f"  ... and {len(fails) - limit} more")
        return "\n".join(lines)


def _value_patterns(slot, alphabet: Alphabet, carries: frozenset[int], raw: bool,
                    fixed: Sequence[int | None] | None = None
                    ) -> list[tuple[tuple[int, ...], int]]:
    """(operand symbols per field, carry) covering every flag pattern (or, with ``raw``,
    every value) the instruction's operands can take; ``fixed[f]``: field f always reads
    that symbol (a DIRECT operand naming an instruction slot, which no write changes)."""
    from itertools import product

    from llamacpu.core.isa import NUM_FIELDS, Mode

    op = opcode(slot.op)
    digits_only = _digits_only(op)
    full = range(alphabet.base if digits_only else alphabet.size)
    imms = sorted({int(slot.val)} if any(m == Mode.IMMEDIATE for m in slot.modes) else set())
    if raw:
        pool = list(full)
    else:  # 0, the immediates, and enough fresh distinct symbols for any equality pattern
        fresh = [v for v in full if v != 0 and v not in imms][:NUM_FIELDS]
        pool = sorted({0, *imms, *fresh} & set(full))
    per_field = []
    for f in range(NUM_FIELDS):
        mode = slot.modes[f] if f < len(slot.modes) else Mode.NONE
        if mode == Mode.NONE:
            per_field.append((0,))
        elif mode == Mode.IMMEDIATE:
            per_field.append((int(slot.val),))
        elif fixed is not None and fixed[f] is not None:
            per_field.append((fixed[f],))
        else:
            per_field.append(tuple(pool))
    cs = sorted(carries) if raw else [min(carries)]
    return [(vals, c) for vals in product(*per_field) for c in cs]


@torch.no_grad()
def certify_controller(model, prompts: Sequence[str], programs: Sequence,
                       batch: int = 4096, plans: Sequence | None = None,
                       execute: bool = True, emitted: Sequence | None = None
                       ) -> ControllerCertificate:
    """Check the plan and execute tables of ``model`` on ``prompts``, whose expert programs
    are ``programs`` (one each), one check per distinct view. The plan must be ``plans``
    (default: the programs; a composed prompt's is the compile marker,
    ``compiling.plan_program``) and the execute table is checked on the programs. ``model``
    is a LearnedMachine, or anything with ``controller.cfg``, ``controller.emit(prompts)``
    and ``machine(prompts).sequencer`` (the machine's Sequencer for those prompts).
    ``execute=False`` checks the plans alone (no decision is checked: a certificate only
    when a plan is wrong, which fails it whatever the execute table holds). ``emitted``:
    the plans the controller emitted for ``prompts`` (one each), when the caller has them
    (the compiled runner, a check whose plans were checked alone first): not emitted
    again."""
    from llamacpu.core.graph import instr_text
    from llamacpu.core.isa import Mode
    from llamacpu.machine.interfaces import StepView
    from llamacpu.machine.symbolic import SymbolicSequencer

    ctl = model.controller
    cfg = ctl.cfg
    if getattr(cfg, "absolute_positions", False):
        raise ValueError("the absolute_positions ablation makes each decision depend on the "
                         "step index: the execute phase is no finite table to certify")
    alphabet = cfg.alphabet
    V, C, O = alphabet.size, alphabet.base, n_ops()
    exact = SymbolicSequencer()
    seen: set[str] = set()
    cert = ControllerCertificate(0, len(prompts), 0)
    rows_cache: dict[int, tuple] = {}
    todo = []                                   # one prompt per view, in order
    for i, (prompt, program, plan) in enumerate(
            zip(prompts, programs, programs if plans is None else plans)):
        view = cfg.view(prompt)
        if view not in seen:
            seen.add(view)
            todo.append((prompt, program, plan, i))
    # plans emitted in batches (the LM's forward per slot is per batch): the tiny LM's cost
    # is mostly per call (512 rows: 1.4x faster than 64 on a CPU, the same plans); a
    # pretrained one's is per row, and its cache for 512 rows would be gigabytes
    chunk = 64 if getattr(cfg, "pretrained", False) else 512
    emitted_plans = [emitted[i] for *_, i in todo] if emitted is not None else [
        e for k in range(0, len(todo), chunk) for e in ctl.emit([t[0] for t in todo[k:k + chunk]])]
    for (prompt, program, plan, _), got in zip(todo, emitted_plans):
        if tuple(got.slots) != tuple(plan.slots):
            cert.plan_failures.append(_plan_failure(prompt, got, plan))
            continue
        if not execute:
            continue
        key = id(program)
        if key not in rows_cache:
            rows = _step_rows(program, alphabet, cfg.state_values)
            rows_cache[key] = (*rows, *_distinct_views(*rows[1:], cfg.state_values))
        pcs, ops, modes, vals, carries, first, inverse = rows_cache[key]
        if not len(pcs):
            continue
        # the step head sees only (op, modes, zero and equality flags[, values, carry]):
        # ask it once per distinct view, then read every row's decision from its class
        seq = model.machine([prompt]).sequencer   # the prompt encoded once, rows share it
        parts = []
        for start in range(0, len(first), batch):
            idx = first[start:start + batch]
            n = len(idx)
            if hasattr(seq, "select_rows"):
                seq.select_rows(torch.zeros(n, dtype=torch.long))
            dt = torch.get_default_dtype()
            mv = StepView(F.one_hot(ops[idx], O).to(dt), F.one_hot(modes[idx], len(Mode)).to(dt),
                          F.one_hot(vals[idx], V).to(dt), F.one_hot(carries[idx], C).to(dt),
                          torch.zeros(n, dtype=dt), torch.zeros(n, dtype=dt))
            dec = seq(mv)
            parts.append(torch.stack([dec[0] > 0.5, dec[1] > 0.5, dec[2] > 0.5], 1))
        got = torch.cat(parts)[inverse].T                                      # [3, R]
        want = exact.hard(ops, vals)
        n = len(pcs)
        relevant = (torch.ones(n, dtype=torch.bool), exact.writes.take(ops),
                    torch.ones(n, dtype=torch.bool))
        cert.decisions += int(sum(r.sum() for r in relevant))
        for what, g, w, r in zip(("taken", "write", "halt"), got, want, relevant):
            for i in ((g != w) & r).nonzero()[:, 0].tolist():
                pc = int(pcs[i])
                cert.step_failures.append(Decision(
                    prompt, pc, instr_text(program, pc), tuple(vals[i].tolist()), what,
                    bool(w[i]), bool(g[i])))
    cert.views = len(seen)
    return cert


def _plan_failure(prompt: str, emitted, program) -> Decision:
    """A wrong plan, named by its first slot that differs from the expert's (``pc``; the
    slot's text in each program, "nothing" past a program's end)."""
    from llamacpu.core.graph import instr_text

    n = min(len(emitted.slots), len(program.slots))
    pc = next((i for i in range(n) if emitted.slots[i] != program.slots[i]), n)

    def text(p) -> str:
        return instr_text(p, pc) if pc < len(p.slots) else "nothing"

    return Decision(prompt, pc, "", (), "plan", f"slot {pc} = {text(program)}",
                    f"slot {pc} = {text(emitted)}")


def _distinct_views(ops, modes, vals, carries, raw: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that look the same to the step head (``llm.heads.StateEncoder``: op, modes, per
    used field whether it is 0, per pair of used fields whether they are equal; with
    ``raw`` also the used fields' symbols and the carry): (one row per class [K], each
    row's class [R]). The exact sequencer decides on the same facts, so one question per
    class answers them all."""
    from itertools import combinations

    from llamacpu.core.isa import NUM_FIELDS, Mode

    if not len(ops):
        z = torch.zeros(0, dtype=torch.long)
        return z, z
    used = modes != int(Mode.NONE)                                         # [R, F]
    zero = used & (vals == 0)
    pairs = [used[:, i] & used[:, j] & (vals[:, i] == vals[:, j])
             for i, j in combinations(range(NUM_FIELDS), 2)]
    cols = [ops[:, None], modes, zero.long(), torch.stack(pairs, 1).long()]
    if raw:
        cols += [torch.where(used, vals, -1), carries[:, None]]
    feats = torch.cat(cols, 1)
    _, inverse = torch.unique(feats, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(ops), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(ops)), reduce="amin")
    return first, inverse


def _constant_operand(program, slot, f: int) -> int | None:
    """The symbol field ``f`` of ``slot`` always reads, if static: a DIRECT operand naming an
    INSTR slot (a jump target, say), whose val no instruction writes (the analysis assumes
    the program does not rewrite its instructions; writes go to DATA and EMPTY slots)."""
    from llamacpu.core.isa import Mode

    if f >= len(slot.modes) or slot.modes[f] != Mode.DIRECT:
        return None
    addr = slot.args[f]
    if 0 <= addr < len(program.slots) and program.slots[addr].kind == Kind.INSTR:
        return int(program.slots[addr].val)
    return None


def _step_rows(program, alphabet: Alphabet, raw: bool):
    """Per reachable instruction and value pattern: (pc, op, modes [F], values [F], carry)."""
    from llamacpu.core.isa import NUM_FIELDS, Mode

    carries = _carry_sets(program, alphabet)
    rows = []
    for pc, cs in sorted(carries.items()):
        slot = program.slots[pc]
        modes = [int(slot.modes[f]) if f < len(slot.modes) else int(Mode.NONE)
                 for f in range(NUM_FIELDS)]
        fixed = [_constant_operand(program, slot, f) for f in range(NUM_FIELDS)]
        for vals, c in _value_patterns(slot, alphabet, cs, raw, fixed):
            rows.append((pc, int(slot.op), modes, list(vals), c))
    if not rows:
        z = torch.zeros(0, dtype=torch.long)
        return z, z, z, z, z
    pcs = torch.tensor([r[0] for r in rows])
    ops = torch.tensor([r[1] for r in rows])
    modes = torch.tensor([r[2] for r in rows])
    vals = torch.tensor([r[3] for r in rows])
    carries_t = torch.tensor([r[4] for r in rows])
    return pcs, ops, modes, vals, carries_t


# ------------------------------------------------------ the tables as training supervision


class StepPatterns(NamedTuple):
    """The execute table :func:`certify_controller` checks for one program, as rows a step
    loss can train on (``llm.heads.StepView`` one-hots, leading dim ``[n]``)."""

    pcs: Tensor      # [n] the instruction of each row
    values: Tensor   # [n, F] its operand symbols (one representative per flag pattern)
    view: object     # llm.heads.StepView [n, ...]; cond None
    targets: Tensor  # [n, 3] the exact sequencer's (taken, write, halt)
    mask: Tensor     # [n, 3] the decisions the certificate checks (write: where the op writes)


def step_patterns(program, alphabet: Alphabet, raw: bool = False) -> StepPatterns:
    """Every row :func:`certify_controller` checks for ``program`` (``raw``: the controller's
    ``state_values``), with the exact decisions as targets."""
    from llamacpu.core.isa import Mode
    from llamacpu.llm.heads import StepView
    from llamacpu.machine.symbolic import SymbolicSequencer

    pcs, ops, modes, vals, carries = _step_rows(program, alphabet, raw)
    exact = SymbolicSequencer()
    dt = torch.get_default_dtype()
    view = StepView(F.one_hot(ops, n_ops()).to(dt), F.one_hot(modes, len(Mode)).to(dt),
                    F.one_hot(vals, alphabet.size).to(dt), F.one_hot(carries, alphabet.base).to(dt))
    targets = torch.stack(exact.hard(ops, vals), -1).to(dt)                       # [n, 3]
    mask = torch.stack([torch.ones_like(pcs, dtype=torch.bool), exact.writes.take(ops),
                        torch.ones_like(pcs, dtype=torch.bool)], -1).to(dt)       # [n, 3]
    return StepPatterns(pcs, vals, view, targets, mask)


def failing_rows(patterns: StepPatterns, failures: Iterable[Decision]) -> list[int]:
    """Indices of the rows of ``patterns`` a certificate's execute failures are about (every
    carry of a failing (pc, values): the decisions do not depend on it)."""
    keys = {(f.pc, tuple(f.values)) for f in failures if f.pc is not None}
    return [i for i, (pc, v) in enumerate(zip(patterns.pcs.tolist(), patterns.values.tolist()))
            if (pc, tuple(v)) in keys]


# ------------------------------------------------------------------ every view of a wording
#
# With a bounded view that abstracts payload content (llamacpu.llm.view), the view of a
# prompt is a function of its wording and of each payload's length up to its window: a
# wording has a handful of views, and one prompt per view checks them all. A certificate
# over them is a statement about every prompt of those wordings, at every length.


class ViewSet(NamedTuple):
    """Every view of a task's wordings: one drawn example per view, how many views the
    wordings have (by construction, over every payload length), and those no draw of the
    task produced (a wording's shape its operands cannot take, such as a subtrahend written
    longer than the minuend): their synthetic prompts."""

    examples: list
    grid: int
    missing: list[str]


def _payload_lengths(kind, view, n_operands: int):
    from itertools import product

    from llamacpu.learn.tasks import Operands

    top = {Operands.NUMBERS: view.digits, Operands.DIGITS: max(view.items, view.digits),
           Operands.TEXT: view.chars}[kind]
    return list(product(range(1, top + 1), repeat=n_operands))


def _synthetic(kind, template: str, lengths: tuple[int, ...]) -> str:
    from llamacpu.learn.tasks import Operands, render

    if kind is Operands.NUMBERS:
        return render(template, kind, tuple("1" * n for n in lengths))
    if kind is Operands.DIGITS:
        return render(template, kind, ("1",) * lengths[0])
    return render(template, kind, ("x" * lengths[0],))


def every_view(task: str, view, splits: Sequence[str] = ("train",), seed: int = 0,
               tries: int = 64, alphabet: Alphabet | None = None,
               combinations: str = "any", templates: Sequence[str] | None = None) -> ViewSet:
    """One example per view of ``task``'s wordings in ``splits`` (a :class:`ViewSet`), the
    wordings and examples written in ``alphabet`` (default: the default one). Raises
    ValueError when the views cannot be enumerated: a view that keeps payload content or
    leaves a payload unbounded, a task whose prompts carry code (fmap), or a composed task
    (expr, chain) read without an operand window (its views grow with its operations).
    ``combinations`` ("any", "trained"): a composed task's examples of any combination, or
    only of those training draws (``compiling.HELD_OUT_COMBINATIONS``). ``templates``: these
    wordings of the task instead of the splits'."""
    import random

    from llamacpu.learn.tasks import TASKS, Operands

    alphabet = alphabet or DEFAULT_ALPHABET

    t = TASKS[task]
    if not (view.bounded and view.abstract):
        raise ValueError(f"the view ({view.describe()}) keeps payload content or leaves a "
                         f"payload unbounded: its views are too many to enumerate")
    if t.operands is Operands.FUNCTION:
        raise ValueError(f"task {task}: its prompts carry a function table, code the view "
                         f"keeps whole: its views are too many to enumerate")
    wordings = list(templates) if templates is not None else [
        tp for split in splits for tp in t.templates(split, alphabet)]
    if t.operands in (Operands.EXPRESSION, Operands.CHAIN):
        if not view.operands:
            raise ValueError(f"task {task}: its prompts grow with the number of operations, "
                             f"and so do their views without an operand window")
        return _composed_views(t, view, wordings, random.Random(f"views/{task}/{seed}"),
                               tries, alphabet, combinations)
    rng = random.Random(f"views/{task}/{seed}")
    examples, missing = [], {}
    seen: set[str] = set()
    every: set[str] = set()
    for template in wordings:
        n_ops = 2 if (t.operands is Operands.NUMBERS and "{b}" in template) else 1
        shapes = {view(_synthetic(t.operands, template, ls)): ls
                  for ls in _payload_lengths(t.operands, view, n_ops)}
        every |= set(shapes)
        todo = set(shapes)
        for length in range(1, max(max(ls) for ls in shapes.values()) + 2):
            for _ in range(tries):
                if not todo:
                    break
                ops = t.draw_operands(rng, length, alphabet)
                if t.fit is not None:
                    ops = t.fit(ops) or ops
                ex = t.make(ops, template, alphabet)
                v = view(ex.prompt)
                if v not in shapes:
                    raise AssertionError(f"task {task}: {ex.prompt!r} has view {v!r}, "
                                         f"outside its wording's {len(shapes)} views")
                if v in todo:
                    todo.discard(v)
                    if v not in seen:
                        seen.add(v)
                        examples.append(ex)
        missing.update({v: _synthetic(t.operands, template, shapes[v]) for v in todo})
    return ViewSet(examples, len(every), sorted(p for v, p in missing.items() if v not in seen))


def _composed_views(t, view, templates: Sequence[str], rng, tries: int, alphabet: Alphabet,
                    combinations: str) -> ViewSet:
    """:func:`every_view` of a composed task read through an operand window of N payloads.
    A prompt of fewer than N numbers (one operation) reads like a two-number task's, lengths
    kept; one of N or more reads as its first N numbers, each one ``'0'``, and the operators
    between them: every such view is that of an expression of N - 1 operations without
    brackets (chain: N - 1 steps), whatever the prompt's length. Those are the grid; the
    examples are drawn at 1 to N - 1 operations, the lengths the view tells apart."""
    from itertools import product

    from llamacpu.core.compose import OPERATORS
    from llamacpu.learn.compiling import held_out_combination
    from llamacpu.learn.composed import CHAIN_STEPS, render_chain
    from llamacpu.learn.tasks import Operands, render

    if combinations not in ("any", "trained"):
        raise ValueError(f"combinations must be 'any' or 'trained', got {combinations!r}")
    k = view.operands - 1                       # operations a windowed view shows
    expr = t.operands is Operands.EXPRESSION

    def synthetic(template: str, lengths: tuple[int, ...], ops: tuple[str, ...]) -> str:
        numbers = ["1" * n for n in lengths]
        if expr:
            text = " ".join(x for pair in zip(numbers, ops) for x in pair) + " " + numbers[-1]
            return render(template, t.operands, (text,))
        return render_chain(template, tuple(x for pair in zip(numbers, ops) for x in pair)
                            + (numbers[-1],))

    symbols = tuple(OPERATORS) if expr else CHAIN_STEPS
    grid: dict[str, str] = {}
    for template in templates:
        for n in range(1, k + 1):
            lengths = product(range(1, view.digits + 1), repeat=n + 1) if n < k else [
                (1,) * (n + 1)]
            for ls, ops in product(list(lengths), product(symbols, repeat=n)):
                grid.setdefault(view(synthetic(template, ls, ops)), synthetic(template, ls, ops))
    examples, seen = [], set()
    for template in templates:
        for n in range(1, k + 1):
            for length in range(1, view.digits + 2):
                for parens in ((False, True) if expr else (None,)):
                    for _ in range(tries):
                        ops = t.draw_operands(rng, length, alphabet, ops=n, **(
                            {"parens": parens} if expr else {}))
                        ex = t.make(ops, template, alphabet)
                        v = view(ex.prompt)
                        if v not in grid:
                            raise AssertionError(f"task {t.name}: {ex.prompt!r} has view "
                                                 f"{v!r}, outside its wordings' views")
                        if v in seen or (combinations == "trained"
                                         and held_out_combination(ex)):
                            continue
                        seen.add(v)
                        examples.append(ex)
    return ViewSet(examples, len(grid), sorted(p for v, p in grid.items() if v not in seen))
