"""The curriculum trainer end to end: it learns stage 0 and is judged running free.

Slow by the suite's standards (about half a minute per training run), so it trains once per
module and the tests share the result.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llamacpu.core.golden import load_program
from llamacpu.learn.checkpoint import load_checkpoint
from llamacpu.learn.curriculum import STAGES, competence_set, eval_set
from llamacpu.learn.evaluation import load_learned
from llamacpu.learn.tasks import TASKS, default_out_size
from llamacpu.learn.trainer import TrainConfig, Trainer
from llamacpu.train import parse_args

ROOT = Path(__file__).resolve().parents[1]


def _fresh_problems(n: int) -> list:
    """200 one-digit additions neither training nor the trainer's competence check ever
    showed: prompts of the held-out wordings outside the competence set (the train-split
    held-out prompts are all in it: stage 0 has only 67)."""
    stage = STAGES[0]
    checked = {e.prompt for e in competence_set(stage, seed=0 + 1)}  # TrainConfig seed 0
    out = [e for e in eval_set(stage, seed=7, size=1000, split="heldout")
           if e.prompt not in checked]
    return out[:n]


def test_stage0_is_learned_and_runs_free_on_fresh_problems(stage0):
    out, trainer, st = stage0
    assert st.passed, "stage 0 did not reach competence"
    model = load_learned(out / "stage_0")  # what a user gets: the checkpoint, no trainer
    problems = _fresh_problems(200)
    assert len(problems) == 200
    sols = model.solve([e.prompt for e in problems], max_steps=STAGES[0].max_steps,
                       out_sizes=[default_out_size(e) for e in problems])
    for s in sols:  # the machine ran the controller's own program, not the expert's
        assert s.program.name != load_program("add").name
    acc = sum(s.output == e.answer and s.fault is None for s, e in zip(sols, problems)) / 200
    assert acc >= 0.99, acc


def test_the_answer_does_not_come_from_the_expert(stage0):
    """Corrupting the learned OEU's output layer breaks the answers: they are computed."""
    out, _, _ = stage0
    model = load_learned(out / "stage_0")
    problems = _fresh_problems(40)
    with torch.no_grad():
        model.oeu.head.weight.mul_(-1)
    sols = model.solve([e.prompt for e in problems], max_steps=STAGES[0].max_steps,
                       out_sizes=[default_out_size(e) for e in problems])
    acc = sum(s.output == e.answer for s, e in zip(sols, problems)) / len(problems)
    assert acc < 0.5


def test_checkpoint_and_logs_are_written(stage0):
    out, _, st = stage0
    c = load_checkpoint(out / "stage_0")
    assert c.passed and c.stage == 0 and c.step == st.step
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["accuracy"] >= 0.99 and (out / "stage_0.png").stat().st_size > 1000


def test_stage0_passes_certified_and_adds_exactly_at_20_digits(stage0):
    """Certified competence: the stage passed with its tables certified (logged), the OEU
    of the checkpoint is certified over add's whole program domain, so the machine trained
    on 1-digit additions runs free exactly on fresh 20-digit ones."""
    from llamacpu.learn.certify import certify_oeu, tasks_domain
    from llamacpu.learn.evaluation import draw_examples, exact, solve_examples

    out, _, st = stage0
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["certified"] == 1.0 and last["cert_oeu_failures"] == 0
    assert last["cert_step_failures"] == last["cert_plan_failures"] == 0
    # the bounded view reads 1-digit additions as one view per wording: the certificate
    # checked every wording it drew, each once
    add = TASKS["add"]
    assert 4 <= last["cert_views"] <= len(add.train_templates) + len(add.heldout_templates)
    assert last["cert_decisions"] > 1_000
    model = load_learned(out / "stage_0")
    alphabet = model.cfg.oeu.alphabet
    cert = certify_oeu(model.oeu, alphabet, tasks_domain(["add"], alphabet))
    assert cert.certified, cert.summary(alphabet)
    problems = draw_examples("add", 20, 20, seed=11)
    wrong = [e.prompt for e, s in solve_examples(model, problems) if not exact(e, s)]
    assert not wrong, wrong


def test_compiled_execution_answers_exactly_what_the_neural_run_answers(stage0):
    """solve(..., compiled=True) runs certified prompts on the tables they were proven equal
    to and the rest on the neural machine: the answers (output, steps, halt, fault, program)
    are identical, prompt for prompt, on fresh problems of many lengths and typed prompts."""
    import random

    from llamacpu.learn.tasks import TASKS

    out, _, _ = stage0
    model = load_learned(out / "stage_0")
    rng = random.Random(12)
    prompts = [TASKS["add"].sample(rng, n, split).prompt
               for n in (1, 2, 4, 9, 25) for split in ("train", "heldout")]
    prompts += ["add: 12 and 35", "12+35=?", "what is 7 plus 8", ""]
    compiled = model.solve(prompts, compiled=True)
    assert compiled == model.solve(prompts)
    assert model._compiled.stats.compiled >= len(prompts) // 2, model._compiled.stats


def test_solve_declines_to_run_a_plan_below_its_threshold(stage0):
    """abstain_below: a plan whose confidence is below the threshold is not run (its
    Solution says "cannot compile"); the others run exactly as without a threshold."""
    from llamacpu.learn.solution import CANNOT_COMPILE

    out, _, _ = stage0
    model = load_learned(out / "stage_0")
    problems = _fresh_problems(12)
    prompts = [e.prompt for e in problems] + ["hello there", "q"]
    budget = 200  # the additions take up to 121 steps, the other two 800 and more
    plain = model.solve(prompts, max_steps=budget)
    _, conf = model.controller.emit_scored(prompts)
    cut = float(conf.sort().values[len(prompts) // 2])
    sols = model.solve(prompts, abstain_below=cut, max_steps=budget)
    for s, p, c in zip(sols, plain, conf.tolist()):
        assert s.confidence == pytest.approx(c)
        if c < cut:
            assert s.abstained and s.fault == CANNOT_COMPILE and s.output == "" and s.steps == 0
            assert repr(s) == f"Solution(cannot compile, confidence={c:.2f})"
        else:
            assert not s.abstained and s._replace(confidence=None) == p
    assert sum(s.abstained for s in sols) == sum(c < cut for c in conf.tolist()) > 0
    assert model.solve(prompts, abstain_below=0.0, max_steps=budget) == [
        p._replace(confidence=c) for p, c in zip(plain, conf.tolist())]
    assert model.solve(prompts, abstain_below=0.0, compiled=True, max_steps=budget) == [
        p._replace(confidence=c) for p, c in zip(plain, conf.tolist())]


def test_a_plan_that_is_the_decline_program_is_cannot_compile(stage0, monkeypatch):
    """The decline program (what a controller emits for a request it has no program for)
    is not an empty answer but "cannot compile", and it is the right answer exactly for
    the tasks that decline."""
    from llamacpu.learn.evaluation import exact
    from llamacpu.learn.solution import is_decline

    out, _, _ = stage0
    model = load_learned(out / "stage_0")
    decline = load_program("decline")
    assert is_decline(decline) and not is_decline(load_program("add"))
    prompts = ["divide 12 by 4", "12+35"]
    real = model.controller.emit(prompts)
    monkeypatch.setattr(model.controller, "emit", lambda ps: [decline, real[1]])
    first, second = model.solve(prompts)
    assert first.abstained and first.output == "" and repr(first) == "Solution(cannot compile)"
    assert second.output == "47" and not second.abstained
    assert first.program.slots == decline.slots  # the plan is kept, for inspection
    foreign = TASKS["foreign_numbers"].make(("12", "4"), "divide {a} by {b}")
    add = TASKS["add"].make(("12", "35"))
    assert exact(foreign, first) and not exact(foreign, second)
    assert exact(add, second) and not exact(add, first)


def test_rerun_resumes_instead_of_starting_over(stage0):
    out, _, st = stage0
    trainer = Trainer(TrainConfig(stages=(0,), steps=400, out=out, progress=False),
                      log=lambda s: None)
    done = trainer.run()
    assert done[0].passed and done[0].step == st.step  # nothing retrained


@pytest.mark.parametrize("argv, message", [
    (["--stage", "42"], "out of range"),
    (["--stages", "3-1"], "runs backwards"),
    (["--stage", "0", "--batch-size", "0"], "--batch-size"),
    (["--stage", "0", "--device", "tpu"], "--device"),
    (["--stage", "0", "--model", "gpt9"], "--model"),
    (["--stage", "0", "--digit-window", "-1"], "--digit-window"),
    (["--stage", "0", "--ema", "1"], "--ema must be in [0, 1)"),
    (["--stage", "0", "--alphabet", "klingon"],
     "--alphabet must be one of default, printable, got 'klingon'"),
])
def test_bad_cli_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_digit_window_flag_reaches_the_controller():
    assert parse_args(["--stage", "0"]).model_config().controller.digit_window == 3
    cfg = parse_args(["--stage", "0", "--digit-window", "0"]).model_config()
    assert cfg.controller.digit_window == 0


def test_a_printable_run_trains_and_its_machine_reads_what_people_type(two_step_run, tmp_path):
    """--alphabet printable: a run of a few steps trains, its checkpoint records the
    alphabet and loads with V = 96, and its machine runs a capitalised, punctuated prompt
    (right or not: two steps teach nothing). A default machine names the capital it cannot
    read and where it is; resuming a run in another alphabet is refused in one line."""
    from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, InputError
    from llamacpu.learn.checkpoint import CheckpointError
    from llamacpu.learn.learned import Solution

    flags = parse_args(["--stage", "0", "--alphabet", "printable"]).model_config()
    assert flags.controller.alphabet == flags.oeu.alphabet == PRINTABLE_ALPHABET
    assert parse_args(["--stage", "0"]).alphabet == "default"
    threads = torch.get_num_threads()
    cfg = TrainConfig(stages=(0,), steps=2, eval_size=8, retention_size=0, threads=1,
                      seed=0, out=tmp_path, progress=False, alphabet="printable")
    try:
        Trainer(cfg, log=lambda s: None).run()
        c = load_checkpoint(tmp_path / "stage_0")
        assert c.config["train"]["alphabet"] == "printable" and c.step == 2
        machine = load_learned(tmp_path / "stage_0")
        assert machine.alphabet == PRINTABLE_ALPHABET and machine.alphabet.size == 96
        assert machine.controller.cfg.alphabet.size == machine.oeu.cfg.alphabet.size == 96
        (got,) = machine.solve(["Add 1 and 3."])
        assert isinstance(got, Solution)
        with pytest.raises(CheckpointError, match="trained in the printable alphabet "
                                                  r"\(V = 96\), not --alphabet default"):
            Trainer(TrainConfig(stages=(0,), steps=3, eval_size=8, threads=1, out=tmp_path,
                                progress=False), log=lambda s: None).run()
    finally:
        torch.set_num_threads(threads)
    default = load_learned(two_step_run / "stage_0")
    assert default.alphabet == DEFAULT_ALPHABET
    with pytest.raises(InputError) as e:
        default.solve(["what is 1234567 plus 3?", "Add 1 and 3."])
    message = str(e.value)
    assert "prompt 1 'Add 1 and 3.'" in message and "position 0" in message
    assert "'A'" in message and "--alphabet printable" in message


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "llamacpu.train", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, **kw)


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(stage0, tmp_path):
    out, _, _ = stage0
    bad = tmp_path / "ck"
    (bad / "stage_0").mkdir(parents=True)
    for f in (out / "stage_0").iterdir():
        (bad / "stage_0" / f.name).write_bytes(f.read_bytes())
    weights = bad / "stage_0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = _cli(["--stage", "0", "--out", str(bad), "--no-progress"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model.safetensors" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert weights.read_bytes() == bytes(data)  # left as it was, not replaced


def test_ctrl_c_saves_exits_130_and_the_rerun_resumes(tmp_path):
    """The command line's side of an interruption: Ctrl-C saves and exits 130, a rerun says
    where it resumes. (Resuming bit for bit after SIGKILL or SIGINT at random moments is
    tests/test_resume.py; kill -9 while saving, tests/test_checkpoint.py.)"""
    sig = signal.SIGINT
    out = tmp_path / "ck"
    args = ["--stage", "0", "--out", str(out), "--no-progress", "--ckpt-every", "5",
            "--eval-every", "1000", "--steps", "400"]
    p = subprocess.Popen([sys.executable, "-m", "llamacpu.train", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "stage_0" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # mid-stage, maybe mid-save
    os.kill(p.pid, sig)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130 and "saved" in stdout and "Traceback" not in stderr
    step_before = load_checkpoint(out / "stage_0").step  # loads: no file is corrupt
    assert step_before >= 5
    r = _cli([*args[:-2], "--steps", str(step_before + 3)])
    assert r.returncode in (0, 1), r.stderr
    assert f"resuming at step {step_before}" in r.stdout
    # the schedule spans --steps, so this resume moves the rate, and says so
    assert f"--steps 400 -> {step_before + 3}" in r.stdout, r.stdout[-2000:]
    assert load_checkpoint(out / "stage_0").step == step_before + 3


def test_a_resume_that_changes_the_schedule_says_how_the_rate_moves():
    from llamacpu.learn.trainer import TrainConfig, _schedule_change, lr_at

    cfg = TrainConfig(stages=[0], steps=3000, lr=3e-3)
    trained = {"steps": 1500, "lr": 3e-3, "warmup": cfg.warmup}
    note = _schedule_change(trained, cfg, 1276)
    assert "--steps 1500 -> 3000" in note and "--lr" not in note
    assert f"{lr_at(1276, 1500, 3e-3, cfg.warmup):.3g} to {lr_at(1276, 3000, 3e-3, cfg.warmup):.3g}" in note
    assert _schedule_change({**trained, "steps": 3000}, cfg, 1276) == ""
    assert "--lr 0.001 -> 0.003" in _schedule_change({**trained, "lr": 1e-3}, cfg, 10)
    assert _schedule_change({}, cfg, 10) == ""  # a record without them: nothing to compare


def test_review_examples_get_their_own_stages_step_budget():
    """copy8 allows 150 machine steps; a 4-digit add with filler words, reviewed in its
    batch, needs more. The expert run that supervises it must not hit copy8's limit (it once crashed stage 6)."""

    from llamacpu.learn.supervise import _supervise
    from llamacpu.learn.tasks import Example

    copy8 = next(s for s in STAGES if s.name == "copy8")
    add4 = next(s for s in STAGES if s.name == "add4")
    assert add4.max_steps > copy8.max_steps
    prompt = "please add 9999 and 9999 together, and tell me the sum now"  # filler words
    ex = Example("add", prompt, "19998", "add", ("9999", "9999"), 4)
    sup = _supervise([ex], 24, [0])
    assert sup.steps[0] > copy8.max_steps


def test_answer_loss_keeps_each_rows_input_when_programs_differ_in_length(monkeypatch):
    """The soft plan fills slots 2..len(program)-1 of each row; a shorter program's input
    starts right after it, below the batch's longest program, and must reach the machine
    unchanged (it was once overwritten by the soft plan's padding)."""
    from llamacpu.learn.learned import LearnedMachine
    from llamacpu.machine.machine import Machine

    torch.manual_seed(0)
    model = LearnedMachine()
    progs = [load_program("max"), load_program("add")]          # 13 and 38 slots
    prompts = ["max of 3 9 4", "12+34"]
    seen = {}
    run = Machine.run

    def spy(self, state, steps, hard=False):
        seen["memory"] = state.memory.detach().clone()
        return run(self, state, 1, hard)

    monkeypatch.setattr(Machine, "run", spy)
    model.answer_loss(prompts, ["9", "46"], progs, steps=1)
    loaded = model.machine(prompts).load_batch(progs, prompts)
    for r, p in enumerate(progs):
        n = len(p.slots)
        assert torch.equal(seen["memory"][r, n:], loaded.memory[r, n:]), f"row {r}"
        assert torch.equal(seen["memory"][r, :2], loaded.memory[r, :2])

# ------------------------------------------------------------------ property checks (issue 6)
# check_learned, the check CLI and the pytest plugin on the machine trained above.

pytest_plugins = ["pytester"]


def test_check_learned_runs_the_trained_machine_free(stage0):
    from llamacpu.evaluate.properties import check_learned

    out, _, _ = stage0
    model = load_learned(out / "stage_0")
    report = check_learned(model, "add", max_length=1, examples=120, seed=0)
    assert report.n >= 100 and report.passed >= 0.97 * report.n, report.describe()
    with torch.no_grad():  # a broken learned OEU: caught, shrunk, traced
        model.oeu.head.weight.mul_(-1)
    bad = check_learned(model, "add", max_length=1, examples=60, seed=0, shrink_seconds=15)
    assert bad.passed < 0.5 * bad.n
    c = bad.counterexample
    assert c is not None and c.example.length == 1 and c.got != c.example.answer
    assert c.divergence is not None  # where the learned run departs (a carry, a result, ...)


def test_check_cli_exit_status_follows_the_counterexample(stage0, tmp_path, capsys):
    from llamacpu import check
    from llamacpu.learn.checkpoint import save_checkpoint

    out, _, _ = stage0
    code = check.main(["--checkpoint", str(out / "stage_0"), "--task", "add",
                       "--examples", "100"])
    text = capsys.readouterr().out
    assert code in (0, 1) and "| 1 |" in text
    assert ("counterexample" in text) == (code == 1)
    c = load_checkpoint(out / "stage_0")
    state = dict(c.model_state)
    state["model.oeu.head.weight"] = -state["model.oeu.head.weight"]
    save_checkpoint(tmp_path / "stage_0", model_state=state, config=c.config, stage=0,
                    step=c.step, metrics=c.metrics, passed=c.passed)
    code = check.main(["--checkpoint", str(tmp_path / "stage_0"), "--task", "add",
                       "--examples", "50"])
    text = capsys.readouterr().out
    assert code == 1 and "counterexample (add, length 1)" in text and "step" in text


def test_pytest_plugin_gives_users_their_checkpoint(stage0, pytester):
    from importlib.metadata import entry_points

    out, _, _ = stage0
    pytester.makepyfile("""
        from llamacpu.evaluate.properties import check_learned, learned_check

        def test_my_adder(learned_machine):
            report = check_learned(learned_machine, "add", examples=30)
            assert report.passed >= 0.9 * report.n, report.describe()

        def test_stage(learned_checkpoint):
            assert learned_checkpoint.stage == 0

        @learned_check("add", examples=30)
        def test_decorated(learned_machine):
            assert learned_machine.cfg.controller.hidden_size == 64
    """)
    installed = any(e.value == "llamacpu.evaluate.pytest_plugin" for e in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "llamacpu.evaluate.pytest_plugin"]
    r = pytester.runpytest_inprocess(*plugin, "--llamacpu-checkpoint", str(out / "stage_0"))
    outcomes = r.parseoutcomes()
    assert outcomes.get("passed", 0) >= 2 and "error" not in outcomes, outcomes
    if outcomes.get("failed"):  # only the decorated test may fail, and then with the report
        r.stdout.fnmatch_lines(["*test_decorated*", "*counterexample (add, length 1)*"])
    r = pytester.runpytest_inprocess(*plugin, "-rs")
    r.assert_outcomes(skipped=3)
    r.stdout.fnmatch_lines(["*no checkpoint: pass --llamacpu-checkpoint DIR*"])


def test_retention_covers_every_earlier_task_at_its_widest_stage():
    from llamacpu.learn.curriculum import last_stages

    by = {s.name: s for s in STAGES}
    assert [s.name for s in last_stages(by["mul3"])] == [
        "add4", "sub4", "cmp4", "copy8", "reverse8", "max8", "sort6"]
    assert [s.name for s in last_stages(by["sub4"])] == ["add4"]
    assert last_stages(by["add3"]) == []  # its own task is the stage's own check


def test_a_passed_stage_logs_what_it_retained_of_earlier_tasks(stage0, tmp_path):
    """After stage 4 (sub) passes, the trainer measures every earlier task (here: addition)
    on fresh held-out prompts, logs it and appends it to metrics.jsonl. Measured on the
    trained stage-0 adder, it must agree with evaluating those prompts directly."""
    from llamacpu.learn import distributed
    from llamacpu.learn.evaluation import evaluate
    from llamacpu.learn.trainer import _StageState

    out, trainer0, _ = stage0
    model = trainer0.model
    lines: list[str] = []
    cfg = TrainConfig(stages=(4,), retention_size=8, seed=0, out=tmp_path, progress=False)
    trainer = Trainer(cfg, log=lines.append, dist=distributed.from_env("cpu"))
    trainer._report_retention(STAGES[4], model, _StageState(step=7, passed=True))
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [{"stage": 4, "step": 7, "retained": logged[0]["retained"]}]
    got = logged[0]["retained"]
    assert set(got) == {"add"}
    add4 = STAGES[3]
    direct = evaluate(model, eval_set(add4, seed=cfg.seed + 3, size=8), add4.max_steps)
    assert got["add"] == direct
    assert lines == [f"stage 4 (sub4): retained add {direct:.2f}"]


def test_a_competent_stage_that_forgot_an_earlier_task_consolidates(tmp_path, monkeypatch):
    """The stage rule looks back. Stage 4 (sub) is competent from its first check, but
    addition is measured at 0.25 on its held-out prompts: the stage stays open and the next
    batches review earlier stages at 50%, weighted towards addition; once addition is back
    above the floor, it advances. The measurements are scripted (``evaluate`` stubbed) so
    the test is about the rule and the batches it makes, not about learning."""
    from llamacpu.learn import evaluation
    from llamacpu.learn import trainer as train_mod
    from llamacpu.learn.curriculum import sample_batch as real_sample_batch

    add4 = STAGES[3]
    add_prompts = {e.prompt for e in eval_set(add4, seed=0 + 2, size=6)}  # cfg.seed + 2
    evals: list[str] = []

    def fake_evaluate(model, examples, max_steps, batch=256, dist=None):
        if {e.prompt for e in examples} == add_prompts:  # the rule's retention set for add
            evals.append("add")
            return 0.25 if evals.count("add") == 1 else 0.95
        evals.append("own")
        return 1.0

    batches: list[tuple] = []

    def spy_sample_batch(stage, rng, batch_size, stages=STAGES, *, review=None, weights=None,
                         **draw):  # split, alphabet
        batch = real_sample_batch(stage, rng, batch_size, stages, review=review,
                                  weights=weights, **draw)
        batches.append((review, weights, batch))
        return batch

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)        # the look-back
    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)       # the stage's own check
    monkeypatch.setattr(train_mod, "sample_batch", spy_sample_batch)
    lines: list[str] = []
    cfg = TrainConfig(stages=(4,), steps=20, eval_every=2, batch_size=16, seed=0,
                      retention_size=6, out=tmp_path, progress=False, answer_loss=False,
                      certify=False)  # the sampled rule alone
    done = Trainer(cfg, log=lines.append).run()
    st = done[4]
    assert st.passed and st.step == 4, (st.step, lines)
    assert evals[:4] == ["own", "add", "own", "add"]
    assert any("competent at step 2, but add 0.25 below the retention floor 0.9: "
               "consolidating" in x for x in lines), lines
    assert len(batches) == 4
    for review, weights, _ in batches[:2]:  # steps 1-2, before the look-back: own mix
        assert (review, weights) == (None, None)
    for review, weights, batch in batches[2:]:  # consolidating: half the batch, weighted to add
        assert review == 0.5 and weights == {"add": 1 + 9 * 0.75}
        assert sum(e.task != "sub" for e in batch) == 8
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["retained/add"] for m in logged if "retained/add" in m] == [0.25, 0.95]


def test_retention_floor_zero_only_measures(tmp_path, monkeypatch):
    """--retention 0: the stage advances on its own check, however much it forgot."""
    from llamacpu.learn import evaluation
    from llamacpu.learn import trainer as train_mod

    def fake(m, ex, *a, **k):
        return 1.0 if len(ex) > 6 else 0.0

    monkeypatch.setattr(train_mod, "evaluate", fake)   # the look-back
    monkeypatch.setattr(evaluation, "evaluate", fake)  # the stage's own check
    cfg = TrainConfig(stages=(4,), steps=20, eval_every=2, batch_size=8, seed=2,
                      retention=0.0, retention_size=6, out=tmp_path, progress=False,
                      answer_loss=False, certify=False)
    lines: list[str] = []
    st = Trainer(cfg, log=lines.append).run()[4]
    assert st.passed and st.step == 2
    assert any("retained add 0.00" in x for x in lines)  # measured after, not acted on
    assert not any("consolidating" in x for x in lines)
    with pytest.raises(SystemExit):
        parse_args(["--stage", "4", "--retention", "1.5"])


class _Solver:
    """A stand-in machine that answers right except on the prompts in ``wrong``, and counts
    how many prompts it was asked."""

    def __init__(self, wrong: set[str]) -> None:
        self.wrong, self.asked = wrong, 0

    def solve(self, prompts, max_steps, out_sizes=None):  # noqa: ARG002
        from llamacpu.learn.learned import Solution

        self.asked += len(prompts)
        return [Solution("x" if p in self.wrong else self.answers[p], 1, True, None, None)
                for p in prompts]


def test_screened_check_stops_only_when_the_full_set_cannot_pass():
    from llamacpu.learn.curriculum import STAGES, eval_set
    from llamacpu.learn.evaluation import evaluate, screened_evaluate

    held = eval_set(STAGES[0], seed=1, size=STAGES[0].eval_size)
    n, competence = len(held), STAGES[0].competence
    cases = {"all right": set(), "miss in screen": {held[3].prompt},
             "miss after screen": {held[40].prompt}}
    for name, wrong in cases.items():
        solver = _Solver(wrong)
        solver.answers = {e.prompt: e.answer for e in held}
        full = evaluate(solver, held, 10)
        solver.asked = 0
        check = screened_evaluate(solver, held, 10, 16, competence)
        stopped = name == "miss in screen"
        assert solver.asked == (16 if stopped else n), name
        assert (check.solved, check.total) == ((16 if stopped else n), n)
        # the pass decision is the full set's: stopping happens only when it fails anyway
        assert (check.best >= competence) == (full >= competence), name
        if not stopped:
            assert check.accuracy == full
    solver = _Solver(set())
    solver.answers = {e.prompt: e.answer for e in held}
    assert screened_evaluate(solver, held, 10, 0, competence).solved == n  # 0: no screen


def test_the_compile_command_prints_the_emitted_program_and_runs_it(stage0, capsys):
    """python -m llamacpu.compile: the program it prints assembles back to exactly the one
    the controller emitted; --run answers as solve does; a character outside the alphabet
    is one error line naming it and its position (exit 2)."""
    from llamacpu.compile import main as compile_main
    from llamacpu.core.asm import assemble

    out, _, _ = stage0
    ck = out / "stage_0"
    model = load_learned(ck)
    prompt = "what is 7 plus 8?"
    assert compile_main(["--checkpoint", str(ck), prompt]) == 0
    text = capsys.readouterr().out
    header = [line for line in text.splitlines() if line.startswith(";")]
    assert repr(prompt) in header[0] and "plan confidence" in header[1]
    emitted = model.controller.emit([prompt])[0]
    assert assemble(text).slots[2:] == emitted.slots[2:]
    assert ("equals the expert program add.lasm" in header[1]) == (
        emitted.slots[2:] == load_program("add").slots[2:])
    assert compile_main(["--checkpoint", str(ck), "--run", prompt]) == 0
    ran = capsys.readouterr().out.splitlines()
    assert ran[-1] == model.solve([prompt])[0].output == "15"
    assert compile_main(["--checkpoint", str(ck), "Add 7 and 8."]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "position 0" in err[0] and "'A'" in err[0]


def test_the_compile_command_says_cannot_compile(stage0, capsys, monkeypatch):
    """The decline program, or a plan below --abstain-below, is "cannot compile" (exit 1)
    and no program is printed."""
    from llamacpu.compile import main as compile_main
    from llamacpu.llm.controller import Controller

    ck = str(stage0[0] / "stage_0")
    with pytest.raises(SystemExit) as bad:
        compile_main(["--checkpoint", ck, "--abstain-below", "1.5", "1+2"])
    assert bad.value.code == 2 and "--abstain-below" in capsys.readouterr().err
    assert compile_main(["--checkpoint", ck, "1+2"]) == 0
    conf = float(capsys.readouterr().out.splitlines()[1].split()[3].rstrip(";"))
    if conf + 1e-4 <= 1.0:
        assert compile_main(["--checkpoint", ck, "--abstain-below", f"{conf + 1e-4}",
                             "1+2"]) == 1
        assert capsys.readouterr().out.splitlines()[-1].startswith("cannot compile: plan "
                                                                  "confidence")
    decline = load_program("decline")
    monkeypatch.setattr(Controller, "emit_scored",
                        lambda self, ps: ([decline] * len(ps), torch.ones(len(ps))))
    assert compile_main(["--checkpoint", ck, "--run", "divide 12 by 4"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("cannot compile: the controller emitted the decline program")
    assert not any(line.startswith(" ") for line in lines)  # no program text


def test_a_calibrated_threshold_declines_at_most_its_rate(stage0, capsys):
    """calibrate_abstention: the threshold abstains on at most floor(rate · n) of the
    prompts it was chosen on; eval --abstain-below counts what it declines per row."""
    from llamacpu.eval import main as eval_main
    from llamacpu.learn.evaluation import (
        calibrate_abstention,
        draw_examples,
        evaluate_lengths,
    )

    out, _, _ = stage0
    model = load_learned(out / "stage_0")
    examples = draw_examples("add", 1, 40, seed=5, split="heldout")
    _, conf = model.controller.emit_scored([e.prompt for e in examples])
    for rate in (0.0, 0.1, 0.5):
        cal = calibrate_abstention(model, examples, rate)
        assert cal["prompts"] == 40 and cal["abstained"] <= int(rate * 40)
        assert cal["abstained"] == sum(c < cal["threshold"] for c in conf.tolist())
    with pytest.raises(ValueError, match="rate"):
        calibrate_abstention(model, examples, 1.0)
    cut = calibrate_abstention(model, examples, 0.5)["threshold"]
    row, = evaluate_lengths(model, "add", [1], 40, seed=5, split="heldout", abstain_below=cut)
    assert row["abstained"] == sum(c < cut for c in conf.tolist()) > 0
    assert row["exact_match"] <= 1 - row["abstained"] / 40
    ck = str(out / "stage_0")
    assert eval_main(["--checkpoint", ck, "--task", "add", "--digits", "1", "--n", "40",
                      "--seed", "5", "--split", "heldout", "--calibrate", "0.5", "--json",
                      "-q"]) == 0
    got = json.loads(capsys.readouterr().out)["calibration"]
    assert got["threshold"] == pytest.approx(cut) and got["split"] == "heldout"
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", ck, "--calibrate", "0.5", "--abstain-below", "0.3"])
    assert "--calibrate" in capsys.readouterr().err


def test_a_checkpoint_from_before_the_operand_window_takes_it_unless_it_trained_composed():
    """The operand window changes only the views of prompts of three or more numbers (the
    composed tasks'): a checkpoint written before it that never trained a composed task
    continues with the run's window; one that did keeps the view it learned (and so does
    not match a run with the window)."""
    from llamacpu.learn.checkpoint import Checkpoint
    from llamacpu.learn.learned import LearnedConfig
    from llamacpu.learn.trainer import Trainer
    from llamacpu.train import parse_args

    model = LearnedConfig().to_json()
    del model["controller"]["operand_window"]

    def checkpoint(trained):
        return Checkpoint({}, None, None, {"model": model}, trained[-1], 0, [], True,
                          {"trained_stages": trained}, None, Path("ckpt"), "", {})

    notes = []
    trainer = Trainer(parse_args(["--stages", "24-25"]), log=notes.append)
    before = checkpoint(list(range(19)))
    after = trainer._adopt_operand_window(before)
    assert LearnedConfig.from_json(after.config["model"]).controller.view.operands == 3
    assert LearnedConfig.from_json(before.config["model"]).controller.view.operands == 0
    assert notes and "operand window" in notes[0]
    composed = checkpoint([*range(19), 24])
    assert trainer._adopt_operand_window(composed) is composed
