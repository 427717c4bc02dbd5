"""The checkpoint format: the files of a checkpoint directory, the tagged JSON of its
state.json, and the checks every file must pass before a checkpoint is used
(:mod:`llamacpu.learn.checkpoint` saves, recovers, finds and loads checkpoints with them).

A checkpoint is one directory, ``OUT/stage_N/`` (``OUT`` defaults to ``checkpoints/``)::

    model.safetensors      every module state tensor (controller, heads, OEU), in saved order
    optimizer.safetensors  the optimizer's (and scheduler's) tensors, keys ``state.<idx>.<name>``
    rng.safetensors        torch CPU (and CUDA) generator states, numpy's MT19937 key array
    adapter/…              optional attachments: other files saved byte for byte (a PEFT
                           LoRA adapter: adapter_config.json, adapter_model.safetensors)
    state.json             format version, config, stage, step, metrics, passed, extra, the
                           optimizer's param_groups and non-tensor state, the scheduler's
                           state_dict, python ``random``'s state, sha256 and size of each
                           .safetensors file, created time, library versions, and
                           ``state_sha256``: the checksum of state.json itself, and the
                           sha256 and size of every attachment

Non-tensor values (config, metrics, extra, param_groups, scheduler state) are stored as JSON
with three tags so they come back with the same types: ``{"__tuple__": [...]}``,
``{"__dict__": [[key, value], ...]}`` (a dict whose keys are not all strings, e.g. the
optimizer's ``state`` keyed by int) and ``{"__tensor__": "key"}`` (a tensor stored in
optimizer.safetensors; allowed only in optimizer and scheduler state).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llamacpu.core.isa import LlamacpuError

__all__ = [
    "CheckpointError", "FORMAT", "FORMAT_VERSION", "MODEL_FILE", "OPTIMIZER_FILE", "RNG_FILE",
    "STATE_FILE",
]

FORMAT = "llamacpu.checkpoint"
FORMAT_VERSION = 1
"""Bumped whenever the layout changes; a loader refuses versions it does not know."""
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "state.json"
TENSOR_FILES = (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE)

_TAGS = ("__tuple__", "__dict__", "__tensor__")
_REQUIRED = (
    "stage", "step", "passed", "created", "config", "metrics", "extra", "optimizer",
    "scheduler", "model_keys", "rng", "files", "versions",
)


class CheckpointError(LlamacpuError):
    """A checkpoint that cannot be written, found or read; the message is one line."""


def _check_attachment(rel: str) -> None:
    """An attachment's path must stay inside the checkpoint and not shadow its own files."""
    parts = Path(rel).parts
    if (not rel or Path(rel).is_absolute() or ".." in parts or rel != Path(rel).as_posix()
            or parts[0] in (*TENSOR_FILES, STATE_FILE)):
        raise CheckpointError(f"attachment path {rel!r} must be a relative path inside the "
                              f"checkpoint, without '..', other than its own files")


def _state_text(body: dict) -> str:
    """state.json's text: ``body`` plus ``state_sha256``, the checksum of body's own text."""
    digest = hashlib.sha256(_dump(body).encode("ascii")).hexdigest()
    return _dump({**body, "state_sha256": digest})


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=True, allow_nan=True)  # keeps dict order


def _read_state(directory: Path) -> dict:
    file = directory / STATE_FILE
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read ({_one_line(e)})") from None
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON (line {e.lineno} column {e.colno}: "
                              f"{e.msg})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a llamacpu checkpoint (no format {FORMAT!r})")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{file}: format version {version!r}; this llamacpu reads "
                              f"version {FORMAT_VERSION}")
    digest = state.pop("state_sha256", None)
    if digest != hashlib.sha256(_dump(state).encode("ascii")).hexdigest():
        raise CheckpointError(f"{file}: checksum mismatch (the file was edited or corrupted)")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{file}: missing field {missing[0]!r}")
    files = state["files"]
    if not isinstance(files, dict) or sorted(files) != sorted(TENSOR_FILES):
        raise CheckpointError(f"{file}: 'files' must list exactly {', '.join(TENSOR_FILES)}")
    return state


def _verify(directory: Path) -> dict:
    """Check state.json, every tensor file's and attachment's size and sha256; return the
    parsed state."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory")
    state = _read_state(directory)
    attached = state.get("attachments", {})
    if not isinstance(attached, dict):
        raise CheckpointError(f"{directory / STATE_FILE}: 'attachments' must be an object")
    for rel in attached:
        _check_attachment(rel)
    for name, meta in [*((n, state["files"][n]) for n in TENSOR_FILES), *attached.items()]:
        file = directory / name
        try:
            size = file.stat().st_size
            if size != meta["bytes"]:
                raise CheckpointError(f"{file}: {size} bytes, expected {meta['bytes']} "
                                      "(truncated or overwritten)")
            h = hashlib.sha256()
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            raise CheckpointError(f"{file}: missing") from None
        except OSError as e:
            raise CheckpointError(f"{file}: cannot read ({_one_line(e)})") from None
        if h.hexdigest() != meta["sha256"]:
            raise CheckpointError(f"{file}: sha256 mismatch (corrupted)")
    return state


# --------------------------------------------------------------------------- tagged JSON


def _encode(obj: Any, where: str, tensors: dict[str, torch.Tensor] | None = None,
            key: str = "") -> Any:
    """JSON-able form of ``obj``: tuples, non-string-keyed dicts and tensors tagged.

    Tensors go into ``tensors`` under a dotted key path (``state.0.exp_avg``) and are
    replaced by ``{"__tensor__": key}``; with ``tensors=None`` a tensor is an error.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, np.void):
        return _encode(obj.item(), where, tensors, key)
    if isinstance(obj, torch.Tensor):
        if tensors is None:
            raise CheckpointError(f"{where}: tensors are not stored here; use .tolist() or "
                                  ".item(), or put it in model_state")
        k, n = key, 1
        while k in tensors:
            n += 1
            k = f"{key}#{n}"
        tensors[k] = obj
        return {"__tensor__": k}

    def sub(v: Any, label: Any) -> Any:
        return _encode(v, f"{where}[{label!r}]", tensors, f"{key}.{label}" if key else str(label))

    if isinstance(obj, tuple):
        return {"__tuple__": [sub(v, i) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [sub(v, i) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not any(t in obj for t in _TAGS):
            return {k: sub(v, k) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, f"{where} key", None), sub(v, k)]
                             for k, v in obj.items()]}
    raise CheckpointError(f"{where}: cannot store a {type(obj).__name__} (JSON values, "
                          "tuples and dicts only)")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], used: set[str]) -> Any:
    """Inverse of :func:`_encode`; a missing tensor raises KeyError(its key)."""
    if isinstance(obj, list):
        return [_decode(v, tensors, used) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1:
            (tag, v), = obj.items()
            if tag == "__tuple__":
                return tuple(_decode(x, tensors, used) for x in v)
            if tag == "__dict__":
                return {_decode(k, tensors, used): _decode(x, tensors, used) for k, x in v}
            if tag == "__tensor__":
                t = tensors[v]
                used.add(v)
                return t
        return {k: _decode(v, tensors, used) for k, v in obj.items()}
    return obj


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
