"""Expert supervision (part of layer 8 of docs/architecture.md): what the controller is trained to
do, from the expert programs and their reference runs.

Plan phase: :class:`PlanTargets`, the expert's slots as index tensors
(:func:`plan_targets` builds them), and :func:`weights_targets`, the functions its
WEIGHTS slots hold. Execute phase: :func:`trace_to_steps` turns a reference run into step
views and (taken, write, halt) targets (:class:`StepTrace`), and :func:`batch_steps` pads
them into the arguments of :meth:`~llamacpu.llm.controller.Controller.step_loss`.

Shape letters::

    B  batch                         T  execution steps
    Q  emitted slots (P − 2)         O  opcodes
    M  operand modes                 F  address fields per slot (4)
    V  alphabet size                 Vc carry digits (the alphabet's base)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F_nn
from torch import Tensor

from llamacpu.core.isa import (
    EMPTY_SLOT,
    N_PORTS,
    NUM_FIELDS,
    SPEC,
    Alphabet,
    Kind,
    Mode,
    Op,
    Program,
)
from llamacpu.core.runtypes import Result
from llamacpu.llm.heads import StepView

__all__ = [
    "PlanTargets", "plan_targets", "weights_targets", "StepTrace", "trace_to_steps", "result_to_steps",
    "batch_steps",
]

_OPS, _MODES = len(Op), len(Mode)


# ================================================================ plan phase

class PlanTargets(NamedTuple):
    """Expert slots 2..P−1 of a batch of programs, padded with EMPTY to Q slots."""

    kind: Tensor    # [B, Q]
    op: Tensor      # [B, Q]
    modes: Tensor   # [B, Q, F]
    args: Tensor    # [B, Q, F]
    val: Tensor     # [B, Q]
    n: Tensor       # [B] emitted slots per program (P − 2)


def plan_targets(programs: Sequence[Program], max_slots: int, alphabet: Alphabet,
                 device: torch.device | str = "cpu") -> PlanTargets:
    """Index tensors of the programs' slots 2..P−1, padded with EMPTY; checks that each
    program fits a controller of ``max_slots`` candidate addresses and ``alphabet``."""
    N, Q = max_slots, max(len(p.slots) for p in programs) - N_PORTS
    if Q < 0:
        raise ValueError("a program has fewer slots than the two ports")
    rows = []
    for b, p in enumerate(programs):
        if p.entry != N_PORTS:
            raise ValueError(f"program {b} ({p.name}) starts at {p.entry}; the controller "
                             f"emits programs that start at slot {N_PORTS}")
        if len(p.slots) > N:
            raise ValueError(f"program {b} ({p.name}) has {len(p.slots)} slots, more than "
                             f"max_slots = {N}")
        if p.alphabet != alphabet:
            raise ValueError(f"program {b} ({p.name}) uses {p.alphabet.describe()}, the "
                             f"controller {alphabet.describe()}")
        body = list(p.slots[N_PORTS:]) + [EMPTY_SLOT] * (Q - len(p.slots) + N_PORTS)
        for a, s in enumerate(body):
            if max(s.args) >= N:
                raise ValueError(f"program {b} ({p.name}) slot {a + N_PORTS} points at "
                                 f"{max(s.args)}, beyond the {N} candidate addresses")
        rows.append(body)
    flat = [s for r in rows for s in r]
    B = len(programs)

    def t(x: list) -> Tensor:
        return torch.tensor(x, dtype=torch.long, device=device)

    return PlanTargets(
        kind=t([int(s.kind) for s in flat]).reshape(B, Q),
        op=t([int(s.op) for s in flat]).reshape(B, Q),
        modes=t([[int(m) for m in s.modes] for s in flat]).reshape(B, Q, NUM_FIELDS),
        args=t([list(s.args) for s in flat]).reshape(B, Q, NUM_FIELDS),
        val=t([s.val for s in flat]).reshape(B, Q),
        n=t([len(p.slots) - N_PORTS for p in programs]),
    )


def weights_targets(programs: Sequence[Program]) -> tuple[list[tuple[int, int]], Tensor]:
    """The WEIGHTS slots of programs as ``[(row, address)]`` and their tables ``[n, V]``
    (a slot without a table is the empty function: every symbol ↦ END)."""
    where, tables = [], []
    for b, p in enumerate(programs):
        for a, sl in enumerate(p.slots):
            if a >= N_PORTS and sl.kind == Kind.WEIGHTS:
                V = p.alphabet.size
                where.append((b, a))
                tables.append(sl.table if sl.table is not None else (p.alphabet.end,) * V)
    if not tables:
        return where, torch.zeros(0, programs[0].alphabet.size if programs else 0,
                                  dtype=torch.long)
    return where, torch.tensor(tables, dtype=torch.long)


# ================================================================ execute phase



class StepTrace(NamedTuple):
    """Expert supervision for the execute phase, from one reference run."""

    view: StepView   # leading dim [T]; cond is None
    targets: Tensor  # [T, 3] (taken, write, halt) in {0, 1}


def _taken(op: Op, values: Sequence[int | None]) -> bool:
    """Whether a jump op moves the pc to its target (RET: to the return address)."""
    a, b = (tuple(values) + (None, None))[:2]
    return SPEC[op].jump.taken(a == 0, a == b)


def trace_to_steps(program: Program, input_text: str, max_steps: int = 100_000,
                   out_size: int | None = None) -> StepTrace:
    """Run the reference interpreter and turn its trace into step views and targets.

    The view of step t: one-hots of the instruction's op and modes; per field, the ``val``
    of the operand slot the field names (its effective address after ``[p]``), or the
    immediate, or zeros for an unused field; the carry before the step. Targets: taken
    (jumps, CALL and RET that move the pc to their target; 0 for other ops), write (the
    step writes a memory slot), halt (the op is HALT).
    """
    from llamacpu.core.interp import run  # interp does not import torch; keep it that way

    return result_to_steps(program, run(program, input_text, max_steps, trace=True,
                                        out_size=out_size))


def result_to_steps(program: Program, result: Result) -> StepTrace:
    """:func:`trace_to_steps` of a traced reference run already made."""
    if result.trace is None:
        raise ValueError("result_to_steps needs a run made with trace=True")
    alpha = program.alphabet
    V, Vc = alpha.size, alpha.base
    memory = list(result.image.slots)
    T = len(result.trace)
    # indices of the ones, gathered in Python and scattered once (a tensor write per
    # entry costs microseconds; the expert runs of a batch have thousands of steps)
    ops, carries, mode_idx, value_idx, rows = [], [], [], [], []
    for i, st in enumerate(result.trace):
        ins = memory[st.pc]
        ops.append(st.op)
        carries.append(st.carry_in)
        mode_idx.extend(ins.modes[f] for f in range(NUM_FIELDS))
        for f in range(SPEC[st.op].arity):
            if ins.modes[f] == Mode.IMMEDIATE:
                value_idx.append((i, f, ins.val))
            elif st.addrs[f] is not None:
                value_idx.append((i, f, memory[st.addrs[f]].val))  # type: ignore[index]
        rows.append((float(_taken(st.op, st.values)), float(st.write_addr is not None),
                     float(st.op == Op.HALT)))
        if st.write_addr is not None:
            memory[st.write_addr] = st.written  # type: ignore[assignment]
    steps = torch.arange(T)
    op = torch.zeros(T, _OPS)
    op[steps, torch.tensor(ops, dtype=torch.long)] = 1
    modes = torch.zeros(T * NUM_FIELDS, _MODES)
    modes[torch.arange(T * NUM_FIELDS), torch.tensor(mode_idx, dtype=torch.long)] = 1
    modes = modes.view(T, NUM_FIELDS, _MODES)
    values = torch.zeros(T, NUM_FIELDS, V)
    if value_idx:
        values[tuple(torch.tensor(value_idx, dtype=torch.long).T)] = 1
    carry = torch.zeros(T, Vc)
    carry[steps, torch.tensor(carries, dtype=torch.long)] = 1
    targets = torch.tensor(rows, dtype=torch.float32).reshape(T, 3)
    return StepTrace(StepView(op, modes, values, carry), targets)


def batch_steps(traces: Sequence[StepTrace]) -> tuple[StepView, Tensor, Tensor]:
    """Pad step traces to the longest: views ``[B, T, ...]``, targets ``[B, T, 3]`` and the
    mask ``[B, T]`` (1 on real steps), the arguments of
    :meth:`~llamacpu.llm.controller.Controller.step_loss`."""
    if not traces:
        raise ValueError("batch_steps needs at least one trace")
    T = max(len(tr.targets) for tr in traces)

    def pad(x: Tensor) -> Tensor:
        return F_nn.pad(x, (0, 0) * (x.dim() - 1) + (0, T - x.shape[0]))

    fields = []
    for name in ("op", "modes", "values", "carry"):
        fields.append(torch.stack([pad(getattr(tr.view, name)) for tr in traces]))
    conds = [tr.view.cond for tr in traces]
    if any(c is not None for c in conds) and not all(c is not None for c in conds):
        raise ValueError("either every trace has a condition flag or none has")
    cond = None if conds[0] is None else torch.stack([pad(c[:, None])[:, 0] for c in conds])
    targets = torch.stack([pad(tr.targets) for tr in traces])
    mask = torch.stack([pad(torch.ones(len(tr.targets), 1))[:, 0] for tr in traces])
    return StepView(*fields, cond), targets, mask
