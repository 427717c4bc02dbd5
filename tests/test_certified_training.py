"""Certified competence (learn/certified.py): the certificates' tables as supervision and in
the stage rule. Cheap: no training here; tests/test_train.py trains stage 0 with
certification on and checks what it yields (a certified OEU, exact 20-digit additions)."""

import json
import random
from types import SimpleNamespace

import pytest
import torch

from llamacpu.core.golden import load_program
from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, Op
from llamacpu.learn.certified import Certifier, domain_examples
from llamacpu.learn.certify import certify_oeu, tasks_domain
from llamacpu.learn.controller_tables import failing_rows, step_patterns
from llamacpu.learn.curriculum import STAGES, Decision, decide, trained_tasks
from llamacpu.learn.tasks import TASKS, expert_program
from llamacpu.machine.symbolic import SymbolicOEU, exact_op
from llamacpu.train import parse_args


def test_the_oeu_table_has_exact_targets_where_the_domain_checks_them():
    domain = tasks_domain(["add", "sub"], DEFAULT_ALPHABET)
    ex = domain_examples(domain, DEFAULT_ALPHABET)
    assert len(ex) == len(domain)
    keys = [tuple(r) for r in torch.stack([ex.op, ex.a, ex.b, ex.carry, ex.ptr_eq], 1).tolist()]
    assert set(keys) == set(domain)
    res, cout = exact_op(ex.op, ex.a, ex.b, ex.carry, ex.ptr_eq.bool(), DEFAULT_ALPHABET)
    assert torch.equal(ex.carry_out, cout)
    wants = torch.tensor([domain[k][0] for k in keys])
    assert torch.equal(ex.result[wants], res[wants]) and (ex.result[~wants] == -100).all()
    # an OEU that has this table is certified over the domain (the exact one, here)
    assert certify_oeu(SymbolicOEU(DEFAULT_ALPHABET), DEFAULT_ALPHABET, domain).certified


def test_trained_tasks_are_the_stage_and_every_earlier_one():
    by = {s.name: s for s in STAGES}
    assert list(trained_tasks(by["add3"].index)) == ["add"]
    assert list(trained_tasks(by["cmp4"].index)) == ["add", "sub", "cmp"]


def test_the_stage_rule_needs_the_certificate():
    s = STAGES[1]
    assert decide(s, 1.0, 10, 100, certified=True) is Decision.ADVANCE
    assert decide(s, 1.0, 10, 100, certified=None) is Decision.ADVANCE   # sampled-only rule
    assert decide(s, 1.0, 10, 100, certified=False) is Decision.STAY
    assert decide(s, 1.0, 100, 100, certified=False) is Decision.GIVE_UP  # not passed
    assert decide(s, 0.5, 10, 100, certified=True) is Decision.STAY
    assert decide(s, 1.0, 10, 100, {"sub": 0.2}, 0.9, True) is Decision.CONSOLIDATE


def test_the_certify_flags_parse():
    assert parse_args(["--stage", "0"]).certify is True
    cfg = parse_args(["--stage", "0", "--no-certify", "--certify-views", "4",
                      "--certify-patterns", "0"])
    assert (cfg.certify, cfg.certify_views, cfg.certify_patterns) == (False, 4, 0)
    assert cfg.oeu_steps == 1 and parse_args(["--stage", "0"]).oeu_steps == 3
    with pytest.raises(SystemExit):
        parse_args(["--stage", "0", "--certify-views", "0"])


# ---------------------------------------------------------------- the execute table


class _Controller:
    """A stand-in controller that emits the expert program of the add task."""

    def __init__(self) -> None:
        from llamacpu.llm.config import ControllerConfig

        self.cfg = ControllerConfig()
        self.program = load_program("add")

    def emit(self, prompts):
        return [self.program] * len(prompts)


class _FlippedSequencer(torch.nn.Module):
    """The exact sequencer with the jump decision of JNZ flipped where operand a is 0."""

    def __init__(self) -> None:
        super().__init__()
        from llamacpu.machine.symbolic import SymbolicSequencer

        self.exact = SymbolicSequencer()

    def forward(self, view):
        dec = self.exact(view)
        hit = view.op[:, Op.JNZ] * view.values[:, 0, 0]
        return dec._replace(p_taken=dec.p_taken * (1 - hit) + (1 - dec.p_taken) * hit)


class _Model:
    def __init__(self) -> None:
        self.controller, self.sequencer = _Controller(), _FlippedSequencer()

    def machine(self, prompts):
        from llamacpu.machine.machine import Machine, MachineConfig

        return Machine(MachineConfig(), sequencer=self.sequencer)


def test_step_patterns_are_the_rows_the_certificate_checks_with_exact_targets():
    program = load_program("add")
    pats = step_patterns(program, DEFAULT_ALPHABET)
    ops = pats.view.op.argmax(-1)
    from llamacpu.machine.symbolic import SymbolicSequencer

    exact = SymbolicSequencer()
    assert torch.equal(pats.targets.bool(), torch.stack(exact.hard(ops, pats.values), -1))
    assert torch.equal(pats.mask[:, 1].bool(), exact.writes.take(ops))
    # the certificate's decision count is the mask's
    from llamacpu.learn.controller_tables import certify_controller

    rng = random.Random(0)
    ex = TASKS["add"].sample(rng, 2)
    cert = certify_controller(_Model(), [ex.prompt], [expert_program(ex)])
    assert cert.decisions == int(pats.mask.sum())


def test_failing_decisions_become_training_rows_with_the_exact_targets():
    stage = STAGES[0]
    c = Certifier(stage, DEFAULT_ALPHABET, raw=False, views=3, patterns=0)
    rng = random.Random(1)
    examples = [stage.sample(rng) for _ in range(5)]
    cert = c.check_oeu(type("M", (), {"oeu": SymbolicOEU(DEFAULT_ALPHABET)})())
    c.check_controller(_Model(), cert, {"add": examples}, step=25)
    assert cert.oeu.certified and not cert.certified
    ctl = cert.controller["add"]
    assert ctl.views == 3 and ctl.step_failures
    m = cert.metrics()
    assert m["certified"] == 0.0 and m["cert_step_failures"] == len(ctl.step_failures)
    got = c.rows([], [], [], step=26)
    assert got is not None
    prompts, views, targets, mask = got
    assert set(prompts) == {f.prompt for f in ctl.step_failures}
    real = mask.sum(-1) > 0                                                   # [B, T]
    assert (views.op.argmax(-1)[real] == Op.JNZ).all()
    assert (views.values[..., 0, 0][real] == 1).all()             # operand a is 0 ...
    assert (targets[..., 0][real] == 0).all()                     # ... so JNZ does not jump
    table = c.table(expert_program(examples[0]))
    assert int(real.sum()) == min(128, len(set(failing_rows(table, ctl.step_failures)))
                                  * len(prompts))
    # patterns > 0: every batch row gets that many rows of its program's table
    c.patterns = 5
    c._buffer = []
    prompts, views, targets, mask = c.rows(["p", "q"], [expert_program(examples[0])] * 2,
                                           [1, 2], step=27)
    assert prompts == ["p", "q"] and targets.shape == (2, 5, 3)


def test_prompts_whose_plan_was_wrong_join_the_next_batches():
    """A plan is taught only by the plan loss: examples whose emitted program the last
    certificate found wrong are carried into the following batches (a quarter at most),
    and nothing changes while every plan is right."""
    stage = STAGES[4]   # sub4: a stand-in that emits add's program plans sub wrong
    c = Certifier(stage, DEFAULT_ALPHABET, raw=False, views=4, patterns=0)
    rng = random.Random(2)
    sub = [TASKS["sub"].sample(rng, 2) for _ in range(6)]
    add = [TASKS["add"].sample(rng, 2) for _ in range(6)]
    cert = c.check_oeu(type("M", (), {"oeu": SymbolicOEU(DEFAULT_ALPHABET)})())
    c.check_controller(_Model(), cert, {"sub": sub, "add": add}, step=25)
    wrong = cert.controller["sub"].plan_failures            # one per view of the 4 drawn
    assert 1 <= len(wrong) == cert.controller["sub"].views <= 4
    assert not cert.controller["add"].plan_failures
    assert {e.task for e in c.plan_buffer} == {"sub"} and len(c.plan_buffer) == len(wrong)
    drawn = c.plan_rows(random.Random(0), batch_size=8)
    assert len(drawn) == min(2, len(wrong)) and all(e in c.plan_buffer for e in drawn)
    assert drawn == c.plan_rows(random.Random(0), batch_size=8)        # seeded
    c.plan_buffer = []
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert c.plan_rows(rng_a, 8) == [] and rng_a.random() == rng_b.random()  # no draw


def test_an_every_view_check_checks_the_plans_first_and_replays_them_until_the_next():
    """--certify-all-views: the every-view check emits every view's plan first and checks
    the execute tables only when all plans are right (a wrong plan fails the certificate
    whatever they hold); its wrong plans are replayed until the next every-view check,
    through sampled checks that do not draw them, and resume with the run."""
    stage = STAGES[4]   # the stand-in emits add's program: every sub plan is wrong
    c = Certifier(stage, DEFAULT_ALPHABET, raw=False, views=2, patterns=0)
    rng = random.Random(2)
    sub = [TASKS["sub"].sample(rng, 2) for _ in range(6)]
    add = [TASKS["add"].sample(rng, 2) for _ in range(6)]
    oeu = type("M", (), {"oeu": SymbolicOEU(DEFAULT_ALPHABET)})()
    cert = c.check_oeu(oeu)
    c.check_controller(_Model(), cert, {"sub": sub, "add": add}, step=25, every=True)
    assert not cert.certified
    views = len({_Controller().cfg.view(e.prompt) for e in sub})
    assert len(cert.controller["sub"].plan_failures) == views
    assert cert.controller["add"].decisions == 0 and not cert.controller["add"].step_failures
    assert {e.task for e in c.every_buffer} == {"sub"} and len(c.every_buffer) == views
    # a sampled check of add alone (right plans) keeps them, and batches draw them
    cert = c.check_oeu(oeu)
    c.check_controller(_Model(), cert, {"add": add}, step=30)
    assert c.plan_buffer == [] and len(c.every_buffer) == views
    drawn = c.plan_rows(random.Random(0), batch_size=8)
    assert drawn and all(e.task == "sub" for e in drawn)
    again = Certifier(stage, DEFAULT_ALPHABET, raw=False, views=2, patterns=0)
    again.load_state(json.loads(json.dumps(c.state())))
    assert again.every_buffer == c.every_buffer
    # every plan right: the full check runs (the stand-in's flipped JNZ is found) and the
    # replayed plans are done
    cert = c.check_oeu(oeu)
    c.check_controller(_Model(), cert, {"add": add}, step=35, every=True)
    assert cert.controller["add"].decisions > 0 and cert.controller["add"].step_failures
    assert c.every_buffer == [] and c.plan_rows(random.Random(0), 8) == []


def test_a_check_below_the_bar_refreshes_the_plan_pools():
    """No certificate runs while the stage is below its competence bar, so the pools the
    last one filled would be replayed unchanged: at such a check the views whose plan is
    right now leave them, the still-wrong ones stay, and a fresh sample per task (drawn by
    the step) adds the views wrong now."""
    stage = STAGES[4]   # sub4: the stand-in emits add's program, so every sub plan is wrong
    c = Certifier(stage, DEFAULT_ALPHABET, raw=False, views=3, patterns=0)
    rng = random.Random(3)
    sub = [TASKS["sub"].sample(rng, 2) for _ in range(8)]
    add = [TASKS["add"].sample(rng, 2) for _ in range(8)]
    view = _Controller().cfg.view
    stale_sub = TASKS["sub"].sample(rng, 3)
    c.plan_buffer = [add[0]]                  # right now: leaves
    c.every_buffer = [add[1], stale_sub]      # add[1] leaves, the sub view is still wrong
    pooled = c.refresh_plans(_Model(), {"sub": sub, "add": add}, step=50)
    assert c.every_buffer == [stale_sub]
    assert all(e.task == "sub" for e in c.plan_buffer) and c.plan_buffer
    fresh = random.Random(f"refresh/{stage.index}/sub/50").sample(sub, 3)
    views = {view(e.prompt) for e in fresh} - {view(stale_sub.prompt)}
    assert {view(e.prompt) for e in c.plan_buffer} == views           # one per wrong view
    assert pooled == len(c.plan_buffer) + 1
    again = Certifier(stage, DEFAULT_ALPHABET, raw=False, views=3, patterns=0)
    again.every_buffer = [add[1], stale_sub]
    again.plan_buffer = [add[0]]
    again.refresh_plans(_Model(), {"sub": sub, "add": add}, step=50)
    assert again.plan_buffer == c.plan_buffer                          # seeded by the step
    # the pools come out in the order of the tasks of ``sets`` (never a set's hash order:
    # batches draw from them, and a resumed run must draw what the interrupted one would)
    cmp = [TASKS["cmp"].sample(rng, 2) for _ in range(8)]
    both = Certifier(STAGES[5], DEFAULT_ALPHABET, raw=False, views=3, patterns=0)
    for order in (("sub", "cmp"), ("cmp", "sub")):
        both.plan_buffer, both.every_buffer = [], []
        both.refresh_plans(_Model(), {t: {"sub": sub, "cmp": cmp}[t] for t in order}, step=5)
        tasks = [e.task for e in both.plan_buffer]
        assert tasks == sorted(tasks, key=order.index) and set(tasks) == set(order)
    # a stage whose plans are all right now (add2: the stand-in's program) empties them
    right = Certifier(STAGES[1], DEFAULT_ALPHABET, raw=False, views=3, patterns=0)
    right.plan_buffer, right.every_buffer = add[:2], add[2:4]
    assert right.refresh_plans(_Model(), {"add": add}, step=75) == 0
    assert right.plan_buffer == right.every_buffer == []


def test_the_buffers_resume_in_the_runs_alphabet():
    """The plan buffer and the failing rows go into a checkpoint as plain JSON without an
    alphabet per example (a default run's state is what it was); they come back in the
    certifier's alphabet, with their expert programs assembled in it."""
    stage = STAGES[6]
    c = Certifier(stage, PRINTABLE_ALPHABET, raw=False, views=4, patterns=0)
    rng = random.Random(0)
    c.plan_buffer = [TASKS["copy"].sample(rng, 6, "grammar_train", PRINTABLE_ALPHABET)
                     for _ in range(3)]
    c._buffer = [(e, expert_program(e), 1) for e in c.plan_buffer[:2]]
    state = json.loads(json.dumps(c.state()))
    assert all("alphabet" not in d for d in state["plan"])
    again = Certifier(stage, PRINTABLE_ALPHABET, raw=False, views=4, patterns=0)
    again.load_state(state)
    assert again.plan_buffer == c.plan_buffer
    assert [(e, p.alphabet, i) for e, p, i in again._buffer] == [
        (e, PRINTABLE_ALPHABET, 1) for e in c.plan_buffer[:2]]


def _scripted_stage0(monkeypatch, out, check_controller, **config):
    """Stage 0 trained with the controller certificate ``check_controller`` scripted, the
    OEU certificate always passing and every free-running check exact; checks every 2
    steps. Returns (the config, the stage's final state)."""
    from llamacpu.learn import certified as certified_mod
    from llamacpu.learn import evaluation
    from llamacpu.learn.trainer import TrainConfig, Trainer

    monkeypatch.setattr(certified_mod.Certifier, "check_controller", check_controller)
    monkeypatch.setattr(certified_mod.Certifier, "check_oeu", lambda self, model: (
        certified_mod.StageCertificate(SimpleNamespace(certified=True, failures=[],
                                                       outputs=0))))
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: 1.0)
    cfg = TrainConfig(stages=(0,), steps=40, eval_every=2, batch_size=4, seed=0, warmup=1,
                      retention_size=0, out=out, progress=False, answer_loss=False, **config)
    return cfg, Trainer(cfg, log=lambda _: None).run()[0]


def test_competent_but_uncertified_checks_anneal_the_learning_rate(tmp_path, monkeypatch):
    """Near convergence the peak rate moves earlier tasks' plans back and forth: each check
    that finds the stage competent but not certified multiplies the rate by ``anneal``
    (scripted: two uncertified checks, then a certified one), and the exponent is counted
    from the logged records, so a resumed run anneals as far as the interrupted one."""
    from llamacpu.learn.controller_tables import ControllerCertificate
    from llamacpu.learn.controller_tables import Decision as Wrong
    from llamacpu.learn.trainer import TrainConfig, _StageState, lr_at

    checks = []

    def scripted(self, model, cert, sets, step):  # noqa: ARG001
        checks.append(step)
        wrong = [Wrong("p", 2, "", (), "plan", "x", "y")] if len(checks) <= 2 else []
        cert.controller = {"add": ControllerCertificate(1, 1, 0, plan_failures=wrong)}
        return cert

    cfg, st = _scripted_stage0(monkeypatch, tmp_path, scripted, anneal=0.5)
    assert st.passed and st.step == 6 and checks == [2, 4, 6]
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    peak = cfg.lr or 3e-3
    for m in logged:  # steps 1-2 at the schedule, 3-4 at half of it, 5-6 at a quarter
        scale = 0.5 ** ((m["step"] - 1) // 2)
        assert m["lr"] == pytest.approx(lr_at(m["step"] - 1, 40, peak, 1) * scale)
    assert _StageState(metrics=logged).uncertified == 2
    with pytest.raises(ValueError, match="--anneal"):
        TrainConfig(anneal=0.0)


@pytest.mark.parametrize("every_view", [False, True])
def test_certify_all_views_passes_a_stage_only_when_every_view_is_certified(
        tmp_path, monkeypatch, every_view):
    """--certify-all-views: a check whose sampled views pass certifies every view of the
    trained tasks' training wordings (controller_tables.every_view) too, and the stage
    passes only when those pass (scripted: every view fails at the first check)."""
    from llamacpu.learn.controller_tables import ControllerCertificate
    from llamacpu.learn.controller_tables import Decision as Wrong
    from llamacpu.learn.controller_tables import every_view as enumerate_views
    from llamacpu.learn.trainer import Trainer

    calls = []

    def scripted(self, model, cert, sets, step, every=False):  # noqa: ARG001
        calls.append((step, every, {t: len(x) for t, x in sets.items()}))
        failed = every and len([c for c in calls if c[1]]) == 1
        wrong = [Wrong("p", 2, "", (), "plan", "x", "y")] if failed else []
        cert.controller = {"add": ControllerCertificate(1, 1, 0, plan_failures=wrong)}
        return cert

    cfg, st = _scripted_stage0(monkeypatch, tmp_path, scripted, certify_all=every_view)
    if not every_view:
        assert st.passed and st.step == 2 and [c[1] for c in calls] == [False]
        return
    assert st.passed and st.step == 4
    assert [(c[0], c[1]) for c in calls] == [(2, False), (2, True), (4, False), (4, True)]
    views = enumerate_views("add", Trainer(cfg)._new_model().cfg.controller.view, ("train",))
    assert calls[1][2] == {"add": len(views.examples)} and views.grid == len(views.examples)
    assert parse_args(["--stage", "0", "--certify-all-views"]).certify_all


def test_a_composed_tasks_check_covers_every_view_of_its_wordings_through_the_window():
    """The stage check of a composed task: every view of the wordings its prompts use, in
    the combinations training draws (a few wordings: enumerated), or one prompt per
    distinct view of its own prompts (a grammar's hundreds of wordings); other tasks and
    views without the window are sampled as before (None)."""
    import random

    from llamacpu.core.isa import DEFAULT_ALPHABET
    from llamacpu.learn.certified import WINDOWED_WORDINGS, Certifier
    from llamacpu.learn.compiling import held_out_combination
    from llamacpu.learn.controller_tables import every_view
    from llamacpu.learn.curriculum import STAGES
    from llamacpu.learn.tasks import TASKS
    from llamacpu.llm.view import PromptView

    cert = Certifier(STAGES[24], DEFAULT_ALPHABET, raw=False, views=32, patterns=0)
    view, t = PromptView(), TASKS["chain"]
    rng = random.Random(0)
    few = [t.sample(rng, 3, "train", ops=2) for _ in range(40)]
    got = cert._windowed_views("chain", view, few)
    wordings = sorted({e.template for e in few})
    assert {view(e.prompt) for e in got} == {view(e.prompt) for e in every_view(
        "chain", view, templates=wordings, combinations="trained").examples}
    assert len(got) > len(few) / 2 and not any(held_out_combination(e) for e in got)
    many = [t.sample(rng, 3, "grammar_train", ops=2) for _ in range(200)]
    assert len({e.template for e in many}) > WINDOWED_WORDINGS
    dedup = cert._windowed_views("chain", view, many)
    assert len(dedup) == len({view(e.prompt) for e in many}) and set(dedup) <= set(many)
    assert cert._windowed_views("add", view, few) is None
    assert cert._windowed_views("chain", PromptView(operands=0), few) is None


@pytest.mark.parametrize("wordings", ["templates", "grammar"])
def test_sampled_certificates_draw_training_wordings_only(wordings):
    """A sampled certificate's wrong plans are replayed in training, so it draws held-out
    problems of the training wordings only, for the stage's own task too: its competence
    set holds held-out wordings (stage 0's hand-written ones, a grammar run's recombined),
    and drawing from it trained some of them."""
    from llamacpu.learn.curriculum import competence_set
    from llamacpu.learn.trainer import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(stages=(0,), wordings=wordings, progress=False))
    split, symbols = trainer.cfg.split, trainer.cfg.symbols
    for index in (0, 4):
        stage = STAGES[index]
        sets = trainer._cert_sets(stage)
        assert set(sets) == {STAGES[i].task for i in range(index + 1)}
        for task, examples in sets.items():
            trained = set(TASKS[task].templates(split, symbols))
            assert examples and {e.template for e in examples} <= trained, task
        held = {e.template for e in competence_set(stage, seed=1, split=split,
                                                   alphabet=symbols)}
        if index == 0 or wordings == "grammar":  # what the certificate no longer draws
            assert held - set(TASKS[stage.task].templates(split, symbols))
