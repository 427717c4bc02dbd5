"""Certified competence: the trainer's side of the certificates (docs/certify.md).

With certification on (the default; ``--no-certify`` is the sampled-only ablation) a stage
passes when its sampled free-running check passes AND the learned tables of its task and of
every earlier task are certified (``curriculum.decide``'s ``certified``):

- the OEU over the program domain of every task trained so far (``certify.tasks_domain``),
  checked entry by entry: exact at any length;
- the plan and execute tables on ``views`` views per task, drawn afresh at each check from
  the stage's held-out prompts and from the retention prompts of every earlier task.

The same tables are supervision, from the semantics the expert traces come from:

- :meth:`Certifier.oeu_table`: the whole OEU domain with exact targets
  (``machine.symbolic.exact_op``; the result only where the domain says it matters, else
  -100, which ``oeu_loss`` ignores), merged into the OEU's replay at the start of a stage;
- :meth:`Certifier.rows`: every training step pairs each batch row's prompt with
  ``patterns`` rows of its expert program's execute table (``certify.step_patterns``: every
  flag pattern at every reachable instruction, the exact sequencer's decisions as targets),
  so the first certificate usually passes; and the rows a failed certificate names are
  replayed from a bounded buffer, with the prompts they failed on, until the next check.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from llamacpu.core.isa import Alphabet, Kind, Program
from llamacpu.learn.certify import OEUCertificate, certify_oeu, gate_domain, tasks_domain
from llamacpu.learn.compiling import (
    Action,
    CompileCertificate,
    View,
    certify_compile,
    is_composed,
    plan_program,
    run_program,
)
from llamacpu.learn.controller_tables import (
    ControllerCertificate,
    StepPatterns,
    certify_controller,
    every_view,
    failing_rows,
    step_patterns,
)
from llamacpu.learn.curriculum import Stage, trained_tasks
from llamacpu.learn.tasks import Example, expert_program
from llamacpu.llm.heads import StepView
from llamacpu.machine.oeu import OEUExamples, merge_examples
from llamacpu.machine.symbolic import exact_op

__all__ = ["Certifier", "StageCertificate", "domain_examples", "trained_tasks"]

BUFFER = 4096
"""Most failing execute rows kept for training between two checks."""

BUFFER_ROWS = 128
"""Failing execute rows replayed per training step (drawn from the buffer)."""

TABLES = 512
"""Execute tables kept in a :class:`Certifier`'s cache."""


def domain_examples(domain: Mapping[tuple[int, ...], tuple[bool, bool]],
                    alphabet: Alphabet) -> OEUExamples:
    """An OEU domain ({(op, a, b, carry, ptr_eq): (result matters, carry matters)}) as replay
    examples with exact targets: the result where it matters (else -100, ignored by
    ``oeu_loss``), the carry out always (the semantics, whether or not it is live)."""
    if not domain:
        return merge_examples()
    keys = torch.tensor(sorted(domain), dtype=torch.long)                   # [E, 5]
    op, a, b, c, e = keys.T
    res, cout = exact_op(op, a, b, c, e.bool(), alphabet)
    wants = torch.tensor([domain[k][0] for k in sorted(domain)], dtype=torch.bool)
    res = torch.where(wants, res, torch.full_like(res, -100))
    return merge_examples(OEUExamples(op, a, b, c, e, res, cout))


@dataclass
class StageCertificate:
    """What one check certified: the OEU table, and the controller's per task (None: the
    sampled check did not pass, so the controller was not checked)."""

    oeu: OEUCertificate
    controller: dict[str, ControllerCertificate] | None = None
    compile: dict[str, CompileCertificate] = field(default_factory=dict)  # composed tasks

    @property
    def certified(self) -> bool:
        return (self.oeu.certified and self.controller is not None
                and all(c.certified for c in self.controller.values())
                and all(c.certified for c in self.compile.values()))

    def metrics(self) -> dict[str, float]:
        """The counts logged in ``metrics.jsonl`` (``cert_*`` keys)."""
        m = {"cert_oeu_failures": len(self.oeu.failures), "cert_oeu_outputs": self.oeu.outputs}
        if self.controller is not None:
            cs = self.controller.values()
            m.update(cert_views=sum(c.views for c in cs),
                     cert_decisions=sum(c.decisions for c in cs),
                     cert_plan_failures=sum(len(c.plan_failures) for c in cs),
                     cert_step_failures=sum(len(c.step_failures) for c in cs),
                     certified=float(self.certified))
        if self.compile:
            m.update(cert_compile_views=sum(c.views for c in self.compile.values()),
                     cert_compile_wrong=sum(len(c.wrong) for c in self.compile.values()))
        return m

    def describe(self) -> str:
        """One line: what failed (for the trainer's log)."""
        parts = [f"OEU {len(self.oeu.failures)} of {self.oeu.outputs} outputs wrong"
                 if self.oeu.failures else f"OEU {self.oeu.outputs} outputs certified"]
        for task, c in (self.controller or {}).items():
            bad = {f.prompt for f in c.plan_failures + c.step_failures}
            parts.append(f"{task}: {len(bad)} of {c.views} views wrong "
                         f"({len(c.plan_failures)} plans, {len(c.step_failures)} decisions)"
                         if bad else f"{task}: {c.views} views certified")
        parts += [f"{task}: {c.describe()}" for task, c in self.compile.items()]
        return "; ".join(parts)


WINDOWED_WORDINGS = 16
"""The most wordings of a composed task whose views a stage check enumerates (16 wordings:
~800 views, ~1 minute to check; the hand-written templates are 4-6)."""


@dataclass
class Certifier:
    """The certificates of one stage and the supervision they give (module docstring)."""

    stage: Stage
    alphabet: Alphabet
    raw: bool           # the controller's state_values: the patterns enumerate raw values
    views: int          # views per task a controller certificate checks
    patterns: int       # execute-table rows per batch row per training step (0: none)
    carry_gate: bool = False  # the OEU gates its carry: its table is certify.gate_domain's
    trained: Collection[int] | None = None  # the earlier stages learned (None: all)
    tasks: list[str] = field(init=False)
    domain: dict = field(init=False)
    _patterns: dict[tuple, StepPatterns] = field(default_factory=dict, init=False)
    _buffer: list[tuple[Example, Program, int]] = field(default_factory=list, init=False)
    _windowed: dict[tuple, list[Example]] = field(default_factory=dict, init=False)
    plan_buffer: list[Example] = field(default_factory=list, init=False)
    """Examples whose emitted program was wrong at the last check: the next training
    batches carry them (their plan loss is the only thing that teaches a plan)."""
    every_buffer: list[Example] = field(default_factory=list, init=False)
    """Examples whose plan was wrong at the last every-view check (``--certify-all-views``):
    kept until the next one, since a sampled check in between would rarely draw them."""
    compile_buffer: list[tuple[View, Action]] = field(default_factory=list, init=False)
    """Compile views the last check found wrong, with the expert's action: every training
    step's compile loss includes them until the next check."""

    def __post_init__(self) -> None:
        self.tasks = list(trained_tasks(self.stage.index, trained=None if self.trained is None
                                        else {*self.trained, self.stage.index}))
        self.domain = tasks_domain(self.tasks, self.alphabet)

    def oeu_table(self) -> OEUExamples:
        """The OEU domain of every task trained so far, with exact targets."""
        return domain_examples(gate_domain(self.domain) if self.carry_gate else self.domain,
                               self.alphabet)

    def table(self, program: Program) -> StepPatterns:
        """The execute table of ``program``, cached by its instructions (all the table
        depends on: fmap's programs differ per prompt in their WEIGHTS or DATA slots only);
        the last ``TABLES`` are kept."""
        key = tuple((a, s) for a, s in enumerate(program.slots) if s.kind == Kind.INSTR)
        if key not in self._patterns:
            if len(self._patterns) >= TABLES:
                self._patterns.pop(next(iter(self._patterns)))
            self._patterns[key] = step_patterns(program, self.alphabet, self.raw)
        return self._patterns[key]

    # ------------------------------------------------------------------ checking

    def check_oeu(self, model) -> StageCertificate:
        return StageCertificate(certify_oeu(model.oeu, self.alphabet, self.domain))

    def check_controller(self, model, cert: StageCertificate,
                         sets: Mapping[str, Sequence[Example]], step: int,
                         every: bool = False) -> StageCertificate:
        """Certify the controller on ``views`` examples per task of ``sets`` (drawn by
        ``step``; ``every``: on all of them), and replace the buffer with the rows that
        failed.

        ``every``: the plans of all of them are checked first, the execute tables only when
        every plan is right (a wrong plan fails the certificate whatever the tables hold,
        and the plans are the part that flickers: checking them alone first makes a failing
        check of thousands of views a fraction of a full one); the wrong plans go to
        :attr:`every_buffer`, replayed until the next such check."""
        if every:
            plans = {task: self._plan_only(model, task, examples)
                     for task, examples in sets.items()}
            self.every_buffer = [e for _, wrong in plans.values() for e in wrong]
            if self.every_buffer:
                cert.controller = {task: c for task, (c, _) in plans.items()}
                return cert
        cert.controller = {}
        cert.compile = {}
        self._buffer = []
        self.plan_buffer = []
        self.compile_buffer = []
        for task, examples in sets.items():
            if is_composed(task):  # every view of the wordings the check's prompts use,
                cc = certify_compile(model.controller, task,  # but the held-out combination's
                                     sorted({e.template for e in examples}),
                                     combinations="trained")
                cert.compile[task] = cc
                self.compile_buffer += [(v, want) for v, _, want in cc.wrong]
            windowed = self._windowed_views(task, model.controller.cfg.view, examples)
            pick = windowed if windowed is not None else list(examples) if every else \
                random.Random(f"certify/{self.stage.index}/{task}/{step}").sample(
                    list(examples), min(self.views, len(examples)))
            programs = [run_program(e) for e in pick]
            want = [plan_program(e) for e in pick]  # every: all emitted right, just checked
            c = certify_controller(model, [e.prompt for e in pick], programs, plans=want,
                                   emitted=want if every else None)
            cert.controller[task] = c
            program_of = {e.prompt: p for e, p in zip(pick, programs)}
            example_of = {e.prompt: e for e in pick}
            self.plan_buffer += [example_of[f.prompt] for f in c.plan_failures]
            by_prompt: dict[str, list] = {}
            for f in c.step_failures:
                by_prompt.setdefault(f.prompt, []).append(f)
            for prompt, fails in by_prompt.items():
                program = program_of[prompt]
                self._buffer += [(example_of[prompt], program, i)
                                 for i in failing_rows(self.table(program), fails)]
        if len(self._buffer) > BUFFER:
            self._buffer = random.Random(step).sample(self._buffer, BUFFER)
        return cert

    def refresh_plans(self, model, sets: Mapping[str, Sequence[Example]], step: int) -> int:
        """At a check that finds the stage below its competence bar (no certificate runs):
        the plan pools keep only the views whose plan is still wrong, and a fresh sample of
        ``views`` per task of ``sets`` (drawn by ``step``) adds the ones wrong now.

        Without it the pools the last certificate filled are replayed unchanged, a quarter
        of every batch, for as long as the stage stays below its bar, while a view the
        stage's own training broke goes unseen (a run stuck with every miss in a training
        wording is how this was found). Returns the number of views the pools hold."""
        pooled: dict[str, dict[str, Example]] = {}  # every_buffer's first: a wrong view
        for e in self.every_buffer + self.plan_buffer:  # is found once, by its first example
            pooled.setdefault(e.task, {})[e.prompt] = e
        wrong: set[str] = set()
        found: list[Example] = []
        for task in [*sets, *(t for t in pooled if t not in sets)]:  # in a fixed order
            examples = list(sets.get(task, ()))
            fresh = random.Random(f"refresh/{self.stage.index}/{task}/{step}").sample(
                examples, min(self.views, len(examples)))
            pick = {**pooled.get(task, {}), **{e.prompt: e for e in fresh}}
            _, w = self._plan_only(model, task, list(pick.values()))
            wrong |= {e.prompt for e in w}
            found += w
        self.every_buffer = [e for e in self.every_buffer if e.prompt in wrong]
        kept = {e.prompt for e in self.every_buffer}
        self.plan_buffer = [e for e in found if e.prompt not in kept]
        return len(self.plan_buffer) + len(self.every_buffer)

    def _plan_only(self, model, task: str, examples: Sequence[Example]
                   ) -> tuple[ControllerCertificate, list[Example]]:
        """The plans of every view of ``examples`` (a composed task's through its window,
        :meth:`_windowed_views`), and the examples whose plan is wrong."""
        windowed = self._windowed_views(task, model.controller.cfg.view, examples)
        pick = windowed if windowed is not None else list(examples)
        c = certify_controller(model, [e.prompt for e in pick], [run_program(e) for e in pick],
                               plans=[plan_program(e) for e in pick], execute=False)
        example_of = {e.prompt: e for e in pick}
        return c, [example_of[f.prompt] for f in c.plan_failures]

    def _windowed_views(self, task: str, view, examples: Sequence[Example]
                        ) -> list[Example] | None:
        """A composed task read through an operand window has a few dozen views per
        wording, whatever its prompts' length (``controller_tables.every_view``): one
        example per view of the wordings ``examples`` use, in the combinations training
        draws, so the check covers all of them, a statement about every number of
        operations (cached by task and wordings). Wordings too many to enumerate at every
        check (a grammar's: ``WINDOWED_WORDINGS``): one example per distinct view among
        ``examples``. None for any other task."""
        if not is_composed(task) or not (view.operands and view.bounded and view.abstract):
            return None
        templates = tuple(sorted({e.template for e in examples}))
        if len(templates) > WINDOWED_WORDINGS:
            return list({view(e.prompt): e for e in examples}.values())
        key = (task, templates, view)
        if key not in self._windowed:
            self._windowed[key] = every_view(
                task, view, seed=self.stage.index, alphabet=self.alphabet,
                combinations="trained", templates=templates).examples
        return self._windowed[key]

    def state(self) -> dict:
        """What the last check left for the next steps (the plan buffer and the failing
        execute rows), as plain data for a checkpoint: a resumed run draws what the
        interrupted one would have drawn. The examples' alphabet is the certifier's, so it
        is not repeated in each."""
        def plain(e: Example) -> dict:
            return {k: v for k, v in asdict(e).items() if k != "alphabet"}

        return {"plan": [plain(e) for e in self.plan_buffer],
                "every_plan": [plain(e) for e in self.every_buffer],
                "rows": [[plain(e), i] for e, _, i in self._buffer],
                "compile": [[v.head, v.token, v.top, v.opening, v.closing, a.name, a.op]
                            for v, a in self.compile_buffer]}

    def load_state(self, state: Mapping) -> None:
        """Restore :meth:`state` (the examples in the certifier's alphabet; the execute rows'
        programs are their experts)."""
        def example(d: Mapping) -> Example:
            return Example(**{**d, "operands": tuple(d["operands"]), "alphabet": self.alphabet})

        self.plan_buffer = [example(d) for d in state.get("plan", ())]
        self.every_buffer = [example(d) for d in state.get("every_plan", ())]
        self.compile_buffer = [(View(h, t, top, o, c), Action(name, op))
                               for h, t, top, o, c, name, op in state.get("compile", ())]
        programs: dict[str, Program] = {}
        self._buffer = []
        for d, i in state.get("rows", ()):
            e = example(d)
            self._buffer.append((e, programs.setdefault(e.prompt, expert_program(e)), int(i)))

    def plan_rows(self, rng: random.Random, batch_size: int) -> list[Example]:
        """Up to a quarter of a batch of :attr:`plan_buffer` and :attr:`every_buffer`
        examples (none when both are empty, so a run whose plans are all right draws the
        same batches as without them)."""
        pool = self.plan_buffer + self.every_buffer
        if not pool:
            return []
        k = min(len(pool), max(1, batch_size // 4))
        return rng.sample(pool, k)

    # ------------------------------------------------------------------ supervision

    def rows(self, prompts: Sequence[str], programs: Sequence[Program],
             seeds: Sequence[int], step: int, dist=None
             ) -> tuple[list[str], StepView, Tensor, Tensor] | None:
        """This rank's execute-table rows for a training step: ``patterns`` random rows of
        each batch row's program (drawn by the row's seed) with its prompt, and its stride
        of ``BUFFER_ROWS`` rows of the buffer (drawn by ``step``, the same on every rank),
        grouped by prompt. Returns (prompts, views ``[B, T, ...]``, targets ``[B, T, 3]``,
        mask ``[B, T, 3]``), or None when there are none."""
        groups: dict[str, list[tuple[StepPatterns, int]]] = {}
        if self.patterns:
            for prompt, program, seed in zip(prompts, programs, seeds):
                table = self.table(program)
                n = len(table.pcs)
                rng = random.Random(seed ^ 0x5EED)
                picks = rng.sample(range(n), min(self.patterns, n))
                groups.setdefault(prompt, []).extend((table, i) for i in picks)
        if self._buffer:
            drawn = random.Random(f"buffer/{step}").sample(
                self._buffer, min(BUFFER_ROWS, len(self._buffer)))
            for e, program, i in (dist.take(drawn) if dist is not None else drawn):
                groups.setdefault(e.prompt, []).append((self.table(program), i))
        if not groups:
            return None
        T = max(len(g) for g in groups.values())
        first = next(iter(groups.values()))[0][0]
        B = len(groups)
        view = StepView(*(x.new_zeros(B, T, *x.shape[1:]) for x in first.view[:4]))
        targets = first.targets.new_zeros(B, T, 3)
        mask = first.mask.new_zeros(B, T, 3)
        for b, g in enumerate(groups.values()):
            for t, (table, i) in enumerate(g):
                for dst, src in zip(view, table.view[:4]):
                    dst[b, t] = src[i]
                targets[b, t] = table.targets[i]
                mask[b, t] = table.mask[i]
        return list(groups), view, targets, mask
