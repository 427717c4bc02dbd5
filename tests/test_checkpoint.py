"""Checkpoints: exact round trip and resume, atomic replacement under crashes, no pickle."""

from __future__ import annotations

import ast
import errno
import fcntl
import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llamacpu.learn.checkpoint as ckpt_mod
from llamacpu.core.isa import LlamacpuError
from llamacpu.learn.checkpoint import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    Checkpoint,
    CheckpointError,
    capture_rng,
    ensure_out_dir,
    find_latest,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    stage_dir,
)

ALL_FILES = (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE)


# --------------------------------------------------------------------------- helpers


def _same(a, b) -> bool:
    """Exact equality with types: tuples stay tuples, NaN equals NaN, tensors bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or repr(a) == repr(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _simple_save(path: Path, n: int, **kw) -> Path:
    """A small checkpoint whose every part encodes ``n`` (its step); ``kw`` overrides."""
    step = n
    args = dict(model_state={"w": torch.full((64,), float(step)), "b": torch.arange(step + 1)},
                optimizer_state={"state": {0: {"m": torch.full((3,), step / 7)}},
                                 "param_groups": [{"lr": 0.1 * step, "params": [0]}]},
                scheduler={"last_epoch": step}, config={"run": "x", "step_was": step},
                stage=1, step=step, metrics=[{"step": step, "acc": step / 10}], passed=False)
    args.update(kw)
    return save_checkpoint(path, **args)


def _check_simple(ck: Checkpoint, step: int) -> None:
    assert ck.step == step
    assert torch.equal(ck.model_state["w"], torch.full((64,), float(step)))
    assert torch.equal(ck.model_state["b"], torch.arange(step + 1))
    assert torch.equal(ck.optimizer_state["state"][0]["m"], torch.full((3,), step / 7))
    assert ck.optimizer_state["param_groups"] == [{"lr": 0.1 * step, "params": [0]}]
    assert ck.scheduler_state == {"last_epoch": step}
    assert ck.config == {"run": "x", "step_was": step}
    assert ck.metrics == [{"step": step, "acc": step / 10}]


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# --------------------------------------------------------------------------- round trip


def test_round_trip_of_every_field(tmp_path):
    torch.manual_seed(0)
    base = torch.randn(6, 4)
    param = nn.Parameter(torch.randn(3))
    model_state = {
        "f32": base,
        "view": base[2:4],                      # shares storage with f32
        "transposed": base.t(),                 # not contiguous, shares storage too
        "param": param,                         # requires grad
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(5).bfloat16(),
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "i64": torch.arange(-3, 3),
        "u8": torch.arange(7, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "nan": torch.tensor([float("nan"), float("inf"), -0.0]),
    }
    opt_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(3), "k": 4}},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "foreach": None,
                                   "params": [0]}]}
    sched_state = {"last_epoch": 3, "_last_lr": [0.1], "lr_lambdas": [None], "t": torch.ones(2)}
    config = {"name": "añadir ✓", "sizes": (1, 2, (3, "x")), 7: "int key", "nested": {"a": [1.5]},
              "__tuple__": "a key that looks like a tag", "big": 2**70, "tiny": 5e-324}
    metrics = [{"stage": 1, "acc": 0.25, "loss": float("nan")}, {"stage": 2, "inf": float("inf")}]
    extra = {"sampler": {"epoch": 3, "order": [3, 1, 2]}, "note": None, "np": np.float32(0.5)}
    rng = capture_rng()

    path = save_checkpoint(stage_dir(tmp_path, 3), model_state=model_state,
                           optimizer_state=opt_state, scheduler=sched_state, config=config,
                           stage=3, step=17, metrics=metrics, passed=True, extra=extra, rng=rng)
    assert path == tmp_path / "stage_3"
    assert sorted(p.name for p in path.iterdir()) == sorted(ALL_FILES)
    ck = load_checkpoint(path)

    expect = {k: v.detach().contiguous() for k, v in model_state.items()}
    assert _same(ck.model_state, expect)
    assert _same(ck.optimizer_state, opt_state)
    assert _same(ck.scheduler_state, sched_state)
    assert _same(ck.config, config)
    assert _same(ck.metrics, metrics)
    assert _same(ck.extra, {**extra, "np": 0.5})  # numpy scalars come back as Python numbers
    assert (ck.stage, ck.step, ck.passed) == (3, 17, True)
    assert ck.path == path and abs(ck.created - time.time()) < 60
    assert ck.versions["torch"] == torch.__version__
    assert _same(ck.rng.python, rng.python)
    assert _same(ck.rng.torch_cpu, rng.torch_cpu)
    assert ck.rng.numpy[0] == rng.numpy[0] and np.array_equal(ck.rng.numpy[1], rng.numpy[1])
    assert ck.rng.numpy[2:] == rng.numpy[2:]
    # saved tensors are independent copies: later changes to the live ones do not leak in
    with torch.no_grad():
        base.zero_()
    assert not torch.equal(load_checkpoint(path).model_state["f32"], base)


def test_optimizer_object_and_scheduler_object_are_saved_through_state_dict(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    ck = load_checkpoint(save_checkpoint(tmp_path / "stage_0", model_state=model.state_dict(),
                                         optimizer=opt, scheduler=sched, config={}, stage=0,
                                         step=1, metrics={}, passed=False))
    assert _same(ck.optimizer_state, opt.state_dict())
    assert _same(ck.scheduler_state, sched.state_dict())
    assert ck.optimizer_state["param_groups"][0]["betas"] == (0.9, 0.999)
    assert ck.extra is None and ck.metrics == {}


# --------------------------------------------------------------------------- exact resume


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.9 ** s)
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> None:
    """Draws from all three global RNGs; one gauss call per step leaves a cached normal."""
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 4)
        shift = np.random.standard_normal() + random.gauss(0.0, 1.0)
        y = x.sum(1, keepdim=True) + 0.1 * shift
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_resume_is_bit_identical_with_adamw_and_lambdalr(tmp_path):
    k, m = 3, 4
    _seed_all(0)
    ref_model, ref_opt, ref_sched = _make(0)
    _train(ref_model, ref_opt, ref_sched, k + m)
    ref_next = torch.rand(3)

    _seed_all(0)
    model, opt, sched = _make(0)
    _train(model, opt, sched, k)
    assert random.getstate()[2] is not None  # the cached gauss is part of what is restored
    path = save_checkpoint(stage_dir(tmp_path, 1), model_state=model.state_dict(), optimizer=opt,
                           scheduler=sched, config={"k": k}, stage=1, step=k, metrics=[],
                           passed=False)
    del model, opt, sched

    _seed_all(123)  # a fresh process: other RNG states, other initial weights
    model, opt, sched = _make(1)
    ck = load_checkpoint(path)
    model.load_state_dict(ck.model_state)
    opt.load_state_dict(ck.optimizer_state)
    sched.load_state_dict(ck.scheduler_state)
    restore_rng(ck)
    _train(model, opt, sched, m)

    for (name, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert _same(opt.state_dict(), ref_opt.state_dict())
    assert sched.get_last_lr() == ref_sched.get_last_lr()
    assert torch.equal(torch.rand(3), ref_next)


def test_without_restoring_rng_the_resume_differs(tmp_path):
    """The resume test above can fail: skipping restore_rng changes the result."""
    _seed_all(0)
    ref_model, ref_opt, ref_sched = _make(0)
    _train(ref_model, ref_opt, ref_sched, 5)
    _seed_all(0)
    model, opt, sched = _make(0)
    _train(model, opt, sched, 2)
    path = save_checkpoint(stage_dir(tmp_path, 1), model_state=model.state_dict(), optimizer=opt,
                           scheduler=sched, config={}, stage=1, step=2, metrics=[], passed=False)
    _seed_all(123)
    model, opt, sched = _make(1)
    ck = load_checkpoint(path)
    model.load_state_dict(ck.model_state)
    opt.load_state_dict(ck.optimizer_state)
    sched.load_state_dict(ck.scheduler_state)
    _train(model, opt, sched, 3)
    assert not torch.equal(model[0].weight, ref_model[0].weight)


# --------------------------------------------------------------------------- crashes


class _Faults:
    """Counts os.replace/os.rename/os.fsync/shutil.rmtree calls; fails from call ``at`` on.

    ``hard``: every call from ``at`` on fails (the process is as good as dead, so even the
    save's own clean-up cannot touch the disk). Otherwise only call ``at`` fails.
    """

    def __init__(self, mp: pytest.MonkeyPatch, at: int | None, hard: bool):
        self.at, self.hard, self.calls = at, hard, 0
        for mod, name in ((os, "replace"), (os, "rename"), (os, "fsync"), (shutil, "rmtree")):
            mp.setattr(mod, name, self._wrap(getattr(mod, name), name))

    def _wrap(self, real, name):
        def call(*args, **kwargs):
            self.calls += 1
            if self.at is not None and (self.calls == self.at
                                        or (self.hard and self.calls > self.at)):
                raise OSError(errno.EIO, f"injected fault in {name}")
            return real(*args, **kwargs)
        return call


@pytest.mark.filterwarnings("ignore:.*could not delete the previous checkpoint")
@pytest.mark.parametrize("hard", [True, False], ids=["crash", "transient-error"])
def test_a_fault_at_any_step_of_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path, hard):
    with pytest.MonkeyPatch.context() as mp:  # how many calls a save over an old one makes
        _simple_save(tmp_path / "probe" / "stage_1", 1)
        faults = _Faults(mp, None, hard)
        _simple_save(tmp_path / "probe" / "stage_1", 2)
        n_calls = faults.calls
    assert n_calls >= 8  # 4 file fsyncs + dir fsync + 2 renames + rmtree at least

    outcomes, gaps = set(), 0
    for at in range(1, n_calls + 2):
        out = tmp_path / f"at{at}"
        target = _simple_save(out / "stage_1", 1)
        raised = False
        with pytest.MonkeyPatch.context() as mp:
            _Faults(mp, at, hard)
            try:
                _simple_save(target, 2)
            except CheckpointError as e:
                assert "injected fault" in str(e) and str(target) in str(e)
                raised = True
        gaps += not target.exists()  # the window between the two renames was hit
        ck = load_checkpoint(target)
        assert ck.step in (1, 2), at
        _check_simple(ck, ck.step)
        if not raised:
            assert ck.step == 2, at
        assert _siblings(out) == [], at
        outcomes.add(ck.step)
        _check_simple(load_checkpoint(_simple_save(target, 3)), 3)  # and saving goes on
    assert outcomes == {1, 2}
    if hard:
        assert gaps >= 1  # recovery promoted the complete tmp at least once


def _write_stage(out: Path, name: str, step: int) -> Path:
    """A complete checkpoint for ``step`` under ``out/name`` (e.g. a .tmp-/.old- sibling)."""
    scratch = out.parent / f"scratch-{name}"
    _simple_save(scratch / "stage_1", step)
    shutil.move(scratch / "stage_1", out / name)
    shutil.rmtree(scratch)
    return out / name


def test_recovery_prefers_the_newest_complete_sibling(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # between rename 2 and 3: old and complete tmp of the same save -> the tmp (new) wins
    _write_stage(out, "stage_1.old-100-7", 1)
    _write_stage(out, "stage_1.tmp-100-7", 2)
    assert find_latest(out) == out / "stage_1"
    _check_simple(load_checkpoint(out / "stage_1"), 2)
    assert _siblings(out) == []

    # an incomplete tmp (state.json not yet written) loses to the old one
    shutil.rmtree(out / "stage_1")
    _write_stage(out, "stage_1.old-200-7", 1)
    (_write_stage(out, "stage_1.tmp-200-7", 2) / STATE_FILE).unlink()
    _check_simple(load_checkpoint(out / "stage_1"), 1)
    assert _siblings(out) == []

    # stage_1 present: every sibling is stale, even a complete newer-looking tmp
    _write_stage(out, "stage_1.tmp-300-7", 5)
    _check_simple(load_checkpoint(out / "stage_1"), 1)
    assert _siblings(out) == []


def test_a_partial_first_save_is_no_checkpoint(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (_write_stage(out, "stage_2.tmp-100-7", 1) / MODEL_FILE).write_bytes(b"partial")
    assert find_latest(out) is None
    assert list(out.iterdir()) == [] or [p.name for p in out.iterdir()] == [".lock"]


def test_a_damaged_backup_with_no_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _simple_save(out / "stage_1", 1)
    old = _write_stage(out, "stage_2.old-100-7", 2)
    (old / MODEL_FILE).write_bytes(b"rot")
    with pytest.raises(CheckpointError, match=r"stage_2 is missing and its backup is damaged"):
        find_latest(out)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(out / "stage_2")
    assert old.exists()  # the evidence is left in place


_KILL_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from llamacpu.learn.checkpoint import save_checkpoint
    out = Path(sys.argv[1])
    for i in range(1, 1_000_000):
        save_checkpoint(out / "stage_1", model_state={"w": torch.full((1 << 16,), float(i))},
                        config={"i": i}, stage=1, step=i, metrics=[i], passed=False)
        print(i, flush=True)
""")


def test_kill_9_while_saving_in_a_loop_leaves_a_valid_checkpoint(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD)
    rng = random.Random(2024)
    for run in range(3):
        out = tmp_path / f"run{run}"
        child = subprocess.Popen([sys.executable, str(script), str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = child.stdout.readline()
            assert first.strip() == b"1", child.stderr.read().decode()[-2000:]
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        printed = [int(x) for x in (first + child.stdout.read()).split()]
        child.stdout.close()
        child.stderr.close()
        last = printed[-1]
        ck = load_checkpoint(out / "stage_1")
        assert ck.step in (last, last + 1)  # the save after the last print may have landed
        assert torch.equal(ck.model_state["w"], torch.full((1 << 16,), float(ck.step)))
        assert ck.config == {"i": ck.step} and ck.metrics == [ck.step]
        assert _siblings(out) == []


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize("name", ALL_FILES)
@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "empty"])
def test_damage_to_any_file_is_named(tmp_path, name, damage):
    path = _simple_save(tmp_path / "stage_1", 4)
    file = path / name
    data = file.read_bytes()
    if damage == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) // 2
        file.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
    elif damage == "delete":
        file.unlink()
    else:
        file.write_bytes(b"")
    for call in (lambda: load_checkpoint(path), lambda: find_latest(tmp_path)):
        with pytest.raises(CheckpointError) as info:
            call()
        msg = str(info.value)
        assert str(file) in msg and "\n" not in msg
        assert isinstance(info.value, LlamacpuError)


def _edit_state(path: Path, edit, *, fix_checksum: bool) -> None:
    file = path / STATE_FILE
    state = json.loads(file.read_text())
    state.pop("state_sha256")
    edit(state)
    if fix_checksum:
        file.write_text(ckpt_mod._state_text(state))
    else:
        file.write_text(json.dumps({**state, "state_sha256": "0" * 64}, indent=1))


@pytest.mark.parametrize("edit, fix, pattern", [
    (lambda s: s.update(step=5), False, "checksum mismatch"),
    (lambda s: s.update(passed=True), False, "checksum mismatch"),
    (lambda s: s.update(format_version=99), True, "format version 99"),
    (lambda s: s.update(format="something.else"), True, "not a llamacpu checkpoint"),
    (lambda s: s.pop("metrics"), True, "missing field 'metrics'"),
    (lambda s: s["files"][MODEL_FILE].update(sha256="ab" * 32), True, "sha256 mismatch"),
    (lambda s: s.update(model_keys=["w", "zz"]), True, "do not match"),
    (lambda s: s["optimizer"]["state"]["__dict__"][0][1]["m"].update(__tensor__="nope"),
     True, "missing tensor 'nope'"),
])
def test_edited_state_json_is_refused(tmp_path, edit, fix, pattern):
    path = _simple_save(tmp_path / "stage_1", 4)
    _edit_state(path, edit, fix_checksum=fix)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert any(n in str(info.value) for n in ALL_FILES)


def test_invalid_json_is_reported_with_its_position(tmp_path):
    path = _simple_save(tmp_path / "stage_1", 4)
    (path / STATE_FILE).write_text('{"format": "llamacpu.checkpoint",\n  oops}')
    with pytest.raises(CheckpointError, match=r"state\.json: not valid JSON \(line 2 column 3"):
        load_checkpoint(path)


def test_a_valid_but_foreign_safetensors_file_is_refused(tmp_path):
    path = _simple_save(tmp_path / "stage_1", 4)
    import safetensors.torch
    (path / OPTIMIZER_FILE).write_bytes(safetensors.torch.save({"state.0.m": torch.ones(3),
                                                                "extra": torch.ones(1)}))
    data = (path / OPTIMIZER_FILE).read_bytes()

    def fix(s):
        s["files"][OPTIMIZER_FILE] = {"sha256": __import__("hashlib").sha256(data).hexdigest(),
                                      "bytes": len(data)}
    _edit_state(path, fix, fix_checksum=True)
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors: tensor 'extra' is not"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- find_latest


def test_find_latest_picks_the_highest_stage_at_or_below(tmp_path):
    out = tmp_path / "ckpts"
    assert find_latest(out) is None  # no directory yet: a fresh start
    out.mkdir()
    (out / "notes.txt").write_text("not a checkpoint")
    (out / "stage_x").mkdir()
    assert find_latest(out) is None
    for s in (1, 3, 10):
        _simple_save(stage_dir(out, s), s, stage=s)
    assert find_latest(out) == out / "stage_10"  # numeric, not lexical, order
    assert find_latest(out, stage=9) == out / "stage_3"
    assert find_latest(out, stage=2) == out / "stage_1"
    assert find_latest(out, stage=0) is None
    assert load_checkpoint(find_latest(out, stage=3)).stage == 3


def test_find_latest_refuses_a_damaged_latest_instead_of_falling_back(tmp_path):
    _simple_save(stage_dir(tmp_path, 1), 1)
    _simple_save(stage_dir(tmp_path, 2), 2, stage=2)
    (tmp_path / "stage_2" / RNG_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"stage_2/rng\.safetensors"):
        find_latest(tmp_path)
    assert find_latest(tmp_path, stage=1) == tmp_path / "stage_1"
    (tmp_path / "stage_3").mkdir()  # an empty stage directory is damage too
    with pytest.raises(CheckpointError, match=r"stage_3/state\.json: missing"):
        find_latest(tmp_path)


# --------------------------------------------------------------------------- safety


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = _simple_save(tmp_path / "stage_1", 3)

    def boom(*args, **kwargs):
        raise AssertionError("pickle or torch.load used")

    class NoUnpickler:
        def __init__(self, *args, **kwargs):
            boom()

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"),
                      (torch.serialization, "load")):
        monkeypatch.setattr(mod, name, boom)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    _check_simple(load_checkpoint(path), 3)
    assert find_latest(tmp_path) == path
    _check_simple(load_checkpoint(_simple_save(path, 4)), 4)


def test_the_module_imports_no_pickle_and_calls_no_torch_load():
    tree = ast.parse(Path(ckpt_mod.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any("pickle" in n or n == "dill" for n in names), names
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) != ("torch", "load")


def test_bad_values_fail_before_touching_the_disk(tmp_path):
    out = tmp_path / "out"
    cases = [
        (dict(config={"w": torch.ones(2)}), r"config\['w'\]: tensors are not stored here"),
        (dict(metrics=[{"f": object()}]), r"metrics\[0\]\['f'\]: cannot store a object"),
        (dict(model_state={"w": [1.0]}), r"model_state\['w'\]: expected a Tensor"),
        (dict(stage=2), r"stage_1: directory is for stage 1, but stage=2"),
        (dict(step=-1), r"step must be an int >= 0"),
        (dict(passed=1), r"passed must be a bool"),
        (dict(optimizer=torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1)),
         "not both"),
    ]
    for kw, pattern in cases:
        with pytest.raises(CheckpointError, match=pattern):
            _simple_save(out / "stage_1", 1, **kw)
    assert not out.exists()


def test_out_dir_problems_are_checkpoint_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match=r"a_file: checkpoint directory path exists and is"):
        _simple_save(blocker / "stage_1", 1)
    with pytest.raises(CheckpointError, match=r"cannot create checkpoint directory"):
        _simple_save(blocker / "deeper" / "stage_1", 1)
    with pytest.raises(CheckpointError, match=r"not a directory"):
        find_latest(blocker)
    with pytest.raises(CheckpointError, match=r"nowhere: checkpoint directory does not exist"):
        load_checkpoint(tmp_path / "nowhere" / "stage_1")
    with pytest.raises(CheckpointError, match=r"stage_4: no checkpoint there"):
        load_checkpoint(tmp_path / "stage_4")
    with pytest.raises(CheckpointError, match=r"a_file"):
        ensure_out_dir(blocker)
    assert ensure_out_dir(tmp_path / "new" / "ckpts").is_dir()


def test_a_held_lock_times_out_with_a_clear_error(tmp_path, monkeypatch):
    _simple_save(tmp_path / "stage_1", 1)
    monkeypatch.setattr(ckpt_mod, "LOCK_TIMEOUT_S", 0.05)
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts like a process
        with pytest.raises(CheckpointError, match=r"\.lock: another process has held"):
            find_latest(tmp_path)
        with pytest.raises(CheckpointError, match=r"\.lock: another process has held"):
            _simple_save(tmp_path / "stage_1", 2)
    finally:
        os.close(fd)
    _check_simple(load_checkpoint(tmp_path / "stage_1"), 1)


def test_reentering_from_a_signal_handler_is_refused(tmp_path):
    _simple_save(tmp_path / "stage_1", 1)
    with ckpt_mod._locked(tmp_path):
        with pytest.raises(CheckpointError, match="re-entered"):
            _simple_save(tmp_path / "stage_1", 2)
    _check_simple(load_checkpoint(tmp_path / "stage_1"), 1)


def test_a_config_from_before_the_digit_window_reads_every_digit():
    """Checkpoints written before ``digit_window`` existed were trained on whole prompts:
    they load with 0 (every digit), new configs round-trip their own value."""
    from llamacpu.learn.learned import LearnedConfig

    d = LearnedConfig().to_json()
    assert d["controller"]["digit_window"] == 3
    assert LearnedConfig.from_json(d).controller.digit_window == 3
    del d["controller"]["digit_window"]
    assert LearnedConfig.from_json(d).controller.digit_window == 0
