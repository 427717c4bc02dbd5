"""One trainer per run directory, and every metrics record names its run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamacpu.learn.runlock import LOCK_FILE, RunDirBusy, RunLock

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "llamacpu.train", "--stage", "0", "--threads", "1",
         "--no-progress", "--eval-size", "8", "--no-certify"]


def test_a_second_lock_on_the_same_directory_names_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


def _wait_for(path: Path, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and not path.exists():
        time.sleep(0.2)
    assert path.exists(), f"{path} never appeared"


def _records(path: Path) -> list[dict]:
    f = path / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


@pytest.mark.slow
def test_a_second_trainer_exits_2_and_a_killed_ones_lock_is_free_for_the_rerun(tmp_path):
    # no competence check in the first trainer's 400 steps: it trains until it is killed
    first = subprocess.Popen(TRAIN + ["--out", str(tmp_path), "--steps", "400",
                                      "--ckpt-every", "5", "--eval-every", "1000"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait_for(tmp_path / "stage_0")  # it holds the directory and a checkpoint exists
        start = time.time()
        second = subprocess.run(TRAIN + ["--out", str(tmp_path), "--steps", "40"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and f"pid {first.pid}" in err[0]
        assert time.time() - start < 60
        seen = len(_records(tmp_path))  # the first goes on training, undisturbed
        end = time.time() + 120
        while len(_records(tmp_path)) <= seen and first.poll() is None and time.time() < end:
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    records = _records(tmp_path)
    assert len(records) > seen and len({r["run"] for r in records}) == 1  # none of the second
    assert (tmp_path / LOCK_FILE).exists()  # the file stays; the lock died with the process
    steps = str(records[-1]["step"] + 5)
    rerun = subprocess.run(TRAIN + ["--out", str(tmp_path), "--steps", steps], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert "Traceback" not in rerun.stderr and rerun.returncode in (0, 1), rerun.stderr
    records = _records(tmp_path)
    runs = list(dict.fromkeys(r["run"] for r in records))
    assert len(runs) == 2
    resumed = [r for r in records if r["run"] == runs[1]]
    assert resumed and resumed[0]["resumed_from"] > 0
    assert all(r["resumed_from"] == 0 for r in records if r["run"] == runs[0])
