"""Every command line: one ``error: ...`` line and exit code 2 for a bad flag, and the
``llamacpu`` console script that dispatches to the same modules."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from llamacpu.cli import COMMANDS
from llamacpu.cli import main as llamacpu_main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unknown_flag_is_one_error_line_and_exit_2(name, capsys):
    module, function, _ = COMMANDS[name]
    entry = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as e:
        entry(["--no-such-flag"] if name not in ("models", "bench") else
              ["--no-such-flag", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "--no-such-flag" in err[0]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_console_script_dispatches_like_python_m(name, capsys):
    with pytest.raises(SystemExit) as e:
        llamacpu_main([name, "--help"])
    assert e.value.code == 0
    assert f"python -m llamacpu.{name}" in capsys.readouterr().out


def test_the_console_script_runs_a_program(capsys):
    assert llamacpu_main(["run", str(REPO / "programs" / "add.lasm"), "--input", "12+35"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "47"


def test_the_console_script_names_an_unknown_command(capsys):
    assert llamacpu_main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frobnicate" in err[0] and "train" in err[0]


def test_console_help_lists_every_command_without_importing_torch():
    code = ("import sys; from llamacpu.cli import main; rc = main(['--help']); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    *listing, last = out.stdout.strip().splitlines()
    assert last == "0 False"
    for name in COMMANDS:
        assert any(line.split()[:1] == [name] for line in listing), (name, listing)


@pytest.mark.parametrize("argv, names", [
    (["--stage", "4", "--wordings", "nope"], "--wordings must be one of templates, grammar"),
])
def test_train_flag_values_are_checked_in_one_line(argv, names, capsys):
    from llamacpu.train import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and names in err[0], err
