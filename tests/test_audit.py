"""A new user's audit: clean one-line errors before any work, notes instead of silent
surprises, reading a checkpoint writes nothing, progress on stderr, ``train --list`` and
the two-line Python API of README.md.

One tiny checkpoint (stage 0, two training steps: it answers nothing right) serves every
test that needs one; what is checked is the command lines' behaviour, not the machine's.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from llamacpu.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(two_step_run) -> Path:
    """A run directory holding ``stage_0`` (two training steps), without its ``.lock``."""
    assert (two_step_run / "stage_0" / "state.json").is_file()
    return two_step_run


def _run(command: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """``llamacpu COMMAND ARGV`` in this process: (exit code, stdout, stderr)."""
    module, function, _ = COMMANDS[command]
    entry = getattr(importlib.import_module(module), function)
    try:
        code = entry(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ clean errors, before work

BAD = [
    # (command, argv, words the one error line must hold: the flag or path, allowed values)
    ("eval", ["--checkpoint", "{ck}", "--threads", "0"], ["--threads", "at least 1", "got 0"]),
    ("eval", ["--checkpoint", "{ck}", "--threads", "-1"], ["--threads", "at least 1", "got -1"]),
    ("check", ["--checkpoint", "{ck}", "--task", "add", "--threads", "0"],
     ["--threads", "at least 1"]),
    ("check", ["--report", "--checkpoint", "{ck}", "--threads", "-1"],
     ["--threads", "at least 1"]),
    ("bench", ["baselines", "--checkpoint", "{ck}", "--threads", "0"],
     ["--threads", "at least 1"]),
    ("certify", ["--checkpoint", "{ck}", "--threads", "-1"], ["--threads", "at least 1"]),
    ("models", ["fetch", "smollm2-135m", "--cache", "/proc/foo"],
     ["--cache /proc/foo", "writable directory"]),
    ("bench", ["baselines", "--checkpoint", "{ck}", "--out", "/proc/foo"],
     ["--out /proc/foo", "writable directory"]),
    ("check", ["--report", "--checkpoint", "{ck}", "--out", "/proc/foo"],
     ["--out /proc/foo", "writable directory"]),
    ("check", ["--report", "--checkpoint", "{ck}", "--out", "{file}"],
     ["--out", "not a directory", "writable directory"]),
    ("certify", ["--checkpoint", "{ck}", "--json", "/proc/foo/cert.json"],
     ["--json /proc/foo/cert.json", "writable directory"]),
    ("models", ["list", "--cache", "{file}"], ["--cache", "not a directory"]),
]


@pytest.mark.parametrize("command, argv, words", BAD,
                         ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD])
def test_bad_input_is_one_error_line_and_exit_2_before_any_work(
        run_dir, tmp_path, capsys, monkeypatch, command, argv, words):
    from llamacpu.evaluate import baselines, report
    from llamacpu.learn import evaluation
    from llamacpu.llm import models

    def no_work(*a, **k):
        raise AssertionError("the command started its work before checking its input")

    cli = importlib.import_module(COMMANDS[command][0])  # imported before the patches
    for module, name in ((evaluation, "load_checkpoint_machine"), (report, "run_report"),
                         (baselines, "run_baselines"), (models, "pip_download"),
                         (cli, "load_checkpoint_machine"), (cli, "run_report"),
                         (cli, "run_baselines")):
        monkeypatch.setattr(module, name, no_work, raising=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = [x.replace("{ck}", str(run_dir / "stage_0")).replace("{file}", str(a_file))
            for x in argv]
    code, out, err = _run(command, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err and out == ""


def test_the_certify_command_line_follows_the_same_rules(run_dir):
    out = subprocess.run([sys.executable, "-m", "llamacpu.certify", "--checkpoint",
                          str(run_dir / "stage_0"), "--threads", "0"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "error: --threads must be a whole number of threads, at least 1; got 0 (see --help)"]


# ------------------------------------------------------------------ notes, not surprises


@pytest.mark.parametrize("task, extra", [("sort", None), ("fib", "in no curriculum stage")])
def test_eval_notes_a_task_the_machine_never_trained_on(run_dir, capsys, task, extra):
    code, out, err = _run("eval", ["--checkpoint", str(run_dir / "stage_0"), "--task", task,
                                   "--digits", "1", "--n", "2", "--quiet"], capsys)
    assert code == 0 and f"| {task} | 1 | 2 |" in out
    notes = err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: the machine never trained on {task}")
    assert "stage 0 trained add" in notes[0]
    assert extra is None or extra in notes[0]


def test_eval_has_no_note_for_a_trained_task_and_help_names_the_unstaged_tasks(run_dir,
                                                                               capsys):
    code, _, err = _run("eval", ["--checkpoint", str(run_dir / "stage_0"), "--task", "add",
                                 "--digits", "1", "--n", "2", "--quiet"], capsys)
    assert code == 0 and err == ""
    from llamacpu.learn.curriculum import STAGES
    from llamacpu.learn.tasks import TASKS

    unstaged = sorted(set(TASKS) - {s.task for s in STAGES})
    assert {"fib", "gcd"} <= set(unstaged)
    code, out, _ = _run("eval", ["--help"], capsys)
    assert code == 0 and f"{', '.join(unstaged)}: in no curriculum stage" in " ".join(out.split())


def test_check_report_writes_beside_the_checkpoint_not_into_docs(run_dir, tmp_path, capsys,
                                                                 monkeypatch):
    from llamacpu import check
    from llamacpu.evaluate.properties import Bucket, CheckReport
    from llamacpu.evaluate.report import TaskReport

    def run_report(machine, stage, examples, seed, log, stages):
        assert stages == list(range(stage + 1))  # the checkpoint trained every stage
        return [TaskReport("add", 1, CheckReport("add", (Bucket(1, 4, 4), Bucket(10, 4, 4)),
                                                 None, 0.1))]

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    monkeypatch.setattr(check, "run_report", run_report)
    monkeypatch.chdir(tmp_path)        # a docs/ here would be written by the old default
    code, out, _ = _run("check", ["--report", "--checkpoint", str(run / "stage_0")], capsys)
    where = run / "reports" / "stage_0"
    assert code == 0
    assert (where / "check_report.md").is_file() and (where / "check_report.png").is_file()
    assert out.strip().splitlines()[-1] == (f"wrote {where / 'check_report.md'} and "
                                             f"{where / 'check_report.png'}")
    assert not (tmp_path / "docs").exists()


# ------------------------------------------------------------------ reading writes nothing


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: its relative path and a digest of its bytes and mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() else b""
        out[str(p.relative_to(root))] = f"{st.st_mode:o} {hashlib.sha256(data).hexdigest()}"
    return out


@pytest.mark.parametrize("with_lock", [False, True])
def test_loading_a_checkpoint_leaves_its_directory_byte_identical(run_dir, tmp_path, capsys,
                                                                  with_lock):
    import llamacpu
    from llamacpu.learn.checkpoint import find_latest, load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if with_lock:   # a run directory a trainer has written: its lock file stays as it was
        c = load_checkpoint(run / "stage_0")
        save_checkpoint(run / "stage_0", model_state=c.model_state, config=c.config, stage=0,
                        step=c.step, metrics=c.metrics, passed=c.passed)
        assert (run / ".lock").exists()
    before = _tree(run)
    ck = str(run / "stage_0")
    assert find_latest(run) == run / "stage_0"
    load_checkpoint(run / "stage_0")
    llamacpu.load(ck)
    assert _run("eval", ["--checkpoint", ck, "--digits", "1", "--n", "2", "-q"], capsys)[0] == 0
    assert _run("check", ["--checkpoint", ck, "--task", "add", "--examples", "3", "-q"],
                capsys)[0] in (0, 1)
    assert _tree(run) == before


# ------------------------------------------------------------------ progress and logging


def test_eval_shows_progress_on_stderr_unless_quiet(run_dir, capsys):
    argv = ["--checkpoint", str(run_dir / "stage_0"), "--digits", "1,2", "--n", "2"]
    code, out, err = _run("eval", argv, capsys)
    assert code == 0 and "eval add" in err and "problem" in err
    assert out.startswith("| task |")            # stdout: the table only
    code, out2, err = _run("eval", [*argv, "--quiet"], capsys)

    def table(text: str) -> list[str]:  # the rows without their wall-time column
        return [line.rsplit("|", 2)[0] for line in text.splitlines()[:4]]

    assert code == 0 and err == "" and table(out2) == table(out)


def test_check_logs_each_length_on_stderr_and_quiet_silences_it(run_dir, capsys):
    argv = ["--checkpoint", str(run_dir / "stage_0"), "--task", "add", "--examples", "3"]
    code, out, err = _run("check", argv, capsys)
    assert code in (0, 1) and "add lengths 1..1: 3 examples" in err and "check add" in err
    assert "add lengths" not in out
    code, _, err = _run("check", [*argv, "--quiet"], capsys)
    assert err == ""


def test_setup_logging_levels(capsys):
    from llamacpu.cli import log, setup_logging

    for flags, shown in (({}, ["info", "warning"]), ({"verbose": True}, ["debug", "info",
                                                                          "warning"]),
                         ({"quiet": True}, ["warning"])):
        setup_logging(**flags)
        log.debug("debug")
        log.info("info")
        log.warning("warning")
        captured = capsys.readouterr()
        assert captured.err.split() == shown and captured.out == ""
    setup_logging()


# ------------------------------------------------------------------ conventions


def test_train_list_prints_the_stage_table_without_torch():
    from llamacpu.learn.curriculum import STAGES

    code = ("import sys; from llamacpu.train import cli; rc = cli(['--list']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    *table, last = out.stdout.strip().splitlines()
    assert last == "0 False", out.stderr
    assert len(table) == len(STAGES)
    for line, stage in zip(table, STAGES):
        assert line.split()[:3] == [str(stage.index), stage.name, stage.task], line
    cli = subprocess.run([sys.executable, "-m", "llamacpu.train", "--list"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert cli.returncode == 0 and cli.stdout.strip().splitlines() == table


def test_a_solution_has_a_short_repr():
    from llamacpu.learn.learned import Solution

    assert repr(Solution("47", 85, True, None, object())) == "Solution('47', steps=85)"
    assert repr(Solution("", 300, False, None, None)) == "Solution('', steps=300, halted=False)"
    assert repr(Solution("", 0, False, "bad slot", None)) == \
        "Solution('', steps=0, halted=False, fault='bad slot')"


def test_the_default_step_budget_covers_every_curriculum_task():
    import random

    from llamacpu.learn.curriculum import STAGES, trained_tasks
    from llamacpu.learn.evaluation import reference_run, step_budget
    from llamacpu.learn.learned import default_max_steps
    from llamacpu.learn.tasks import TASKS

    for task in sorted(trained_tasks(len(STAGES) - 1)):  # every task a stage trains
        rng = random.Random(f"budget/{task}")
        for length in (1, 2, 4, 8, 20, 40):
            if TASKS[task].max_length is not None and length > TASKS[task].max_length:
                continue
            for split in ("train", "heldout"):
                ex = TASKS[task].sample(rng, length, split)
                need = step_budget(reference_run(ex).steps)
                assert default_max_steps([ex.prompt]) >= need, (task, ex.prompt)


def test_importing_llamacpu_is_light():
    code = "import sys, llamacpu; print(callable(llamacpu.load), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_readme_python_api_runs_as_written(run_dir, tmp_path, monkeypatch):
    """README's first Python API block, with its checkpoint path pointing at a real one."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'llamacpu.load("checkpoints/stage_3")' in block and "m.solve([" in block
    assert len([x for x in block.splitlines() if x.strip() and not x.startswith("import")]) == 2
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(run_dir / "stage_0", tmp_path / "checkpoints" / "stage_3")
    monkeypatch.chdir(tmp_path)   # the path as written, relative to where the user stands
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(compile(block, "README.md", "exec"), {})
    printed = buf.getvalue().strip()
    assert re.fullmatch(r"\[Solution\('[^']*', steps=\d+.*\), Solution\('[^']*', steps=\d+.*\)\]",
                        printed), printed
    assert "program" not in printed
    assert os.listdir(tmp_path / "checkpoints") == ["stage_3"]   # loading wrote nothing


def test_run_reads_its_input_from_a_file_or_stdin(tmp_path):
    """An input longer than a command line takes (1 MB here) comes from ``--input-file``;
    ``-`` is standard input; an unreadable file or both flags at once is one error line."""
    a, b = "9" * 500_000, "1" + "0" * 499_999
    big = tmp_path / "big.txt"
    big.write_text(f"{a}+{b}\n")  # the trailing newline is dropped
    r = subprocess.run([sys.executable, "-m", "llamacpu.run", "programs/add.lasm",
                        "--input-file", str(big), "--max-steps", "100000000"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.splitlines()[0] == "10" + "9" * 499_999  # 99..9 + 10..0
    r = subprocess.run([sys.executable, "-m", "llamacpu.run", "programs/add.lasm",
                        "--input-file", "-"], input="12+35\n", capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "47", r.stderr
    for extra, message in ((["--input-file", str(tmp_path / "missing")], "cannot read it"),
                           (["--input", "1+1", "--input-file", "-"], "not allowed with")):
        r = subprocess.run([sys.executable, "-m", "llamacpu.run", "programs/add.lasm", *extra],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
