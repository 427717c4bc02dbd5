"""The controller's compile head (llamacpu/llm/compile_head.py) and the compile phase on a
learned machine: the head reads one bounded view, its gradients arrive, and a head trained
on the expert's decisions for prompts of 1-2 operations compiles fresh prompts of 8 to the
expert's main program; a machine whose plan is the compile marker runs the program the
compile phase built, linked to the library, and a compile phase that fails is reported,
not run."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.link import main_calls
from llamacpu.learn.compiling import (
    FINISH,
    HELD_OUT_COMBINATIONS,
    SKIP,
    View,
    certify_compile,
    compile_main,
    compile_marker,
    compile_views,
    expert_actions,
    held_out_combination,
    is_compile,
    is_composed,
    linked_program,
    neural_policy,
    plan_program,
)
from llamacpu.learn.curriculum import STAGES, parse_stage, sample_batch
from llamacpu.learn.evaluation import draw_examples
from llamacpu.learn.learned import LearnedMachine
from llamacpu.learn.solution import is_decline
from llamacpu.learn.tasks import TASKS, TaskError, expert_program
from llamacpu.llm.compile_head import ACTIONS, TOPS, compile_logits, compile_loss
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.controller import Controller


def _train_views():
    """Every view of the two tasks in their training wordings, with the expert's action."""
    table = {**compile_views("expr", TASKS["expr"].templates("train")),
             **compile_views("chain", TASKS["chain"].templates("train"))}
    return list(table), list(table.values())


@pytest.fixture(scope="module")
def trained():
    """A tiny controller whose compile head trained on every view of the composed tasks'
    training wordings (``compile_views``), until each is right (seeded; about 20 steps)."""
    torch.manual_seed(0)
    ctl = Controller(ControllerConfig())
    views, actions = _train_views()
    opt = torch.optim.Adam(ctl.parameters(), lr=3e-3)
    for _ in range(400):
        loss, m = compile_loss(ctl, views, actions)
        if m["compile_acc"] == 1.0 and m["compile_loss"] < 0.05:  # of these very weights
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["compile_acc"] == 1.0, m
    return ctl.eval()


def test_the_head_reads_one_view_and_its_gradients_reach_the_lm():
    torch.manual_seed(0)
    ctl = Controller(ControllerConfig())
    views = [View("add ", " and ", ""), View("", "#", "mul"), View("", "<end>", ""),
             View("", "calculate ", "", opening=True)]
    logits = compile_logits(ctl, views)
    assert logits.shape == (4, len(ACTIONS))
    # the opening flag is read: the same words before and after the first number differ
    later = compile_logits(ctl, [View("", "calculate ", "")])
    assert not torch.allclose(later[0], logits[3])
    # a view's logits do not depend on its batch-mates (left padding, masked)
    alone = compile_logits(ctl, views[1:2])
    assert torch.allclose(alone[0], logits[1], atol=1e-5)
    loss, m = compile_loss(ctl, views, [SKIP, SKIP, FINISH, SKIP])
    loss.backward()
    grads = {n: p.grad for n, p in ctl.named_parameters() if p.grad is not None}
    assert any(n.startswith("compile_head.") for n in grads)
    assert any(n.startswith("lm.") and g.abs().sum() > 0 for n, g in grads.items())
    assert not any(n.startswith("slot_head.") for n in grads)   # the plan heads: untouched
    assert 0.0 <= m["compile_acc"] <= 1.0 and m["compile_views"] == 4.0
    with pytest.raises(ValueError, match="top must be one of"):
        compile_logits(ctl, [View("", "#", "div")])
    assert set(TOPS) == {"", "add", "sub", "mul", "rsub", "("}


def test_the_certificate_of_a_trained_head_and_of_a_broken_one(trained):
    for task in ("expr", "chain"):
        cert = certify_compile(trained, task, TASKS[task].templates("train"))
        assert cert.certified and cert.views > 50, cert.describe()
    broken = copy.deepcopy(trained)
    with torch.no_grad():  # every view now says SKIP
        broken.compile_head.out.bias[ACTIONS.index("SKIP")] += 1e4
    cert = certify_compile(broken, "expr", TASKS["expr"].templates("train"))
    assert not cert.certified and all(got == "SKIP" != str(want) for _, got, want in cert.wrong)
    assert len(cert.wrong) == sum(str(a) != "SKIP" for a in
                                  compile_views("expr", TASKS["expr"].templates("train"))
                                  .values())
    assert "views wrong" in cert.describe()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32), ops=st.sampled_from((4, 8)), parens=st.booleans())
def test_a_certified_head_compiles_any_number_of_operations(trained, seed, ops, parens):
    """Fresh prompts of 4 and 8 operations, parentheses nested or not, at up to 100
    digits, compile to the expert's main program: the certificate covers every view."""
    rng = random.Random(seed)
    task = rng.choice(("expr", "chain"))
    sizes = {"ops": ops, **({"parens": parens} if task == "expr" else {})}
    ex = TASKS[task].sample(rng, rng.randint(1, 100), **sizes)
    policy = neural_policy(trained, _MEMO.setdefault(id(trained), {}))  # one memo per head
    assert compile_main(ex.prompt, policy) == main_calls(expert_program(ex))


_MEMO: dict[int, dict] = {}


def test_the_plan_of_a_composed_task_is_the_compile_marker():
    rng = random.Random(1)
    expr = TASKS["expr"].sample(rng, 3, ops=2)  # two operations: no other task's prompt
    add = TASKS["add"].sample(rng, 3)
    assert is_composed("expr") and is_composed("chain") and not is_composed("add")
    assert is_compile(plan_program(expr)) and not is_compile(plan_program(add))
    assert plan_program(add).slots == expert_program(add).slots
    marker = compile_marker()
    assert not is_decline(marker) and len(marker.slots) - 2 == 2
    assert linked_program(main_calls(expert_program(expr))).slots == expert_program(expr).slots


def test_a_machine_runs_the_program_its_compile_phase_built(trained, monkeypatch):
    """``build`` turns the compile marker into the linked program the head compiles (the
    expert's, for this trained head); a plan that is not the marker is left alone; and a
    compile phase whose decision the loop cannot take is a solution with that fault."""
    torch.manual_seed(0)
    model = LearnedMachine()
    model.controller.load_state_dict(trained.state_dict())
    rng = random.Random(3)
    exs = [TASKS["expr"].sample(rng, 4, ops=3), TASKS["chain"].sample(rng, 4, ops=3)]
    add = TASKS["add"].sample(rng, 2)
    plans = [compile_marker(), compile_marker(), expert_program(add)]
    programs, failed = model.build([exs[0].prompt, exs[1].prompt, add.prompt], plans)
    assert not failed
    assert [p.slots for p in programs] == [expert_program(e).slots for e in (*exs, add)]

    monkeypatch.setattr(model.controller, "emit", lambda prompts, *a, **k: [compile_marker()
                                                                          for _ in prompts])
    sols = model.solve([exs[0].prompt], max_steps=50)
    assert sols[0].program.slots == expert_program(exs[0]).slots   # the built program ran

    import llamacpu.learn.compiling as compiling

    monkeypatch.setattr(compiling, "neural_policy", lambda ctl, memo=None: lambda view: SKIP)
    (sol,) = model.solve([exs[0].prompt], max_steps=50)
    assert sol.fault.startswith("the compile phase failed") and sol.output == ""
    assert is_compile(sol.program)


def test_training_never_holds_a_held_out_combination_and_eval_draws_them_apart():
    """Stages expr4 and chain4 never train on their task's held-out combination
    (``HELD_OUT_COMBINATIONS``); ``draw_examples(combinations=...)`` draws problems that
    hold it, or only ones that do not, and refuses a task without one."""
    for name in ("expr4", "chain4"):
        stage = STAGES[parse_stage(name)]
        rng = random.Random(name)
        batch = [e for _ in range(15) for e in sample_batch(stage, rng, 32, review=0.0)]
        assert not any(held_out_combination(e) for e in batch)
        assert stage.task in HELD_OUT_COMBINATIONS
        held = draw_examples(stage.task, 4, 10, 0, ops=4, combinations="held_out")
        seen = draw_examples(stage.task, 4, 10, 0, ops=4, combinations="trained")
        assert all(map(held_out_combination, held)) and not any(map(held_out_combination, seen))
    # a product followed by a subtraction is expr's; a mul step then an rsub step is chain's
    expr = TASKS["expr"].make(("2 * 3 - 4",), "calculate {expr}")
    assert held_out_combination(expr)
    assert not held_out_combination(TASKS["expr"].make(("2 - 3 * 1",), "calculate {expr}"))
    assert not held_out_combination(TASKS["add"].sample(random.Random(0), 2))
    with pytest.raises(TaskError, match="holds no combination out"):
        draw_examples("add", 2, 3, 0, combinations="held_out")


def test_the_stage_certificate_leaves_out_the_held_out_combinations_views():
    """What the stage rule certifies (and feeds back to training when wrong) is every view
    of prompts without the held-out combination: the views only the combination shows
    (its decision at a (token, top) pair training never has) stay out of training."""
    for task in ("expr", "chain"):
        templates = TASKS[task].templates("train")
        every = compile_views(task, templates)
        trained = compile_views(task, templates, combinations="trained")
        only = set(every) - set(trained)
        assert only and set(trained) < set(every)
        assert all(v.top == "mul" and str(every[v]) == "POP" for v in only)
    with pytest.raises(ValueError, match="combinations"):
        compile_views("expr", templates, combinations="held_out")


def test_the_compile_command_prints_a_composed_prompts_decisions_and_main_program(
        two_step_run, monkeypatch, capsys):
    """``python -m llamacpu.compile`` on a composed prompt whose plan is the compile marker:
    every view and its action, then the main program the decisions built (here the
    expert's, patched in as the policy), which assembles and links back to the expert
    program; a compile phase that fails says "cannot compile" and exits 1."""
    import llamacpu.learn.compiling as compiling
    from llamacpu.compile import main as compile_cli
    from llamacpu.core.link import link
    from llamacpu.llm.controller import Controller as Ctl

    ex = TASKS["expr"].make(("(12 + 345) * 6",), "calculate {expr}")
    monkeypatch.setattr(Ctl, "emit_scored", lambda self, prompts, *a, **k: (
        [compile_marker() for _ in prompts], torch.ones(len(prompts))))
    table = {d.view: d.action for d in expert_actions(ex)}
    monkeypatch.setattr(compiling, "neural_policy", lambda ctl, memo=None: table.__getitem__)
    ck = two_step_run / "stage_0"
    assert compile_cli(["--checkpoint", str(ck), ex.prompt]) == 0
    out = capsys.readouterr().out
    assert "the plan is the compile marker" in out and "->  PUSH mul" in out
    main = "".join(line + "\n" for line in out.splitlines()
                   if line and not line.startswith(";"))
    assert link(main).slots == expert_program(ex).slots
    monkeypatch.setattr(compiling, "neural_policy", lambda ctl, memo=None: lambda v: SKIP)
    assert compile_cli(["--checkpoint", str(ck), ex.prompt]) == 1
    assert "cannot compile: the compile phase failed" in capsys.readouterr().out


def test_a_composed_prompt_another_task_recalls_is_planned_as_that_tasks():
    """"calculate 12 + 35" is an expr prompt and an add prompt: its plan is add's program
    (one prompt, one plan), it runs add's program, and training supervises it so."""
    from llamacpu.learn.compiling import recalled_by, run_program

    ex = TASKS["expr"].make(("12 + 35",), "calculate {expr}")
    add = TASKS["add"].make(("12", "35"), "calculate {a} + {b}")
    assert ex.prompt == add.prompt and recalled_by(ex) == "add"
    assert plan_program(ex).slots == run_program(ex).slots == expert_program(add).slots
    chain = TASKS["chain"].make(("12", "mul", "3"), TASKS["chain"].train_templates[0])
    two = TASKS["expr"].make(("12 + 35 * 2",), "calculate {expr}")
    assert recalled_by(two) is None and is_compile(plan_program(two))
    assert recalled_by(add) is None  # only a composed example is recalled by another task
    assert recalled_by(chain) in (None, "mul")
    # training supervises it as add's: add's run, add's plan, no compile decisions
    from llamacpu.learn.supervise import _supervise

    sup = _supervise([ex, two], 16, [1, 2])
    assert [p.slots for p in sup.programs] == [expert_program(add).slots,
                                               expert_program(two).slots]
    assert [p.slots for p in sup.plans] == [expert_program(add).slots, compile_marker().slots]
    assert sup.compile[0] and all(v in {d.view for d in expert_actions(two)}
                                  for v in sup.compile[0])
    rng = random.Random(5)
    batch = sample_batch(STAGES[parse_stage("expr4")], rng, 64, review=0.0)
    assert any(recalled_by(e) for e in batch)  # both sides of the line are trained
