"""Property checks of learned machines, on which ``python -m llamacpu.check`` is built.

:func:`check_learned` — runs a machine free on :func:`task_examples`, compares with
Python and the reference interpreter, and returns a :class:`CheckReport` with the
shrunk counterexample and the first :class:`Divergence` of its trace from the expert's;
:func:`learned_check` is the same as a pytest decorator. :class:`ExpertMachine` and
:func:`corrupt_oeu` make a machine with one known bug, for testing the checker. Examples
are drawn in the machine's alphabet (a checkpoint trained with ``--alphabet printable``:
capitalised wordings, payloads of any printable character).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet
from llamacpu.evaluate.strategies import task_examples

__all__ = [
    "draw_examples", "check_learned", "learned_check", "CheckReport", "Bucket",
    "Counterexample", "Divergence", "first_divergence", "ExpertMachine", "corrupt_oeu",
]

# ------------------------------------------------------------------------------ checking
#
# check_learned: hypothesis against a machine that runs free. Two phases, so the machine
# runs in batches and shrinking still works:
#
# 1. generate: hypothesis draws the examples (seeded, no database); the machine runs them
#    all, many prompts per machine run, grouped by length. This gives the pass rates.
# 2. shrink (only if something failed): the same seeded search again, now failing on the
#    failures; every example phase 1 saw is answered from its cache, and only the smaller
#    candidates hypothesis tries while shrinking run the machine, one prompt at a time.
#    Hypothesis reports the smallest failing example; both traces of it, the machine's
#    and the reference interpreter's, give the first step where they part.


class ExpertMachine:
    """The expert programs on the differentiable :class:`~llamacpu.machine.machine.Machine`.

    A stand-in for a learned machine whose controller emits the expert program exactly;
    with an exact OEU it is always right, with :func:`corrupt_oeu` it is a deliberately
    broken machine for testing the checker. Same interface as ``LearnedMachine`` as far as
    :func:`check_learned` is concerned (``emit`` and ``machine``).
    """

    def __init__(self, oeu=None, alphabet: Alphabet = DEFAULT_ALPHABET) -> None:
        from llamacpu.machine.machine import MachineConfig
        from llamacpu.machine.symbolic import SymbolicOEU

        self.config = MachineConfig(alphabet=alphabet)
        self.oeu = oeu if oeu is not None else SymbolicOEU(self.config.alphabet)
        self._machine = None

    @property
    def alphabet(self) -> Alphabet:
        """What its prompts and programs are written in."""
        return self.config.alphabet

    def emit(self, examples: list) -> list:
        from llamacpu.learn.tasks import expert_program

        return [expert_program(e) for e in examples]

    def machine(self, prompts: list[str]):
        from llamacpu.machine.machine import Machine

        if self._machine is None:  # the symbolic sequencer needs no prompts: one machine
            self._machine = Machine(self.config, oeu=self.oeu)
        return self._machine


def corrupt_oeu(op: str = "ADD", a: int = 7, b: int = 8, carry: int = 0, result: int | None = None,
                alphabet: Alphabet = DEFAULT_ALPHABET):
    """An exact ``SymbolicOEU`` with ONE entry wrong: ``op`` on digits (a, b) with carry in
    ``carry`` gives ``result`` (default: the right one + 1, mod base) in both the hard
    lookup table and the soft arithmetic table; the carry out stays right."""
    import torch

    from llamacpu.core.isa import Op
    from llamacpu.machine.symbolic import _ARITH_CARRY, SymbolicOEU, exact_op

    oeu = SymbolicOEU(alphabet)
    code = Op[op]
    C, V = alphabet.base, alphabet.size
    t = torch.tensor
    right, _ = exact_op(t(int(code)), t(a), t(b), t(carry), t(False), alphabet)
    wrong = (int(right) + 1) % C if result is None else result
    oeu.lookup_result[((int(code) * V + a) * V + b) * C + carry] = wrong
    if code in _ARITH_CARRY:
        row = oeu.table_arith_result[list(_ARITH_CARRY).index(code), (a * C + b) * C + carry]
        row.zero_()
        row[wrong] = 1.0
    return oeu


@dataclass(frozen=True)
class Divergence:
    """The first step where the machine's trace departs from the expert's."""

    step: int
    field: str        # the first field that differs: pc, op, operands, carry_in, result, ...
    expected: object  # interp.TraceStep of the expert (None: the expert had halted)
    got: object       # TraceStep of the machine (None: the machine had stopped)

    def describe(self) -> str:
        def one(t) -> str:
            if t is None:
                return "(no step: the run had ended)"
            return (f"pc {t.pc} {t.op.name} operands {tuple(t.values)} carry {t.carry_in} → "
                    f"result {t.result} carry {t.carry_out}, writes slot {t.write_addr}, "
                    f"next pc {t.next_pc}")
        return (f"step {self.step}: {self.field} differs\n  expected {one(self.expected)}\n"
                f"  got      {one(self.got)}")


_TRACE_FIELDS = ("pc", "op", "values", "carry_in", "result", "carry_out", "write_addr",
                 "next_pc")


def first_divergence(expected: tuple, got: tuple) -> Divergence | None:
    """Compare two traces step by step; None if they agree on every step."""
    for i in range(max(len(expected), len(got))):
        e = expected[i] if i < len(expected) else None
        g = got[i] if i < len(got) else None
        if e is None or g is None:
            return Divergence(i, "length", e, g)
        for f in _TRACE_FIELDS:
            if getattr(e, f) != getattr(g, f):
                return Divergence(i, "operands" if f == "values" else f, e, g)
    return None


@dataclass(frozen=True)
class Counterexample:
    """A failing example, shrunk by hypothesis, with why it failed."""

    example: object           # tasks.Example
    got: str                  # the machine's answer ("" on a fault)
    fault: str | None         # the machine's fault or "did not halt", if any
    reference: str            # the reference interpreter's answer (the expert program)
    divergence: Divergence | None
    program_differs_at: int | None  # first slot where the emitted program is not the expert's

    def describe(self) -> str:
        e = self.example
        lines = [f"counterexample ({e.task}, length {e.length}): {e.prompt!r}",
                 f"  operands {e.operands}; expected {e.answer!r} (Python; reference "
                 f"interpreter {self.reference!r}), got {self.got!r}"
                 + (f" [{self.fault}]" if self.fault else "")]
        if self.program_differs_at is not None:
            lines.append(f"  the emitted program differs from the expert's at slot "
                         f"{self.program_differs_at}")
        if self.divergence is not None:
            lines.append("  first divergence from the expert trace, " + self.divergence.describe())
        return "\n".join(lines)


@dataclass(frozen=True)
class Bucket:
    """Pass counts at one length."""

    length: int
    n: int
    passed: int

    @property
    def rate(self) -> float:
        return self.passed / self.n if self.n else float("nan")


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_learned` found."""

    task: str
    buckets: tuple[Bucket, ...]
    counterexample: Counterexample | None
    seconds: float

    @property
    def n(self) -> int:
        return sum(b.n for b in self.buckets)

    @property
    def passed(self) -> int:
        return sum(b.passed for b in self.buckets)

    @property
    def ok(self) -> bool:
        return self.passed == self.n

    def table(self) -> str:
        from llamacpu.learn.tasks import TASKS

        unit = TASKS[self.task].unit
        rows = [f"| {self.task}: {unit} | examples | exact match |", "|---:|---:|---:|"]
        rows += [f"| {b.length} | {b.n} | {100 * b.rate:.1f}% |" for b in self.buckets]
        return "\n".join(rows)

    def describe(self) -> str:
        head = (f"{self.task}: {self.passed}/{self.n} examples pass "
                f"({self.seconds:.1f} s)\n" + self.table())
        if self.counterexample is not None:
            head += "\n" + self.counterexample.describe()
        return head

    def assert_ok(self) -> None:
        """Raise AssertionError with the counterexample if anything failed."""
        if not self.ok:
            raise AssertionError(self.describe())


class _Failed(Exception):
    """Raised inside the hypothesis test for a failing example."""


def _emit(machine, examples: list) -> list:
    """The programs the machine runs: the controller's greedy plan, or the expert's."""
    if hasattr(machine, "controller"):
        import torch

        with torch.no_grad():
            was = machine.training
            machine.eval()
            try:
                return machine.controller.emit([e.prompt for e in examples])
            finally:
                machine.train(was)
    return machine.emit(examples)


def _run_machine(machine, examples: list, max_steps: int, trace: bool = False) -> list:
    """Run the examples free on the machine, one batch: MachineResults and the programs
    run, in order. ``learn.evaluation.solve_examples`` without its batching, for what
    ``LearnedMachine.solve`` does not give: traces, and the :class:`ExpertMachine`."""
    import torch

    from llamacpu.learn.tasks import default_out_size

    prompts = [e.prompt for e in examples]
    programs = _emit(machine, examples)
    with torch.no_grad():
        return machine.machine(prompts).run_batch(
            programs, prompts, max_steps=max_steps, on_limit="stop", trace=trace,
            out_size=max(default_out_size(e) for e in examples)), programs


def _verdict(example, result, program, reference: str) -> str | None:
    """None if the machine's answer is right, else why not. Stricter than the evaluation
    core's ``exact``: the run must also halt, and the reference interpreter must agree
    with Python. A run of the decline program is "cannot compile" (``solution.declined``):
    right for the tasks that decline, wrong for every other."""
    from llamacpu.learn.evaluation import exact
    from llamacpu.learn.solution import Solution, declined

    if result.fault is not None:
        return result.fault
    if not result.halted:
        return "did not halt within the step budget"
    if reference != example.answer:
        return f"the reference interpreter answers {reference!r}, Python {example.answer!r}"
    if not exact(example, declined(Solution(result.output, result.steps, result.halted,
                                            result.fault, program))):
        return "wrong answer"
    return None


def draw_examples(task: str, length: int, count: int, seed: int = 0, split: str = "train",
                  plain: bool = False, alphabet: Alphabet = DEFAULT_ALPHABET) -> list:
    """The examples :func:`check_learned` runs at one length of a ``lengths`` plan (with
    ``plain = length >= plain_from``) on a machine of ``alphabet``: for scoring other models
    on the same inputs."""
    strategy = task_examples(task, length, length, split, edge=not plain, alphabet=alphabet)
    return _generate(strategy, count + plain, seed)[plain:]


def _generate(strategy, n: int, seed: int) -> list:
    """``n`` examples drawn by hypothesis (fewer if the strategy has fewer), seeded."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hseed(seed)
    @given(strategy)
    def collect(example) -> None:
        out.append(example)

    collect()
    return out


def _diagnose(machine, example, why: str) -> Counterexample:
    """Both traces of one failing example, and where they part."""
    from llamacpu.learn.evaluation import reference_run, step_budget

    ref = reference_run(example, trace=True)
    (res,), (program,) = _run_machine(machine, [example], step_budget(ref.steps), trace=True)
    expert = _expert_program(example).slots
    differs = next((i for i in range(max(len(program.slots), len(expert)))
                    if program.slots[i:i + 1] != expert[i:i + 1]), None)
    return Counterexample(example, res.output, None if why == "wrong answer" else why,
                          ref.output, first_divergence(ref.trace or (), res.trace or ()),
                          differs)


def _expert_program(example):
    from llamacpu.learn.tasks import expert_program

    return expert_program(example)


def check_learned(machine, task: str, *, min_length: int = 1, max_length: int | None = None,
                  lengths: dict[int, int] | None = None, examples: int = 1000, seed: int = 0,
                  batch: int = 64, split: str = "train", shrink_seconds: float = 120.0,
                  plain_from: int = 10**9, log: Callable[[str], None] | None = None
                  ) -> CheckReport:
    """Run ``machine`` free on hypothesis-drawn examples of ``task`` and compare with the
    reference interpreter and Python's answer.

    ``machine``: a ``LearnedMachine`` (its controller compiles every prompt, the machine
    runs the emitted program with the neural OEU and the learned sequencer) or an
    :class:`ExpertMachine`. Examples come from :func:`task_examples`, in the machine's
    alphabet (``learn.evaluation.alphabet_of``): ``examples`` of them
    over lengths ``min_length..max_length`` (default: ``min_length``), or, with
    ``lengths={length: count}``, ``count`` at each length; lengths from ``plain_from`` on
    (where only a few examples are affordable) draw plain operands only and skip
    hypothesis's first example, which is always the simplest (all zeros). On failure the
    report holds the
    smallest failing example hypothesis shrinks to (within ``shrink_seconds`` of machine
    time) and the first step where the machine's trace departs from the expert trace.
    """
    import time

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from llamacpu.learn.evaluation import alphabet_of, reference_run, step_budget

    start = time.time()
    alphabet = alphabet_of(machine)
    if lengths is None:
        hi = min_length if max_length is None else max_length
        plan = [(task_examples(task, min_length, hi, split, alphabet=alphabet), examples,
                 False)]
    else:
        plan = [(task_examples(task, L, L, split, edge=L < plain_from, alphabet=alphabet), k,
                 L >= plain_from) for L, k in sorted(lengths.items())]

    verdicts: dict[str, str | None] = {}   # prompt -> None (pass) or why it failed
    seen: dict[str, object] = {}           # prompt -> Example, of phase 1
    counts: dict[int, list[int]] = {}
    first_failing = None  # (strategy, count) of the first plan entry with a failure
    for strategy, count, plain in plan:
        drawn = _generate(strategy, count + plain, seed)[plain:]
        todo = {e.prompt: e for e in drawn if e.prompt not in verdicts}
        refs = {p: reference_run(e) for p, e in todo.items()}
        order = sorted(todo, key=lambda p: (refs[p].steps, p))
        for i in range(0, len(order), batch):
            chunk = [todo[p] for p in order[i:i + batch]]
            budget = step_budget(max(refs[e.prompt].steps for e in chunk))
            results, programs = _run_machine(machine, chunk, budget)
            for e, r, prog in zip(chunk, results, programs):
                verdicts[e.prompt] = _verdict(e, r, prog, refs[e.prompt].output)
        for e in drawn:
            seen[e.prompt] = e
            c = counts.setdefault(e.length, [0, 0])
            c[0] += 1
            c[1] += verdicts[e.prompt] is None
        if log:
            lens = sorted({e.length for e in drawn})
            log(f"{task} lengths {lens[0]}..{lens[-1]}: {len(drawn)} examples, "
                f"{sum(verdicts[e.prompt] is None for e in drawn)} pass "
                f"({time.time() - start:.1f} s)")
        if first_failing is None and any(verdicts[e.prompt] for e in drawn):
            first_failing = (strategy, count + plain)
    buckets = tuple(Bucket(L, n, p) for L, (n, p) in sorted(counts.items()))

    counter = None
    if first_failing is not None:
        deadline = time.time() + shrink_seconds

        def fails(example) -> None:
            if example.prompt not in verdicts:
                if time.time() > deadline:
                    return  # out of shrinking time: treat unseen candidates as passing
                ref = reference_run(example)
                (r,), (prog,) = _run_machine(machine, [example], step_budget(ref.steps))
                verdicts[example.prompt] = _verdict(example, r, prog, ref.output)
            if verdicts[example.prompt] is not None:
                raise _Failed(example)

        strategy, count = first_failing
        search = settings(max_examples=count, database=None, deadline=None,
                          phases=[Phase.generate, Phase.shrink],
                          suppress_health_check=list(HealthCheck),
                          report_multiple_bugs=False)(hseed(seed)(given(strategy)(fails)))
        try:
            search()
        except _Failed as e:
            smallest = e.args[0]
            counter = _diagnose(machine, smallest, verdicts[smallest.prompt])
        else:  # the seeded replay met no failure (the machine is not deterministic?)
            bad = min((e for e in seen.values() if verdicts[e.prompt] is not None),
                      key=lambda e: (e.length, len(e.prompt)))
            counter = _diagnose(machine, bad, verdicts[bad.prompt])
    return CheckReport(task, buckets, counter, time.time() - start)


def learned_check(task: str, **options) -> Callable:
    """Decorator for pytest tests: after the test body, :func:`check_learned` runs on the
    test's first argument (a machine, e.g. the ``learned_machine`` fixture) and the test
    fails with the shrunk counterexample and the divergence step if any example fails::

        @learned_check("add", max_length=4, examples=300)
        def test_my_adder(learned_machine):
            pass
    """
    import functools

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            fn(*args, **kwargs)
            machine = args[0] if args else next(iter(kwargs.values()))
            check_learned(machine, task, **options).assert_ok()
        return wrapper
    return deco
