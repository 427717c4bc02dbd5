"""Checkpoints: safetensors plus JSON, written atomically, resumed exactly, loaded without pickle.

A checkpoint is one directory, ``OUT/stage_N/`` (``OUT`` defaults to ``checkpoints/``). Its
files, the tagged JSON of its state.json and the checks every file must pass live in
:mod:`llamacpu.learn.checkpoint_format`; this module re-exports its public names.

Loading uses ``safetensors.torch.load_file`` and ``json`` only: nothing is unpickled, so a
checkpoint from anywhere cannot run code. Every file is checked (presence, size, sha256,
format version, the JSON checksum) and any problem raises :class:`CheckpointError` with one
line naming the file and the problem.

A scheduler is saved through its ``state_dict()``: ``LambdaLR`` stores ``None`` for a plain
function, so the trainer rebuilds the scheduler from its config and ``load_state_dict``
restores the counters.

Atomic replacement. POSIX cannot rename a directory over a non-empty one, so
:func:`save_checkpoint` does, under an exclusive ``flock`` on ``OUT/.lock``:

1. recover ``stage_N`` (below), then write every file into a fresh ``stage_N.tmp-<id>``
   next to it, fsync each file and the directory;
2. rename ``stage_N`` -> ``stage_N.old-<id>``, fsync ``OUT``;
3. rename ``stage_N.tmp-<id>`` -> ``stage_N``, fsync ``OUT``;
4. delete ``stage_N.old-<id>``.

Crash windows and what recovery (run by save, load and find, under the lock) makes of them:

- during 1: ``stage_N`` is the old checkpoint and the tmp is partial or complete but
  uncommitted -> ``stage_N`` exists, so every ``.tmp-*``/``.old-*`` sibling is deleted.
  (For a stage's first save there is no ``stage_N``: a tmp that verifies is promoted, a
  partial one deleted.)
- between 2 and 3: no ``stage_N``; ``.old-<id>`` and ``.tmp-<id>`` are both complete (the
  tmp was fsynced before 2) -> the newest sibling that verifies (tmp before old of the same
  id) is renamed to ``stage_N`` and the rest deleted. If only ``.old-*`` siblings exist and
  none verifies, a committed checkpoint is damaged: :class:`CheckpointError`, never a
  silent fresh start.
- during 4: ``stage_N`` is the new checkpoint, ``.old-<id>`` partly deleted -> deleted.

Readers (load, find) write nothing: they take a *shared* ``flock`` on ``OUT/.lock`` if it
exists (never creating it) and read. Only when an interrupted save left ``.tmp-*``/``.old-*``
siblings do they recover, like save, under the exclusive lock. So readers never see the
instant between 2 and 3 of a writer that holds the lock; a tool that ignores the lock
(``ls``, ``rsync``) can, and so can a reader of an ``OUT`` that has no ``.lock`` yet while
its first save is under way. One process should write an ``OUT`` at a time (rank 0 under
DDP); the lock serialises the others. A failed save raises :class:`CheckpointError` and
leaves ``stage_N`` as the old or the new checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import os
import platform
import random
import re
import shutil
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from llamacpu.learn.checkpoint_format import (
    FORMAT,
    FORMAT_VERSION,
    MODEL_FILE,
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    TENSOR_FILES,
    CheckpointError,
    _check_attachment,
    _decode,
    _encode,
    _one_line,
    _state_text,
    _verify,
)

try:  # POSIX advisory locks; without them (non-POSIX) saves and loads run unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CheckpointError", "Checkpoint", "RngState", "FORMAT", "FORMAT_VERSION", "DEFAULT_OUT_DIR",
    "MODEL_FILE", "OPTIMIZER_FILE", "RNG_FILE", "STATE_FILE", "LOCK_TIMEOUT_S",
    "save_checkpoint", "load_checkpoint", "find_latest", "stage_dir", "ensure_out_dir",
    "capture_rng", "restore_rng",
]

DEFAULT_OUT_DIR = Path("checkpoints")
LOCK_TIMEOUT_S = 120.0
"""How long save/load/find wait for another process's lock on ``OUT/.lock`` before failing."""

_LOCK_NAME = ".lock"
_STAGE_RE = re.compile(r"stage_(0|[1-9][0-9]*)\Z")
_SIBLING_RE = re.compile(r"(?P<name>.+)\.(?P<kind>tmp|old)-(?P<ns>[0-9]+)-(?P<pid>[0-9]+)\Z")


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class RngState:
    """Every global random generator a training step may draw from. Treat as opaque.

    ``python`` is ``random.getstate()``, ``numpy`` the legacy ``np.random.get_state()``
    tuple, ``torch_cpu`` ``torch.get_rng_state()`` and ``torch_cuda`` one state per device.
    """

    python: tuple
    numpy: tuple
    torch_cpu: torch.Tensor
    torch_cuda: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` read back; every field as it was given to the save.

    ``optimizer_state`` is a ``state_dict`` that ``optimizer.load_state_dict`` accepts (None
    if none was saved); ``scheduler_state`` likewise for ``scheduler.load_state_dict``.
    """

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    scheduler_state: dict[str, Any] | None
    config: dict[str, Any]
    stage: int
    step: int
    metrics: list | dict
    passed: bool
    extra: dict[str, Any] | None
    rng: RngState
    path: Path
    created: float             # time.time() when it was written
    versions: dict[str, str]   # library versions of the writer
    attachments: tuple[str, ...] = ()  # relative paths of the attached files (verified)


def stage_dir(out_dir: str | os.PathLike, stage: int) -> Path:
    """Where stage ``stage``'s checkpoint lives: ``out_dir/stage_<stage>``."""
    return Path(out_dir) / f"stage_{int(stage)}"


# --------------------------------------------------------------------------- RNG


def capture_rng() -> RngState:
    """The current state of python ``random``, numpy's global RNG and torch's generators."""
    cuda: tuple[torch.Tensor, ...] = ()
    if torch.cuda.is_available():
        cuda = tuple(s.clone() for s in torch.cuda.get_rng_state_all())
    return RngState(python=random.getstate(), numpy=np.random.get_state(),
                    torch_cpu=torch.get_rng_state().clone(), torch_cuda=cuda)


def restore_rng(state: Checkpoint | RngState) -> None:
    """Set every global generator to ``state`` (a checkpoint's ``rng``), so draws repeat."""
    rng = state.rng if isinstance(state, Checkpoint) else state
    random.setstate(rng.python)
    np.random.set_state(rng.numpy)
    torch.set_rng_state(rng.torch_cpu)
    if rng.torch_cuda:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n != len(rng.torch_cuda):
            warnings.warn(f"checkpoint has CUDA RNG states for {len(rng.torch_cuda)} devices, "
                          f"this machine has {n}: restoring {min(n, len(rng.torch_cuda))}",
                          stacklevel=2)
        for i in range(min(n, len(rng.torch_cuda))):
            torch.cuda.set_rng_state(rng.torch_cuda[i], device=i)


def _rng_to_parts(rng: RngState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    name, keys, pos, has_gauss, cached = rng.numpy
    tensors = {"torch.cpu": rng.torch_cpu,
               "numpy.keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy())}
    for i, s in enumerate(rng.torch_cuda):
        tensors[f"torch.cuda.{i}"] = s
    meta = {"python": _encode(rng.python, "rng.python"),
            "numpy": {"bit_generator": str(name), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "torch_cuda_devices": len(rng.torch_cuda)}
    return tensors, meta


def _rng_from_parts(tensors: dict[str, torch.Tensor], meta: Any, file: Path) -> RngState:
    try:
        n = int(meta["torch_cuda_devices"])
        npm = meta["numpy"]
        keys = tensors["numpy.keys"].numpy().astype(np.uint32)
        return RngState(
            python=_decode(meta["python"], {}, set()),
            numpy=(npm["bit_generator"], keys, int(npm["pos"]), int(npm["has_gauss"]),
                   float(npm["cached_gaussian"])),
            torch_cpu=tensors["torch.cpu"],
            torch_cuda=tuple(tensors[f"torch.cuda.{i}"] for i in range(n)))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: RNG state incomplete ({_one_line(e)})") from None


# --------------------------------------------------------------------------- save


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    scheduler: Any = None,
    config: Mapping[str, Any],
    stage: int,
    step: int,
    metrics: list | dict,
    passed: bool,
    extra: Mapping[str, Any] | None = None,
    rng: RngState | None = None,
    attachments: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a checkpoint to the directory ``path`` (usually ``stage_dir(OUT, stage)``).

    Replaces an existing checkpoint there atomically (module docstring). ``optimizer`` or
    its ``optimizer_state`` (not both); ``scheduler`` is an LR scheduler or its state_dict;
    ``rng`` defaults to the generators' state now. Tensors are saved detached, contiguous,
    on CPU, and unshared. ``attachments`` maps relative paths (``adapter/…``; no ``..``,
    not absolute, not a tensor file's name) to bytes written next to them, checksummed in
    state.json and verified on load. Everything is encoded before the disk is touched, so a
    value that cannot be stored fails without side effects. Returns ``path``.
    """
    target = Path(path)
    _check_args(target, stage, step, passed, config, metrics, extra)
    if optimizer is not None and optimizer_state is not None:
        raise CheckpointError("save_checkpoint: give optimizer or optimizer_state, not both")
    opt_sd = optimizer.state_dict() if optimizer is not None else optimizer_state
    sched_sd = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    if sched_sd is not None and not isinstance(sched_sd, Mapping):
        raise CheckpointError(f"scheduler: expected a scheduler or a dict, got "
                              f"{type(sched_sd).__name__}")

    model = _prepare_tensors(model_state, "model_state")
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_json = None if opt_sd is None else _encode(opt_sd, "optimizer_state", opt_tensors, "")
    sched_json = (None if sched_sd is None
                  else _encode(sched_sd, "scheduler", opt_tensors, "scheduler"))
    rng_tensors, rng_json = _rng_to_parts(rng if rng is not None else capture_rng())
    blobs = {
        MODEL_FILE: _serialize(model, "model_state"),
        OPTIMIZER_FILE: _serialize(_prepare_tensors(opt_tensors, "optimizer"), "optimizer"),
        RNG_FILE: _serialize(_prepare_tensors(rng_tensors, "rng"), "rng"),
    }
    now = time.time()
    body = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "stage": stage, "step": step, "passed": passed,
        "created": now,
        "created_utc": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(),
        "config": _encode(config, "config"), "metrics": _encode(metrics, "metrics"),
        "extra": None if extra is None else _encode(extra, "extra"),
        "optimizer": opt_json, "scheduler": sched_json,
        "model_keys": list(model), "rng": rng_json,
        "files": {name: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                  for name, b in blobs.items()},
        "versions": _versions(),
    }
    attached = dict(attachments or {})
    for rel, data in attached.items():
        _check_attachment(rel)
        if not isinstance(data, bytes):
            raise CheckpointError(f"attachment {rel!r}: expected bytes, got {type(data).__name__}")
    if attached:
        body["attachments"] = {rel: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                               for rel, b in attached.items()}
    state_text = _state_text(body)

    parent = target.parent
    _ensure_dir(parent)
    with _locked(parent):
        try:
            _recover(parent, target.name)
            tmp, uid = _make_tmp(parent, target.name)
            for name, blob in blobs.items():
                _write_file(tmp / name, blob)
            for rel, blob in attached.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                _write_file(tmp / rel, blob)
                _fsync_dir((tmp / rel).parent)
            _write_file(tmp / STATE_FILE, state_text.encode("ascii"))
            _fsync_dir(tmp)
            _swap_in(tmp, target, uid)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # best effort; recovery reruns on next use
                _recover(parent, target.name)
            if isinstance(exc, OSError):
                raise CheckpointError(f"{target}: checkpoint not written: "
                                      f"{_one_line(exc)}") from exc
            raise
    return target


def _check_args(target: Path, stage, step, passed, config, metrics, extra) -> None:
    for name, v in (("stage", stage), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"save_checkpoint: {name} must be an int >= 0, got {v!r}")
    if not isinstance(passed, bool):
        raise CheckpointError(f"save_checkpoint: passed must be a bool, got {passed!r}")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"save_checkpoint: config must be a dict, got {type(config).__name__}")
    if not isinstance(metrics, (list, dict)):
        raise CheckpointError(f"save_checkpoint: metrics must be a list or dict, "
                              f"got {type(metrics).__name__}")
    if extra is not None and not isinstance(extra, Mapping):
        raise CheckpointError(f"save_checkpoint: extra must be a dict, got {type(extra).__name__}")
    m = _STAGE_RE.match(target.name)
    if m and int(m.group(1)) != stage:
        raise CheckpointError(f"{target}: directory is for stage {m.group(1)}, "
                              f"but stage={stage} was given")
    if _SIBLING_RE.match(target.name) or target.name in ("", ".", "..", _LOCK_NAME):
        raise CheckpointError(f"{target}: not a usable checkpoint directory name")


def _prepare_tensors(tensors: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, none sharing storage with another (safetensors)."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{where}: expected a dict of tensors, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in tensors.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{where}: key {k!r} is not a string")
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}[{k!r}]: expected a Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise CheckpointError(f"{where}[{k!r}]: {t.layout} tensors are not supported")
        try:
            t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        except (RuntimeError, NotImplementedError) as e:
            raise CheckpointError(f"{where}[{k!r}]: cannot move to CPU ({_one_line(e)})") from None
        ptr = t.untyped_storage().data_ptr()
        if ptr and ptr in seen:
            t = t.clone()  # shares storage with an earlier tensor: safetensors refuses that
            ptr = t.untyped_storage().data_ptr()
        if ptr:
            seen.add(ptr)
        out[k] = t
    return out


def _serialize(tensors: dict[str, torch.Tensor], where: str) -> bytes:
    try:
        return safetensors.torch.save(tensors, metadata={"format": "pt"})
    except Exception as e:
        raise CheckpointError(f"{where}: cannot serialize to safetensors ({_one_line(e)})") from None


def _versions() -> dict[str, str]:
    from llamacpu._version import __version__

    return {"llamacpu": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "safetensors": safetensors.__version__,
            "python": platform.python_version()}


def _make_tmp(parent: Path, name: str) -> tuple[Path, str]:
    while True:
        uid = f"{time.time_ns()}-{os.getpid()}"
        tmp = parent / f"{name}.tmp-{uid}"
        try:
            os.mkdir(tmp)
            return tmp, uid
        except FileExistsError:
            continue


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory; nothing more to do
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _swap_in(tmp: Path, target: Path, uid: str) -> None:
    """Steps 2-4 of the module docstring: old aside, tmp into place, old deleted."""
    parent = target.parent
    old = parent / f"{target.name}.old-{uid}"
    if os.path.lexists(target):
        if not target.is_dir() or target.is_symlink():
            raise CheckpointError(f"{target}: exists and is not a checkpoint directory")
        os.replace(target, old)      # window: no target; old and tmp both complete
        _fsync_dir(parent)
    os.replace(tmp, target)          # committed: target is the new checkpoint
    _fsync_dir(parent)
    if os.path.lexists(old):
        try:
            shutil.rmtree(old)       # window: old partly deleted; recovery finishes it
        except OSError as e:
            warnings.warn(f"{old}: could not delete the previous checkpoint "
                          f"({_one_line(e)}); it is removed on the next save or load",
                          stacklevel=3)


# --------------------------------------------------------------------------- recovery & lock


def _siblings(parent: Path, name: str) -> list[tuple[int, int, Path]]:
    """``name``'s ``.tmp-*``/``.old-*`` siblings as (ns, tmp-first rank, path), newest first."""
    found = []
    for p in parent.iterdir():
        m = _SIBLING_RE.match(p.name)
        if m and m.group("name") == name:
            found.append((int(m.group("ns")), int(m.group("kind") == "tmp"), p))
    return sorted(found, key=lambda x: (x[0], x[1]), reverse=True)


def _recover(parent: Path, name: str) -> None:
    """Undo a crashed save of ``parent/name`` (module docstring); caller holds the lock."""
    sibs = _siblings(parent, name)
    if not sibs:
        return
    target = parent / name
    if not os.path.lexists(target):
        problems = []
        for _, is_tmp, p in sibs:
            try:
                _verify(p)
            except CheckpointError as e:
                problems.append((is_tmp, e))
                continue
            os.replace(p, target)
            _fsync_dir(parent)
            break
        else:
            olds = [e for is_tmp, e in problems if not is_tmp]
            if olds:  # a committed checkpoint existed and its only copy is damaged
                raise CheckpointError(f"{target} is missing and its backup is damaged: {olds[0]}")
    for _, _, p in sibs:
        if os.path.lexists(p):
            shutil.rmtree(p)
    _fsync_dir(parent)


_held = threading.local()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``directory/.lock``: one writer or recoverer at a time.

    A directory where the lock file can be neither created nor opened (read-only, no lock
    file) is used unlocked: nothing can write there anyway.
    """
    key = os.path.realpath(directory)
    held = getattr(_held, "dirs", None)
    if held is None:
        held = _held.dirs = set()
    if key in held:
        raise CheckpointError(f"{directory}: checkpoint API re-entered while it holds the lock "
                              "(from a signal handler?); set a flag there and save from the loop")
    lock_path = directory / _LOCK_NAME
    fd = None
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            fd = os.open(lock_path, flags, 0o644)
            break
        except OSError:
            continue
    try:
        if fd is not None and fcntl is not None:
            _flock(fd, fcntl.LOCK_EX, lock_path)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


@contextlib.contextmanager
def _reading(directory: Path) -> Iterator[None]:
    """Shared ``flock`` on ``directory/.lock`` if that file exists: readers exclude writers,
    not each other, and create nothing. Without a lock file (no save has run here, or it
    cannot be opened) the directory is read unlocked."""
    key = os.path.realpath(directory)
    if key in (getattr(_held, "dirs", None) or ()):
        raise CheckpointError(f"{directory}: checkpoint API re-entered while it holds the lock "
                              "(from a signal handler?); set a flag there and save from the loop")
    lock_path = directory / _LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        fd = None
    try:
        if fd is not None and fcntl is not None:
            _flock(fd, fcntl.LOCK_SH, lock_path)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def _flock(fd: int, operation: int, lock_path: Path) -> None:
    """``flock(fd, operation)``, waiting up to :data:`LOCK_TIMEOUT_S` for another holder."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"{lock_path}: another process has held the checkpoint lock for "
                    f"{LOCK_TIMEOUT_S:g} s") from None
            time.sleep(0.01)
        except OSError:  # filesystem without locks (some NFS): go on unlocked
            return


def _ensure_dir(directory: Path) -> None:
    if os.path.lexists(directory) and not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory path exists and is not a "
                              "directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{directory}: cannot create checkpoint directory "
                              f"({_one_line(e)})") from None


def ensure_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and prove it writable, so a run fails before training."""
    out = Path(out_dir)
    _ensure_dir(out)
    probe = out / f".write-test-{os.getpid()}-{time.time_ns()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(f"{out}: checkpoint directory is not writable "
                              f"({_one_line(e)})") from None
    return out


# --------------------------------------------------------------------------- load & find


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify the checkpoint directory ``path``, after crash recovery.

    Uses only ``safetensors.torch.load_file`` and ``json``. Any missing, truncated, corrupt
    or mismatched file raises :class:`CheckpointError` naming it. Writes nothing (no lock
    file either) unless an interrupted save left siblings to recover (module docstring).
    """
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        raise CheckpointError(f"{parent}: checkpoint directory does not exist")
    with _reading(parent):
        if not _siblings(parent, target.name):
            if not target.is_dir():
                raise CheckpointError(f"{target}: no checkpoint there")
            return _read(target)
    with _locked(parent):  # an interrupted save to recover: a write, under the writer's lock
        try:
            _recover(parent, target.name)
        except OSError as e:
            raise CheckpointError(f"{target}: cannot recover from an interrupted save "
                                  f"({_one_line(e)})") from None
        if not target.is_dir():
            raise CheckpointError(f"{target}: no checkpoint there")
        return _read(target)


def find_latest(out_dir: str | os.PathLike, stage: int | None = None) -> Path | None:
    """The checkpoint of the highest stage (``<= stage`` if given) in ``out_dir``, or None.

    Recovers interrupted saves first and verifies the checkpoint it returns: a damaged
    latest checkpoint raises :class:`CheckpointError` rather than falling back to an older
    one or to a fresh start. A missing ``out_dir`` means no checkpoint yet: None. Writes
    nothing unless there is an interrupted save to recover (module docstring).
    """
    out = Path(out_dir)
    if not os.path.lexists(out):
        return None
    if not out.is_dir():
        raise CheckpointError(f"{out}: checkpoint directory path is not a directory")
    with _reading(out):
        entries = _entries(out)
        if not any((m := _SIBLING_RE.match(n)) and _STAGE_RE.match(m.group("name"))
                   for n in entries):
            return _highest(out, {n for n in entries if _STAGE_RE.match(n)}, stage)
    with _locked(out):  # an interrupted save to recover: a write, under the writer's lock
        entries = _entries(out)
        names = set()
        for n in entries:
            m = _SIBLING_RE.match(n)
            base = m.group("name") if m else n
            if _STAGE_RE.match(base):
                names.add(base)
        try:
            for n in sorted(names):
                _recover(out, n)
        except OSError as e:
            raise CheckpointError(f"{out}: cannot recover from an interrupted save "
                                  f"({_one_line(e)})") from None
        return _highest(out, {n for n in names if os.path.lexists(out / n)}, stage)


def _entries(out: Path) -> list[str]:
    try:
        return [p.name for p in out.iterdir()]
    except OSError as e:
        raise CheckpointError(f"{out}: cannot list checkpoint directory "
                              f"({_one_line(e)})") from None


def _highest(out: Path, names: set[str], stage: int | None) -> Path | None:
    """The verified checkpoint of the highest stage among ``names`` (``<= stage``)."""
    stages = sorted((int(_STAGE_RE.match(n).group(1)) for n in names), reverse=True)
    for s in stages:
        if stage is None or s <= stage:
            best = stage_dir(out, s)
            _verify(best)
            return best
    return None


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(file, device="cpu")
    except Exception as e:
        raise CheckpointError(f"{file}: not a valid safetensors file ({_one_line(e)})") from None


def _read(directory: Path) -> Checkpoint:
    state = _verify(directory)
    model_file, opt_file, rng_file = (directory / n for n in TENSOR_FILES)
    model = _load_tensors(model_file)
    opt_tensors = _load_tensors(opt_file)
    rng_tensors = _load_tensors(rng_file)

    keys = state["model_keys"]
    if not isinstance(keys, list) or set(keys) != set(model) or len(keys) != len(model):
        raise CheckpointError(f"{model_file}: tensor names do not match state.json's model_keys")
    used: set[str] = set()
    try:
        opt = _decode(state["optimizer"], opt_tensors, used)
        sched = _decode(state["scheduler"], opt_tensors, used)
        config = _decode(state["config"], {}, set())
        metrics = _decode(state["metrics"], {}, set())
        extra = _decode(state["extra"], {}, set())
    except KeyError as e:
        raise CheckpointError(f"{opt_file}: missing tensor {e.args[0]!r} named in "
                              "state.json") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{directory / STATE_FILE}: malformed value "
                              f"({_one_line(e)})") from None
    unused = sorted(set(opt_tensors) - used)
    if unused:
        raise CheckpointError(f"{opt_file}: tensor {unused[0]!r} is not named in state.json")
    return Checkpoint(
        model_state={k: model[k] for k in keys},
        optimizer_state=opt, scheduler_state=sched, config=config,
        stage=state["stage"], step=state["step"], metrics=metrics, passed=state["passed"],
        extra=extra, rng=_rng_from_parts(rng_tensors, state["rng"], rng_file),
        path=directory, created=state["created"], versions=state["versions"],
        attachments=tuple(state.get("attachments", {})))
