"""Certificates of learned tables: every entry checked, not a sample.

In hard mode each learned part of the machine is a function of finitely many discrete
inputs. The first of them is the OEU: a function of (op, a, b, carry, pointer equality).
:func:`certify_oeu` enumerates every input the hard machine can give it without faulting and
compares the outputs the machine consumes with the instruction set's semantics
(``machine.symbolic.exact_op``, itself checked against the reference interpreter). Together
with the tested equality of the hard machine and the interpreter, an OEU whose table is
certified computes, for the program it runs, exactly what the interpreter computes at every
input length that fits in memory: every step is one table lookup, and the table is right
everywhere. (The plan and execute phases are the other learned tables:
:func:`certify_controller` checks them per prompt view, below.)

What the hard machine consumes of the OEU (``machine/discrete.py``), and so what is checked:

- the result symbol, for ops that write a value (their first operand is a destination:
  MOV with an immediate source, arithmetic, compares, GETC, PEQ); APPLY's result comes
  from the WEIGHTS bank, not the OEU;
- the carry out, for every op but APPLY and WSET (the machine keeps the carry for those).

Inputs an op does not read are zeroed by the neural OEU before its first layer
(``oeu.operand_usage``), so they are enumerated at 0 only; that argument is checked, not
assumed (:func:`_reads`). An OEU whose carry is gated by construction (``carry_gated``:
ops that do not read the carry see 0, ops that do not write it pass it through outside
the learned part) is checked over :func:`gate_domain` of the domain: the carry in only
where the op reads it, the carry out only where the op writes it. Inputs on which the interpreter faults (a non-digit in arithmetic
or SETC, a zero divisor, a DIV quotient that is not a digit) are not in the domain: the
machine faults there whatever the OEU says.

A failing entry is only half a certificate's answer; :func:`find_witness` turns it into a
prompt the free-running machine answers wrong: it samples examples of the trained tasks,
longest first among a few lengths, until the expert's trace meets the entry, then runs the
learned machine on that prompt.

The trainer learns from the same tables: :func:`step_patterns` gives the rows the execute
certificate checks with the exact decisions as targets, :func:`failing_rows` the rows a
certificate's failures are about (``learn/certified.py``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from llamacpu.core.interp import run
from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    SPEC,
    Alphabet,
    Kind,
    LlamacpuError,
    Op,
    n_ops,
    op_specs,
    opcode,
    ops_generation,
)
from llamacpu.machine.oeu import operand_usage
from llamacpu.machine.symbolic import exact_op

__all__ = ["Entry", "OEUCertificate", "oeu_domain", "isa_domain", "program_domain",
           "tasks_domain", "gate_domain", "certify_oeu", "program_ops", "task_programs", "task_ops",
           "find_witness", "Witness"]



def _spec(op: int):
    """The op table's row of ``op`` (a built-in ``Op`` or an op from ``define_op``)."""
    return SPEC[opcode(int(op))]


def _digits_only(op: int) -> bool:
    """Whether ``op`` faults on a symbol that is not a digit (docs/lasm.md, "Arithmetic")."""
    return _spec(op).digits


def _faults(op: int, a: int, b: int, c: int, base: int) -> bool:
    """Whether the interpreter faults on these ALU inputs (a zero divisor, a DIV quotient
    that is not a digit, ...): the op's own semantics say so."""
    alu = _spec(op).alu
    return alu is not None and isinstance(alu(a, b, c, base), str)


@dataclass(frozen=True)
class Entry:
    """One wrong output of the OEU table."""

    op: Op
    a: int
    b: int
    carry: int
    ptr_eq: int
    output: str   # "result" or "carry"
    want: int
    got: int

    def describe(self, alphabet: Alphabet) -> str:
        sym = alphabet.decode_symbol
        reads = _reads(self.op)
        args = [f"{'a' if i == 0 else 'b'}={sym(v)!r}" for i, v in enumerate((self.a, self.b))
                if reads[i]]
        if reads[2]:
            args.append(f"ptr_eq={self.ptr_eq}")
        def shown(v: int) -> str:
            return repr(sym(v)) if self.output == "result" else str(v)
        return (f"{self.op.name}({', '.join(args + [f'carry={self.carry}'])}): {self.output} "
                f"{shown(self.got)}, want {shown(self.want)}")


@dataclass
class OEUCertificate:
    """What :func:`certify_oeu` enumerated, and every entry it found wrong."""

    ops: tuple[Op, ...]
    inputs: int                    # input tuples enumerated
    outputs: int                   # outputs checked (result and/or carry per input)
    failures: list[Entry] = field(default_factory=list)

    @property
    def certified(self) -> bool:
        return not self.failures

    def summary(self, alphabet: Alphabet, limit: int = 20) -> str:
        head = (f"OEU table {'CERTIFIED' if self.certified else 'NOT CERTIFIED'}: "
                f"{self.outputs} outputs of {self.inputs} inputs over "
                f"{len(self.ops)} ops ({' '.join(o.name for o in self.ops)})")
        if self.certified:
            return head
        lines = [head, f"{len(self.failures)} wrong entries:"]
        lines += [f"  {e.describe(alphabet)}" for e in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


def _reads(op: Op) -> tuple[bool, bool, bool]:
    """Whether ``op`` reads a, b and the pointer-equality bit (as the OEU sees them)."""
    return _usage(ops_generation())[int(op)]


@functools.lru_cache(maxsize=8)
def _usage(generation: int) -> tuple[tuple[bool, bool, bool], ...]:  # noqa: ARG001
    """``operand_usage`` as tuples, once per op table (``define_op`` makes a new one)."""
    return tuple((bool(a), bool(b), bool(e)) for a, b, e in operand_usage().tolist())


def _writes_value(op: int) -> bool:
    """Whether the machine writes the OEU's result for ``op`` (MOV: from an immediate)."""
    return _spec(op).writes_result


def _keeps_carry_outside_oeu(op: int) -> bool:
    """APPLY and WSET: the machine keeps the carry, whatever the OEU says."""
    return _spec(op).uses_weights


def oeu_domain(op: Op, alphabet: Alphabet) -> torch.Tensor:
    """Every (a, b, carry, ptr_eq) the hard machine can give the OEU for ``op`` without
    faulting, as a long tensor [E, 4]."""
    V, C = alphabet.size, alphabet.base
    read_a, read_b, read_eq = _reads(op)
    symbols = range(C) if _digits_only(op) else range(V)
    rows = [(a, b, c, e)
            for a in (symbols if read_a else (0,))
            for b in (symbols if read_b else (0,))
            for c in range(C)
            for e in ((0, 1) if read_eq else (0,))
            if not _faults(op, a, b, c, C)]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)


# ------------------------------------------------------------- what a program can reach
#
# The full domain above is every input the ISA allows; a learned OEU is trained on the
# entries expert programs meet and is usually wrong on others that no program of its tasks
# can reach (HALT with carry 7, say). :func:`program_domain` is the sound smaller domain
# for one program: per instruction, the inputs it can see and the outputs that matter.
#
# - a, b: the immediate where the operand is one; else any symbol (digits only for the
#   ops that fault on others): operand values are not analysed, an over-approximation.
# - carry in: a forward analysis over the control-flow graph (core.graph.build_cfg): {0}
#   at the entry; an op's carry out is computed with exact_op from its input sets; a
#   dynamic jump may go to any instruction.
# - outputs: the result where the instruction writes it (value ops; MOV only from an
#   immediate: MOV d, s copies the slot); the carry where it is live afterwards (a backward
#   analysis: ADD SUB MUL DIV GETC read it, SETC overwrites it, nothing runs after HALT).
#
# Assumes, as the graph does, that the program does not rewrite its own instructions.


def _operand_values(slot, k: int, op: Op, alphabet: Alphabet) -> tuple[int, ...]:
    from llamacpu.core.isa import Mode
    from llamacpu.machine.oeu import _operand_index

    i = _operand_index(op, k)
    if i is None:
        return (0,)
    if slot.modes[i] == Mode.IMMEDIATE:
        return (int(slot.val),)
    return tuple(range(alphabet.base if _digits_only(op) else alphabet.size))


def _reach(slot, alphabet: Alphabet, carries: frozenset[int]
           ) -> tuple[tuple[tuple[int, ...], ...], frozenset[int]]:
    """The inputs (a, b, carry, ptr_eq) instruction ``slot`` can give the OEU and the
    carries it can leave."""
    op = opcode(slot.op)
    read_a, read_b, read_eq = _reads(op)
    A = _operand_values(slot, 0, op, alphabet) if read_a else (0,)
    B = _operand_values(slot, 1, op, alphabet) if read_b else (0,)
    return _reach_of(int(op), A, B, carries, read_eq, alphabet, ops_generation())


@functools.lru_cache(maxsize=4096)
def _reach_of(op: int, A: tuple[int, ...], B: tuple[int, ...], carries: frozenset[int],
              read_eq: bool, alphabet: Alphabet, generation: int  # noqa: ARG001
              ) -> tuple[tuple[tuple[int, ...], ...], frozenset[int]]:
    """:func:`_reach` of one instruction shape: a linked program repeats a few (its library's
    routines are the same in every program), so each is worked out once per op table."""
    rows = tuple((a, b, c, e) for a in A for b in B for c in sorted(carries)
                 for e in ((0, 1) if read_eq else (0,))
                 if not _faults(op, a, b, c, alphabet.base))
    if not rows:
        return rows, frozenset()
    a, b, c, e = torch.tensor(rows, dtype=torch.long).T
    _, cout = exact_op(torch.full_like(a, op), a, b, c, e.bool(), alphabet)
    return rows, frozenset(cout.tolist())


def _flow(program):
    """The program's control-flow graph and its successor function (a dynamic jump may go
    to any instruction)."""
    from llamacpu.core.graph import build_cfg

    g = build_cfg(program)
    nodes = list(g.nodes)

    def successors(u: int) -> list[int]:
        return nodes if g.nodes[u]["dynamic"] else list(g.successors(u))

    return g, successors


def _carry_sets(program, alphabet: Alphabet) -> dict[int, frozenset[int]]:
    """{pc: the carry values the instruction at pc can see}, for every instruction reachable
    from the entry: a forward analysis to a fixpoint (see the comment above)."""
    g, successors = _flow(program)
    slots = program.slots
    if program.entry not in g:  # the entry is no instruction: the machine faults at once
        return {}
    carry_in: dict[int, frozenset[int]] = {program.entry: frozenset({0})}
    todo = [program.entry]
    while todo:
        u = todo.pop()
        out = _reach(slots[u], alphabet, carry_in[u])[1]
        for v in successors(u):
            merged = carry_in.get(v, frozenset()) | out
            if merged != carry_in.get(v):
                carry_in[v] = merged
                todo.append(v)
    return carry_in


def program_domain(program, alphabet: Alphabet) -> dict[tuple[int, ...], tuple[bool, bool]]:
    """{(op, a, b, carry, ptr_eq): (result matters, carry matters)} over every instruction
    of ``program`` reachable from its entry (see the comment above)."""
    from llamacpu.core.isa import Mode

    _, successors = _flow(program)
    slots = program.slots
    carry_in = _carry_sets(program, alphabet)
    # backward: is the carry live after each instruction?
    reads = {u: _spec(slots[u].op).reads_carry for u in carry_in}
    kills = {u: _spec(slots[u].op).writes_carry and not reads[u] for u in carry_in}
    live_in = dict.fromkeys(carry_in, False)
    changed = True
    while changed:
        changed = False
        for u in carry_in:
            after = any(live_in.get(v, False) for v in successors(u))
            now = reads[u] or (after and not kills[u])
            if now != live_in[u]:
                live_in[u], changed = now, True
    out: dict[tuple[int, ...], tuple[bool, bool]] = {}
    for u, carries in carry_in.items():
        slot = slots[u]
        op = opcode(slot.op)
        want_res = _writes_value(op) and not (
            op is Op.MOV and slot.modes[1] != Mode.IMMEDIATE)
        want_carry = not _keeps_carry_outside_oeu(op) and any(
            live_in.get(v, False) for v in successors(u))
        if not (want_res or want_carry):
            continue
        for a, b, c, e in _reach(slot, alphabet, carries)[0]:
            key = (int(op), a, b, c, e)
            r, k = out.get(key, (False, False))
            out[key] = (r or want_res, k or want_carry)
    return out


def isa_domain(alphabet: Alphabet, ops: Iterable[Op] | None = None
               ) -> dict[tuple[int, ...], tuple[bool, bool]]:
    """The full domain: :func:`oeu_domain` of every op in ``ops`` (default: all), with the
    outputs the machine consumes for that op whatever the instruction."""
    out = {}
    for op in sorted({s.op for s in op_specs()} if ops is None else set(ops)):
        need = (_writes_value(op), not _keeps_carry_outside_oeu(op))
        for a, b, c, e in oeu_domain(op, alphabet).tolist():
            out[(int(op), a, b, c, e)] = need
    return out


def gate_domain(domain: dict[tuple[int, ...], tuple[bool, bool]]
                ) -> dict[tuple[int, ...], tuple[bool, bool]]:
    """``domain`` as an OEU with a gated carry sees it: the carry in set to 0 for ops that
    do not read it (their entries for every carry are one input), and the carry out not
    checked for ops that do not write it (it is the carry in, by construction)."""
    out: dict[tuple[int, ...], tuple[bool, bool]] = {}
    for (op, a, b, c, e), (r, k) in domain.items():
        spec = _spec(op)
        key = (op, a, b, c if spec.reads_carry else 0, e)
        k = k and spec.writes_carry
        if not (r or k):
            continue
        r0, k0 = out.get(key, (False, False))
        out[key] = (r0 or r, k0 or k)
    return out


@torch.no_grad()
def certify_oeu(oeu, alphabet: Alphabet,
                domain: dict[tuple[int, ...], tuple[bool, bool]] | None = None,
                batch: int = 1 << 15) -> OEUCertificate:
    """Check the OEU's table entry by entry over ``domain`` ({(op, a, b, carry, ptr_eq):
    (check the result, check the carry)}; default :func:`isa_domain`). ``oeu`` is any
    module of the machine's OEU protocol; one that says it is ``carry_gated`` is checked
    over :func:`gate_domain` of ``domain``."""
    domain = isa_domain(alphabet) if domain is None else domain
    if getattr(oeu, "carry_gated", False):
        domain = gate_domain(domain)
    V, C, O = alphabet.size, alphabet.base, n_ops()
    keys = sorted(domain)
    cert = OEUCertificate(tuple(sorted({opcode(k[0]) for k in keys})), len(keys),
                          sum(int(r) + int(k) for r, k in domain.values()))
    was = getattr(oeu, "training", False)
    if hasattr(oeu, "eval"):
        oeu.eval()
    try:
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            o, a, b, c, e = torch.tensor(chunk, dtype=torch.long).reshape(-1, 5).T
            need = torch.tensor([domain[k] for k in chunk], dtype=torch.bool).reshape(-1, 2)
            want_r, want_c = exact_op(o, a, b, c, e.bool(), alphabet)
            got_r, got_c = _hard(oeu, o, a, b, c, e, O, V, C)
            bad_r = (got_r != want_r) & need[:, 0]
            bad_c = (got_c != want_c) & need[:, 1]
            for which, bad, want, got in (("result", bad_r, want_r, got_r),
                                          ("carry", bad_c, want_c, got_c)):
                for i in bad.nonzero()[:, 0].tolist():
                    cert.failures.append(Entry(opcode(int(o[i])), int(a[i]), int(b[i]), int(c[i]),
                                               int(e[i]), which, int(want[i]), int(got[i])))
    finally:
        if hasattr(oeu, "train"):
            oeu.train(was)
    cert.failures.sort(key=lambda f: (f.op, f.a, f.b, f.carry, f.ptr_eq, f.output))
    return cert


def _hard(oeu, op, a, b, c, e, O: int, V: int, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The OEU's hard outputs, as the discrete machine computes them."""
    if hasattr(oeu, "hard"):
        return oeu.hard(op, a, b, c, e.bool())
    dt = torch.get_default_dtype()
    out = oeu(F.one_hot(op, O).to(dt), F.one_hot(a, V).to(dt), F.one_hot(b, V).to(dt),
              F.one_hot(c, C).to(dt), e.to(dt))
    return out[0].argmax(-1), out[1].argmax(-1)


def program_ops(programs: Iterable) -> set[Op]:
    """The ops the given programs contain (what a task's OEU certificate must cover)."""
    return {opcode(s.op) for p in programs for s in p.slots if s.kind == Kind.INSTR}


def task_programs(tasks: Iterable[str], alphabet: Alphabet | None = None) -> list:
    """One expert program per task, assembled in ``alphabet`` (default: the default one;
    fmap's programs differ only in their WEIGHTS slot's function)."""
    from llamacpu.learn.tasks import TASKS, expert_program

    rng = random.Random(0)
    return [expert_program(TASKS[t].sample(rng, 1, alphabet=alphabet or DEFAULT_ALPHABET))
            for t in tasks]


def task_ops(tasks: Iterable[str]) -> set[Op]:
    """The ops of the expert programs of ``tasks``."""
    return program_ops(task_programs(tasks))


def tasks_domain(tasks: Iterable[str], alphabet: Alphabet
                 ) -> dict[tuple[int, ...], tuple[bool, bool]]:
    """The union of :func:`program_domain` over the expert programs of ``tasks``, assembled
    in ``alphabet`` (their immediates, END above all, are its symbols)."""
    out: dict[tuple[int, ...], tuple[bool, bool]] = {}
    for program in task_programs(tasks, alphabet):
        for key, (r, k) in program_domain(program, alphabet).items():
            r0, k0 = out.get(key, (False, False))
            out[key] = (r0 or r, k0 or k)
    return out


# ------------------------------------------------------------------------------ witnesses


@dataclass(frozen=True)
class Witness:
    """A prompt whose expert run meets a wrong entry, and what the machine answered."""

    entry: Entry
    prompt: str
    answer: str       # Python's answer
    output: str       # the free-running machine's
    fault: str | None

    @property
    def wrong(self) -> bool:
        return self.output != self.answer or self.fault is not None


def _meets(trace, entry: Entry) -> bool:
    from llamacpu.machine.oeu import examples_from_traces

    ex = examples_from_traces([trace])
    hit = ((ex.op == int(entry.op)) & (ex.a == entry.a) & (ex.b == entry.b)
           & (ex.carry == entry.carry) & (ex.ptr_eq == entry.ptr_eq))
    return bool(hit.any())


def _with_symbols(prompt: str, symbols: Sequence[str], rng: random.Random) -> list[str]:
    """``prompt`` with the entry's text symbols placed around it and between its words: a
    prompt in no task wording can still meet an entry about a character no wording holds
    (``add: 12 and 35`` meets LT(':', ' ')). The answer stays Python's: the task's parser
    skips such characters as it skips any filler."""
    words = prompt.split(" ")
    out = []
    for sym in symbols:
        at = rng.randrange(1, len(words)) if len(words) > 1 else 1
        out += [f"{sym} {prompt}", f"{prompt} {sym}", " ".join(words[:at] + [sym] + words[at:]),
                words[0] + sym + (" " + " ".join(words[1:]) if len(words) > 1 else "")]
    return out


def find_witness(model, entry: Entry, tasks: Sequence[str], lengths: Sequence[int] = (4, 8, 20),
                 tries: int = 200, seed: int = 0, max_steps: int = 200_000) -> Witness | None:
    """A prompt of one of ``tasks`` whose expert trace meets ``entry`` and that ``model`` (a
    LearnedMachine, or anything with ``solve``) answers wrong running free; None if
    ``tries`` examples per task and length find none. Prompts are the task's training
    wordings, then the same with the entry's non-digit symbols inserted (which a user's
    prompt may hold though no wording does)."""
    from llamacpu.learn.tasks import TASKS, expert_program

    rng = random.Random(f"witness/{entry.op.name}/{entry.a}/{entry.b}/{entry.carry}/{seed}")
    alphabet = getattr(getattr(getattr(model, "cfg", None), "oeu", None), "alphabet", None)
    symbols = []
    if alphabet is not None:
        symbols = [alphabet.decode_symbol(v) for v in (entry.a, entry.b)
                   if alphabet.base <= v < alphabet.end]
    for task in tasks:
        t = TASKS[task]
        for length in sorted({min(n, t.max_length or n) for n in lengths}):
            for _ in range(tries):
                ex = t.sample(rng, length, alphabet=alphabet or DEFAULT_ALPHABET)
                program = expert_program(ex)
                for prompt in [ex.prompt, *_with_symbols(ex.prompt, symbols, rng)]:
                    try:
                        res = run(program, prompt, trace=True, max_steps=max_steps)
                    except LlamacpuError:
                        continue  # the expert faults or does not finish: not a witness
                    if res.trace is None or not _meets(res.trace, entry):
                        continue
                    if prompt != ex.prompt and res.output != ex.answer:
                        continue  # the inserted symbol changed the expert's answer
                    sol = model.solve([prompt], max_steps=max(4 * res.steps, 1000))[0]
                    w = Witness(entry, prompt, ex.answer, sol.output, sol.fault)
                    if w.wrong:
                        return w
    return None
