"""Certificates of the OEU table (llamacpu.learn.certify, python -m llamacpu.certify).

The exact OEU is certified over the whole instruction set; one wrong entry, in a symbolic
table or in a trained neural OEU, is found (and nothing else is), and its witness prompt is
answered wrong by the machine running free. The program domain is sound: every OEU input an
expert run meets, at any length, lies in it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llamacpu.core.golden import load_program
from llamacpu.core.interp import run
from llamacpu.core.isa import DEFAULT_ALPHABET, SPEC, Kind, Op, Role
from llamacpu.evaluate.properties import ExpertMachine, corrupt_oeu
from llamacpu.learn.certify import (
    certify_oeu,
    find_witness,
    isa_domain,
    program_domain,
    tasks_domain,
)
from llamacpu.learn.learned import Solution
from llamacpu.learn.tasks import TASKS, expert_program
from llamacpu.machine.oeu import NeuralOEU, OEUConfig, examples_from_traces
from llamacpu.machine.symbolic import SymbolicOEU, exact_op

A = DEFAULT_ALPHABET
REPO = Path(__file__).resolve().parent.parent
CURRICULUM_TASKS = ("add", "sub", "cmp", "mul", "copy", "reverse", "sort", "max", "fmap",
                    "fmap_data")


class FreeRunning:
    """A machine whose controller emits ``program`` for every prompt (the expert's), with
    a given OEU, running free: ``solve`` as a learned machine has it (every value the
    program computes comes from ``oeu``)."""

    def __init__(self, oeu, program) -> None:
        self.expert = ExpertMachine(oeu)
        self.program = program

    def solve(self, prompts, max_steps):
        programs = [self.program] * len(prompts)
        results = self.expert.machine(prompts).run_batch(programs, prompts,
                                                         max_steps=max_steps, on_limit="stop")
        return [Solution(r.output, r.steps, r.halted, r.fault, p)
                for r, p in zip(results, programs)]


def test_the_exact_oeu_is_certified_over_the_whole_isa():
    cert = certify_oeu(SymbolicOEU(A), A)
    assert cert.certified, cert.summary(A)
    assert set(cert.ops) == set(Op)
    assert cert.inputs > 100_000


@pytest.mark.parametrize("domain", ["isa", "program"])
def test_one_wrong_symbolic_entry_is_the_only_failure(domain):
    oeu = corrupt_oeu("ADD", 8, 8, 1, alphabet=A)
    dom = isa_domain(A) if domain == "isa" else tasks_domain(["add"], A)
    cert = certify_oeu(oeu, A, dom)
    assert not cert.certified
    assert [(f.op, f.a, f.b, f.carry, f.output) for f in cert.failures] == [
        (Op.ADD, 8, 8, 1, "result")]
    assert cert.failures[0].want == 7


def test_the_witness_of_a_wrong_entry_is_answered_wrong_running_free():
    oeu = corrupt_oeu("ADD", 8, 8, 1, alphabet=A)
    (entry,) = certify_oeu(oeu, A, tasks_domain(["add"], A)).failures
    machine = FreeRunning(oeu, load_program("add"))
    w = find_witness(machine, entry, ["add"], seed=1)
    assert w is not None and w.wrong
    # checked again, independently: the prompt meets the entry and the machine errs on it
    res = run(load_program("add"), w.prompt, trace=True)
    assert res.output == w.answer
    steps = examples_from_traces([res.trace])
    assert bool(((steps.op == int(Op.ADD)) & (steps.a == 8) & (steps.b == 8)
                 & (steps.carry == 1)).any())
    (sol,) = machine.solve([w.prompt], max_steps=10 * res.steps)
    assert sol.output != w.answer


def _trained_neural_oeu(domain, flip=None, seed=0, steps=1500) -> NeuralOEU:
    """A NeuralOEU fitted to the exact table on ``domain``, with ``flip`` = (op, a, b, carry)
    taught a wrong result (right one + 1 mod base)."""
    torch.manual_seed(seed)
    oeu = NeuralOEU(OEUConfig(alphabet=A, hidden=128))
    keys = sorted(domain)
    o, a, b, c, e = torch.tensor(keys).T
    want_r, want_c = exact_op(o, a, b, c, e.bool(), A)
    if flip is not None:
        hit = (o == int(flip[0])) & (a == flip[1]) & (b == flip[2]) & (c == flip[3])
        want_r = torch.where(hit, (want_r + 1) % A.base, want_r)
    x = (F.one_hot(o, len(Op)).float(), F.one_hot(a, A.size).float(),
         F.one_hot(b, A.size).float(), F.one_hot(c, A.base).float(), e.float())
    opt = torch.optim.Adam(oeu.parameters(), lr=3e-3)
    for _ in range(steps):
        out = oeu.logits(*x)
        loss = F.cross_entropy(out.result, want_r) + F.cross_entropy(out.carry, want_c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-3:
            break
    return oeu.eval()


@pytest.mark.slow
def test_a_trained_neural_oeu_with_one_flipped_entry():
    torch.set_num_threads(1)
    dom = tasks_domain(["add"], A)
    good = _trained_neural_oeu(dom)
    assert certify_oeu(good, A, dom).certified
    bad = _trained_neural_oeu(dom, flip=(Op.ADD, 8, 8, 1))
    cert = certify_oeu(bad, A, dom)
    assert [(f.op, f.a, f.b, f.carry, f.output) for f in cert.failures] == [
        (Op.ADD, 8, 8, 1, "result")]
    w = find_witness(FreeRunning(bad, load_program("add")), cert.failures[0], ["add"], seed=2)
    assert w is not None and w.wrong


@pytest.mark.parametrize("task", CURRICULUM_TASKS)
def test_the_program_domain_holds_every_input_an_expert_run_meets(task):
    """Soundness of the carry and operand analysis, on expert traces at many lengths."""
    t = TASKS[task]
    program_dom = tasks_domain([task], A)
    rng = random.Random(f"domain/{task}")
    top = t.max_length or 30
    for length in sorted({1, 2, 3, min(top, 7), min(top, 16), top}):
        for split in ("train", "heldout"):
            ex = t.sample(rng, length, split)
            res = run(expert_program(ex), ex.prompt, trace=True)
            live = False  # is the carry live after this step, along this very run?
            for step in reversed(res.trace):
                op, key = Op(step.op), _oeu_key(step)
                if op in _VALUE_WRITERS:  # a written result: in the domain, checked
                    assert program_dom.get(key, (False, False))[0], (task, ex.prompt, op, key)
                if live and op not in _BANK:  # its carry out is read later: checked
                    assert program_dom.get(key, (False, False))[1], (task, ex.prompt, op, key)
                reads = SPEC[op].reads_carry
                live = reads or (live and not (SPEC[op].writes_carry and not reads))


_VALUE_WRITERS = frozenset(o for o in Op if SPEC[o].roles[:1] == (Role.DST,)) - {
    Op.MOV, Op.APPLY}   # MOV's result is checked only from an immediate; APPLY's is the bank's
_BANK = frozenset({Op.APPLY, Op.WSET})


def _oeu_key(step) -> tuple[int, ...]:
    """The OEU input of a traced step, as the machine forms it (machine.oeu's convention)."""
    ex = examples_from_traces([(step,)])
    return (int(ex.op[0]), int(ex.a[0]), int(ex.b[0]), int(ex.carry[0]), int(ex.ptr_eq[0]))


def test_the_program_domain_is_much_smaller_than_the_isa_domain():
    prog = program_domain(expert_program(TASKS["add"].sample(random.Random(0), 1)), A)
    ops = {Op(k[0]) for k in prog}
    assert Op.ADD in ops and Op.MUL not in ops
    assert {k[3] for k in prog if k[0] == Op.ADD} == {0, 1}   # add's carry is a bit
    assert len(prog) < len(isa_domain(A, ops)) / 10


def test_the_cli_reports_a_wrong_table_with_a_witness_and_exits_1(two_step_run, capsys):
    from llamacpu.certify import main as certify_main
    from llamacpu.check import main as check_main

    ck = two_step_run / "stage_0"
    assert certify_main(["--checkpoint", str(ck), "--witnesses", "1"]) == 1
    out = capsys.readouterr().out
    assert "OEU table NOT CERTIFIED" in out
    assert "tasks add, domain: program" in out
    # --plans-only: the plans of every view, no execute decision, counted per task
    record = two_step_run / "plans.json"
    certify_main(["--checkpoint", str(ck), "--witnesses", "0", "--plans-only",
                  "--json", str(record)])
    assert "execute tables: not checked (--plans-only)" in capsys.readouterr().out
    ctl = json.loads(record.read_text())["controller"]
    assert ctl["plans_only"] and ctl["decisions"] == 0 and ctl["step_failures_total"] == 0
    assert ctl["plan_failures_per_task"] == {"add": len(ctl["plan_failures"])}
    # the sampled check reports the certificate beside its pass rates
    check_main(["--checkpoint", str(ck), "--task", "add", "--examples", "5", "--quiet"])
    out = capsys.readouterr().out
    assert "OEU table NOT CERTIFIED" in out, out[-2000:]
    # compiled execution on a machine that is not certified falls back, answers unchanged
    import llamacpu

    model = llamacpu.load(ck)
    prompts = ["1+2=", "what is 45 plus 7?"]
    assert model.solve(prompts, compiled=True, max_steps=400) == model.solve(prompts,
                                                                            max_steps=400)
    assert model._compiled.stats.neural == len(prompts)


def test_the_cli_names_a_missing_checkpoint_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "llamacpu.certify", "--checkpoint", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")


class _Controller:
    """A stand-in controller that emits the expert program of the add task."""

    def __init__(self, wrong_plan: bool = False) -> None:
        from llamacpu.llm.config import ControllerConfig

        self.cfg = ControllerConfig()
        self.program = load_program("copy" if wrong_plan else "add")

    def emit(self, prompts):
        return [self.program] * len(prompts)


class _FlippedSequencer(torch.nn.Module):
    """The exact sequencer, with the jump decision flipped at one (op, a == 0) pattern."""

    def __init__(self, op: Op | None = None, a_zero: bool = False) -> None:
        super().__init__()
        from llamacpu.machine.symbolic import SymbolicSequencer

        self.exact, self.op, self.a_zero = SymbolicSequencer(), op, a_zero

    def forward(self, view):
        dec = self.exact(view)
        if self.op is None:
            return dec
        hit = view.op[:, self.op] * (view.values[:, 0, 0] if self.a_zero
                                     else 1 - view.values[:, 0, 0])
        return dec._replace(p_taken=dec.p_taken * (1 - hit) + (1 - dec.p_taken) * hit)


class _Model:
    def __init__(self, controller, sequencer) -> None:
        self.controller, self.sequencer = controller, sequencer

    def machine(self, prompts):
        from llamacpu.machine.machine import Machine, MachineConfig

        return Machine(MachineConfig(), sequencer=self.sequencer)


def _add_prompts(n: int = 12):
    rng = random.Random(3)
    exs = [TASKS["add"].sample(rng, 1 + i % 4) for i in range(n)]
    return [e.prompt for e in exs], [expert_program(e) for e in exs]


def test_an_exact_controller_is_certified_on_its_views():
    from llamacpu.learn.controller_tables import certify_controller

    prompts, programs = _add_prompts()
    ctl = _Controller()
    cert = certify_controller(_Model(ctl, _FlippedSequencer()), prompts, programs)
    assert cert.certified, cert.summary()
    views = {ctl.cfg.view(p) for p in prompts}  # one check per view, not per prompt
    assert cert.views == len(views) < len(set(prompts)) and cert.decisions > 1000


def test_one_wrong_decision_pattern_is_found_at_every_instruction_that_meets_it():
    from llamacpu.core.isa import Mode
    from llamacpu.learn.controller_tables import certify_controller

    prompts, programs = _add_prompts()
    model = _Model(_Controller(), _FlippedSequencer(Op.JNZ, a_zero=True))
    cert = certify_controller(model, prompts, programs)
    assert not cert.certified and not cert.plan_failures
    program = programs[0]
    jnz = {pc for pc, s in enumerate(program.slots) if s.kind == Kind.INSTR and s.op == Op.JNZ}
    assert {f.pc for f in cert.step_failures} == jnz
    assert all(f.what == "taken" and f.values[0] == 0 and f.want is False and f.got is True
               for f in cert.step_failures)
    # only where operand a can be 0: every JNZ here reads a non-immediate operand
    assert all(program.slots[pc].modes[0] != Mode.IMMEDIATE for pc in jnz)


def test_a_wrong_program_is_a_plan_failure():
    from llamacpu.learn.controller_tables import certify_controller

    prompts, programs = _add_prompts(4)
    ctl = _Controller(wrong_plan=True)
    cert = certify_controller(_Model(ctl, _FlippedSequencer()), prompts, programs)
    assert len(cert.plan_failures) == cert.views == len({ctl.cfg.view(p) for p in prompts})
    add, copy = load_program("add").slots, load_program("copy").slots
    first = next(i for i in range(min(len(add), len(copy))) if add[i] != copy[i])
    f = cert.plan_failures[0]
    assert f.pc == first and f.want.startswith(f"slot {first} = ")
    assert f.got.startswith(f"slot {first} = ") and f.got != f.want


def test_a_wrong_plan_is_a_witness_only_when_the_free_run_answers_wrong(capsys):
    """The certify CLI runs each wrong-plan prompt free: answered wrong, it is a witness;
    answered right (a wrong slot no run reads), it says so."""
    from types import SimpleNamespace

    from llamacpu.certify import _plan_witnesses
    from llamacpu.learn.controller_tables import ControllerCertificate, Decision

    fails = [Decision(p, 2, "", (), "plan", "slot 2 = x", "slot 2 = y") for p in ("a", "b")]
    ctl = ControllerCertificate(2, 2, 0, plan_failures=fails)
    model = SimpleNamespace(solve=lambda prompts: [SimpleNamespace(output="47", fault=None),
                                                   SimpleNamespace(output="", fault="halt")])
    got = _plan_witnesses(model, ctl, {"a": "47", "b": "12"}, k=5)
    assert [w["answered_wrong"] for w in got] == [False, True]
    out = capsys.readouterr().out
    assert "answered right all the same" in out and "fault: halt" in out
    assert _plan_witnesses(model, ctl, {"a": "47", "b": "12"}, k=0) == []


def test_compiled_certificates_are_dropped_when_the_weights_change(monkeypatch):
    """A machine trained further after compiling must be certified again: its cached
    certificates belong to the old weights."""
    import llamacpu.learn.compiled as compiled_mod
    from llamacpu.learn.learned import LearnedMachine

    calls = []  # each certification of the OEU starts with the program's domain
    real = compiled_mod.program_domain
    monkeypatch.setattr(compiled_mod, "program_domain",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = LearnedMachine()
    runner = compiled_mod.CompiledRunner(model)
    prompts = ["1+2="]
    runner.solve(prompts, max_steps=200)
    runner.solve(prompts, max_steps=200)
    assert len(calls) == 1                    # the same program: certified once, cached
    with torch.no_grad():
        next(model.parameters()).add_(1.0)    # an optimizer step, in place
    runner.solve(prompts, max_steps=200)
    assert len(calls) == 2                    # the new weights are certified again


def test_the_gated_domain_certifies_what_the_full_domain_would():
    """A gated OEU is checked over gate_domain(domain); checking the same unit over the full
    domain (through a wrapper that does not say it is gated) finds the same wrong entries,
    seen once per carry value: the reduction loses nothing."""
    from llamacpu.learn.certify import gate_domain

    torch.manual_seed(0)
    oeu = NeuralOEU(OEUConfig(hidden=16))  # untrained: wrong nearly everywhere
    full = tasks_domain(["add", "max", "binary_addition"], A)
    small = gate_domain(full)
    assert len(small) < len(full) / 3

    class Plain:  # the same function, not declaring its gate
        def hard(self, *args):
            return oeu.hard(*args)

    gated, plain = certify_oeu(oeu, A, full), certify_oeu(Plain(), A, full)
    assert gated.outputs == sum(int(r) + int(k) for r, k in small.values())

    def seen(f):
        return (f.op, f.a, f.b, f.carry if SPEC[f.op].reads_carry else 0, f.ptr_eq, f.output)

    assert {seen(f) for f in plain.failures} == {seen(f) for f in gated.failures}
    assert gated.failures and all(
        f.output == "result" or SPEC[f.op].writes_carry for f in plain.failures)


def test_a_composed_prompt_runs_compiled_when_its_program_is_certified(monkeypatch):
    """A composed prompt's plan is the compile marker and its program the linked main
    program: the compiled runner checks the execute table of the program that runs under
    the plan the controller emitted (not the program as a plan, which no controller emits),
    and a prompt whose tables hold runs on the interpreter, with the expression's answer."""
    from types import SimpleNamespace

    import llamacpu.learn.compiled as compiled_mod
    import llamacpu.learn.compiling as compiling
    from llamacpu.learn.learned import LearnedMachine

    torch.manual_seed(0)
    model = LearnedMachine()
    prompt = "calculate 12 + 3 * 40"
    marker = compiling.compile_marker(model.alphabet)
    monkeypatch.setattr(model.controller, "emit", lambda prompts, *a, **k: [marker] * len(
        prompts))
    monkeypatch.setattr(compiling, "neural_policy", lambda controller: compiling._expr_policy)
    monkeypatch.setattr(compiled_mod, "certify_oeu",
                        lambda *a, **k: SimpleNamespace(certified=True))
    asked = []

    def certify_controller(model, prompts, programs, plans=None, emitted=None):
        asked.append((programs, plans))
        return SimpleNamespace(certified=plans is not None and plans[0] is marker)

    monkeypatch.setattr(compiled_mod, "certify_controller", certify_controller)
    runner = compiled_mod.CompiledRunner(model)
    (sol,) = runner.solve([prompt], max_steps=100_000)
    assert (sol.output, sol.fault, runner.stats.compiled) == ("132", None, 1)
    (programs, plans), = asked
    assert compiling.is_compile(plans[0]) and not compiling.is_compile(programs[0])


def test_the_compiled_runner_checks_each_oeu_entry_once_and_still_finds_a_new_wrong_one(
        monkeypatch):
    """A composed prompt links a new program each time (its main program, then the library):
    the runner checks only the OEU entries (with the outputs needed) that no earlier program
    had, and a wrong entry among those keeps the new program off the interpreter."""
    from types import SimpleNamespace

    import llamacpu.learn.compiled as compiled_mod
    from llamacpu.learn.learned import LearnedMachine

    torch.manual_seed(0)
    runner = compiled_mod.CompiledRunner(LearnedMachine())
    p, q, r = (load_program(t) for t in ("add", "sub", "copy"))
    add, sub = (int(Op.ADD), 1, 2, 0, 0), (int(Op.SUB), 1, 2, 0, 0)
    domains = {id(p): {add: (True, True)},
               id(q): {add: (True, True), sub: (True, True), add[:3] + (1, 0): (True, False)},
               id(r): {add: (True, True)}}
    monkeypatch.setattr(compiled_mod, "program_domain", lambda prog, a: domains[id(prog)])
    checked = []

    def certify_oeu(oeu, alphabet, domain):
        checked.append(dict(domain))
        return SimpleNamespace(certified=sub not in domain)  # SUB 1, 2 is wrong

    monkeypatch.setattr(compiled_mod, "certify_oeu", certify_oeu)
    monkeypatch.setattr(compiled_mod, "certify_controller",
                        lambda *a, **k: SimpleNamespace(certified=True))
    assert runner.certified("1+2=", p) is None
    assert "OEU table" in runner.certified("3-1=", q)
    assert checked == [domains[id(p)], {sub: (True, True), add[:3] + (1, 0): (True, False)}]
    assert runner.certified("12", r) is None and len(checked) == 2  # nothing new to check


def test_plans_the_caller_emitted_are_checked_without_emitting_them_again(monkeypatch):
    """certify_controller(emitted=...): the plans a caller already emitted (the compiled
    runner's, an every-view check's after its plans-only pass) are compared with the expert's
    as they are; the LM is not asked again."""
    from llamacpu.learn.controller_tables import certify_controller
    from llamacpu.learn.learned import LearnedMachine

    torch.manual_seed(0)
    model = LearnedMachine()

    def no_emission(*a, **k):
        raise AssertionError("emitted again")

    monkeypatch.setattr(model.controller, "emit", no_emission)
    add, sub = load_program("add"), load_program("sub")
    prompts = ["1+2=", "what is 3 plus 4?"]
    right = certify_controller(model, prompts, [add, add], emitted=[add, add], execute=False)
    assert right.plan_failures == [] and right.views == 2
    wrong = certify_controller(model, prompts, [add, add], emitted=[add, sub], execute=False)
    assert [f.prompt for f in wrong.plan_failures] == ["what is 3 plus 4?"]
