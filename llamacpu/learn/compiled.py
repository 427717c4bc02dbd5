"""Compiled execution: a certified prompt runs on the tables it was proven equal to.

The neural machine steps the LM's execute phase and the neural OEU at every machine step:
seconds for a 1000-digit addition. Once the emitted program's tables are certified for a
prompt's view (llamacpu.learn.certify: the OEU over every input the program can give it,
every execute decision at every reachable instruction and flag pattern of that view), the
hard machine running that program takes exactly the reference interpreter's steps. So the
program can run on the interpreter's block translator (llamacpu.core.fastinterp), which is
the instruction set's semantics compiled to Python: the same answer, thousands of times
faster. A prompt whose tables are not certified runs on the neural machine instead, so
``solve(prompts, compiled=True)`` answers exactly what ``solve(prompts)`` answers, always.

Per prompt the cost is one plan pass of the LM (emit), one execute-table certificate for its
view (cached by view; about 0.06 s for the tiny controller) and the OEU certificate of its
program (cached by program; an entry of the table is checked once, so a composed prompt's
linked program, new each time, checks only the entries its main program adds to the
library's), then the interpreter's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llamacpu.core.interp import run
from llamacpu.core.isa import LlamacpuError, Program
from llamacpu.learn.certify import certify_oeu, program_domain
from llamacpu.learn.controller_tables import certify_controller
from llamacpu.learn.solution import Solution, default_max_steps

__all__ = ["CompiledRunner", "CompileStats"]


@dataclass
class CompileStats:
    compiled: int = 0        # prompts answered on the certified tables
    neural: int = 0          # prompts that fell back to the neural machine
    reasons: list[str] = field(default_factory=list)   # why, for the first few fallbacks


class CompiledRunner:
    """``solve`` with compiled execution for one learned machine (keeps its certificates)."""

    def __init__(self, model) -> None:
        self.model = model
        self._oeu: dict[tuple, bool] = {}
        self._right: set[tuple] = set()  # (OEU entry, outputs needed) found right
        self._views: dict[tuple[str, tuple], bool] = {}
        self._weights_version = self._version()
        self.stats = CompileStats()

    def _version(self) -> int:
        """Changes whenever a parameter is modified in place (an optimizer step, a load):
        certificates of older weights are then dropped."""
        return sum(p._version for p in self.model.parameters())

    def _program_key(self, program: Program) -> tuple:
        return tuple(program.slots)

    def certified(self, prompt: str, program: Program, plan: Program | None = None
                  ) -> str | None:
        """None if ``program``, which runs for ``prompt``, is certified for the prompt's
        view; else why not. ``plan`` is what the plan phase emitted (default: the program
        itself; a composed prompt's is the compile marker, its program the linked main
        program the compile phase built): the execute table is checked on the program
        that runs, under the plan the controller emits."""

        key = self._program_key(program)
        alphabet = self.model.cfg.oeu.alphabet
        if key not in self._oeu:  # entries are checked independently: only the new ones
            todo = {k: v for k, v in program_domain(program, alphabet).items()
                    if (k, v) not in self._right}
            self._oeu[key] = not todo or certify_oeu(self.model.oeu, alphabet, todo).certified
            if self._oeu[key]:
                self._right.update(todo.items())
        if not self._oeu[key]:
            return "the OEU table of the emitted program is not certified"
        view = (self.model.controller.cfg.view(prompt), key)
        if view not in self._views:  # the plan is the one emitted: its tables are checked
            emitted = program if plan is None else plan
            cert = certify_controller(self.model, [prompt], [program], plans=[emitted],
                                      emitted=[emitted])
            self._views[view] = cert.certified
        if not self._views[view]:
            return "the execute table of this view is not certified"
        return None

    @torch.no_grad()
    def solve(self, prompts: Sequence[str], max_steps: int | None = None,
              out_sizes: Sequence[int] | None = None) -> list:
        """The answers ``model.solve`` gives, computed on the certified tables where the
        certificate holds and on the neural machine elsewhere."""
        model = self.model
        if self._version() != self._weights_version:  # trained since: certify again
            self._oeu.clear()
            self._right.clear()
            self._views.clear()
            self._weights_version = self._version()
        was = model.training
        model.eval()
        try:
            programs = model.controller.emit(list(prompts))
        finally:
            model.train(was)
        plans = programs
        programs, failed = model.build(prompts, plans)  # composed prompts: compiled
        budget = default_max_steps(prompts) if max_steps is None else max_steps
        out: list = [None] * len(prompts)
        fallback = []
        for i, (prompt, program) in enumerate(zip(prompts, programs)):
            if i in failed:  # nothing to run: the neural machine would fail the same way
                out[i] = Solution("", 0, False, failed[i], program)
                continue
            why = self.certified(prompt, program, plans[i])
            if why is None:
                out_size = max(out_sizes) if out_sizes else None
                try:
                    res = run(program, prompt, max_steps=budget, on_limit="stop",
                              out_size=out_size)
                except LlamacpuError as e:  # the neural run names the same fault its way
                    why = f"the program faults ({e})"
                else:
                    if res.halted:
                        out[i] = Solution(res.output, res.steps, True, None, program)
                        self.stats.compiled += 1
                        continue
                    why = f"no HALT within {budget} steps"
            fallback.append(i)
            self.stats.neural += 1
            if len(self.stats.reasons) < 10:
                self.stats.reasons.append(f"{prompt!r}: {why}")
        if fallback:
            sols = model.solve([prompts[i] for i in fallback], max_steps=budget,
                               out_sizes=None if out_sizes is None else
                               [out_sizes[i] for i in fallback])
            for i, s in zip(fallback, sols):
                out[i] = s
        return out
