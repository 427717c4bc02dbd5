"""The weight-token channel, LM side: low-rank deltas on an LM's own linear layers.

Every invariant runs on tiny random Llama, Qwen2, Mistral and GPT-2 models that are saved
with ``save_pretrained`` and loaded back with ``AutoModelForCausalLM`` (the real path).
References are built independently of the hooks: a deep copy of the model whose target
weights are replaced by ``W + U Vᵀ`` (``W + (U Vᵀ)ᵀ`` for GPT-2's Conv1D). Seeded; one
thread; nothing touches the network.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import copy  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    DynamicCache,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)
from transformers.pytorch_utils import Conv1D  # noqa: E402

from llamacpu.llm.channel import (  # noqa: E402
    ChannelConfig,
    DeltaLayers,
    LowRankDelta,
    MetaTokens,
    WeightChannel,
    WeightHead,
    deltas,
    wrap_linear_layers,
)
from llamacpu.llm.config import ControllerConfig  # noqa: E402
from llamacpu.llm.models import build_tiny_llama, call_lm  # noqa: E402
from llamacpu.llm.tokenizer import SymbolTokenizer  # noqa: E402

torch.set_num_threads(1)
VOCAB = 61
LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ARCHS = {
    "llama": (LlamaConfig, LLAMA_LIKE),
    "qwen2": (Qwen2Config, LLAMA_LIKE),     # q/k/v carry biases
    "mistral": (MistralConfig, LLAMA_LIKE),
    "gpt2": (GPT2Config, ("c_attn", "c_proj", "c_fc", "lm_head")),  # Conv1D; tied lm_head
}


def _config(arch: str):
    cls = ARCHS[arch][0]
    if arch == "gpt2":
        return cls(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return cls(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch → a directory holding a seeded tiny random model of that architecture."""
    out = {}
    for i, arch in enumerate(ARCHS):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_config(_config(arch))
        path = tmp_path_factory.mktemp(arch)
        model.save_pretrained(path)
        out[arch] = path
    return out


def load(saved, arch: str) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(saved[arch], local_files_only=True).eval()


def random_deltas(layers: DeltaLayers, B: int, r: int = 2, scale: float = 0.2,
                  seed: int = 0) -> dict[str, LowRankDelta]:
    g = torch.Generator().manual_seed(seed)
    return {n: LowRankDelta(torch.randn(B, o, r, generator=g) * scale,
                            torch.randn(B, i, r, generator=g) * scale)
            for n, (o, i) in layers.shapes.items()}


def zero_like(ds: dict[str, LowRankDelta]) -> dict[str, LowRankDelta]:
    """Deltas of ``ds``'s shapes with U = 0 that still need gradients (so the delta term
    is really computed, not skipped)."""
    return {n: LowRankDelta(torch.zeros_like(d.u, requires_grad=True), d.v)
            for n, d in ds.items()}


def zero_identical_then_delta(model: nn.Module, ds: dict[str, LowRankDelta]
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Asserts a zero delta of ``ds``'s shapes leaves the logits of a fixed 2×5 batch
    bit-identical; returns (unwrapped logits, logits under ``ds``)."""
    ids = tokens(2, 5)
    with torch.no_grad():
        base = model(ids).logits
        with deltas(model, zero_like(ds)):
            assert torch.equal(model(ids).logits, base)
        with deltas(model, ds):
            return base, model(ids).logits


def merged_copy(model: nn.Module, layers: DeltaLayers, ds: dict[str, LowRankDelta],
                row: int) -> nn.Module:
    """A copy of ``model`` (hooks removed) with row ``row``'s deltas merged into the weights."""
    ref = copy.deepcopy(model)
    for name in ds:
        wrapped = ref.get_submodule(name)
        wrapped._forward_hooks.clear()
    for name, (u, v) in ds.items():
        mod = ref.get_submodule(name)
        dw = u[row] @ v[row].T                                           # [out, in]
        if isinstance(mod, Conv1D):
            dw = dw.T                                                    # Conv1D weight [in, out]
        # a new Parameter: GPT-2's lm_head is tied to the input embedding, the delta is not
        mod.weight = nn.Parameter(mod.weight.detach() + dw)
    return ref


def tokens(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_delta_is_bit_identical(saved, arch):
    model = load(saved, arch)
    ids = tokens(3, 9)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0                                                     # a left-padded row
    with torch.no_grad():
        base = model(ids, attention_mask=mask).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    layers = wrap_linear_layers(model, ARCHS[arch][1])
    assert model.state_dict().keys() == state.keys()                  # no renamed parameters
    zero = {n: LowRankDelta(torch.zeros(3, o, 2), torch.zeros(3, i, 2))
            for n, (o, i) in layers.shapes.items()}
    # zero U that requires grad (a zero-initialised head): the delta term IS computed
    u0 = {n: LowRankDelta(torch.zeros(3, o, 2, requires_grad=True), torch.randn(3, i, 2))
          for n, (o, i) in layers.shapes.items()}
    mixed = random_deltas(layers, 3)
    for d in mixed.values():
        d.u[0] = 0                                                      # row 0 zero, others not
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, base)   # hooked, no delta
        with deltas(model, zero):
            assert torch.equal(model(ids, attention_mask=mask).logits, base)
        with deltas(model, u0):
            assert all(layers[n].delta is not None for n in u0)        # not skipped
            assert torch.equal(model(ids, attention_mask=mask).logits, base)
        with deltas(model, mixed):
            out = model(ids, attention_mask=mask).logits
        assert torch.equal(out[0], base[0])
        assert (out[2] - base[2]).abs().max() > 1e-3                   # the others did change
        assert torch.equal(model(ids, attention_mask=mask).logits, base)   # cleared on exit
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    layers.remove()
    assert all(not layers[n].module._forward_hooks for n in layers)


@pytest.mark.parametrize("arch", ARCHS)
def test_known_delta_acts_as_merged_weights(saved, arch):
    model = load(saved, arch)
    layers = wrap_linear_layers(model, ARCHS[arch][1])
    ids = tokens(3, 8)
    ds = random_deltas(layers, 3, seed=arch.__len__())
    with torch.no_grad():
        base = model(ids).logits
        with deltas(model, ds):
            out = model(ids).logits
        one = {n: LowRankDelta(d.u[1:2], d.v[1:2]) for n, d in ds.items()}
        with deltas(model, one):
            single = model(ids[1:2]).logits
        for row in range(3):
            ref = merged_copy(model, layers, ds, row)(ids[row:row + 1]).logits
            assert (ref[0] - base[row]).abs().max() > 1e-3            # the delta matters
            torch.testing.assert_close(out[row], ref[0], atol=1e-5, rtol=1e-5)
            if row == 1:
                torch.testing.assert_close(single[0], ref[0], atol=1e-5, rtol=1e-5)
                merged = copy.deepcopy(model)
                for n, d in one.items():                               # DeltaLayer.weight_delta
                    mod = merged.get_submodule(n)
                    mod.weight = nn.Parameter(mod.weight.detach() + layers[n].weight_delta(d))
                    mod._forward_hooks.clear()
                torch.testing.assert_close(merged(ids[1:2]).logits, ref, atol=1e-5, rtol=1e-5)


def _keys(cache: DynamicCache) -> list[torch.Tensor]:
    return [layer.keys.clone() for layer in cache.layers]


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_prefix_without_delta_continuation_with(saved, arch):
    model = load(saved, arch)
    layers = wrap_linear_layers(model, ARCHS[arch][1])
    ids = tokens(2, 10, seed=3)
    S = 6
    prefix, cont = ids[:, :S], ids[:, S:]
    ds = random_deltas(layers, 2, seed=7)
    with torch.no_grad():
        first, past = call_lm(model, None, input_ids=prefix, use_cache=True)  # no delta: cached
        cached = _keys(past)
        with deltas(model, ds):
            out = call_lm(model, past, input_ids=cont, use_cache=True)[0].logits
        after = _keys(past)
        for k0, k1 in zip(cached, after):                              # cache kept, not redone
            assert torch.equal(k1[:, :, :S], k0)
        for row in range(2):
            p = call_lm(model, None, input_ids=prefix[row:row + 1], use_cache=True)[1]  # unwrapped
            ref = call_lm(merged_copy(model, layers, ds, row), p, input_ids=cont[row:row + 1],
                          use_cache=True)[0].logits
            torch.testing.assert_close(out[row], ref[0], atol=1e-5, rtol=1e-5)
            # and NOT the same as the delta on the prefix too
            full = merged_copy(model, layers, ds, row)(ids[row:row + 1]).logits[0, S:]
            assert (full - out[row]).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_channel_matches_hand_built_reference(saved, arch):
    """WeightChannel: prefix + <weights> m_1..m_M without deltas, </weights> + rest with."""
    model = load(saved, arch)
    torch.manual_seed(0)
    ch = WeightChannel(model, ChannelConfig(patterns=ARCHS[arch][1][:3], rank=3, n_meta=2,
                                            init_std=0.05))
    emb = model.get_input_embeddings()
    ids = tokens(2, 7, seed=5)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0                                                     # left padding
    cont = emb(tokens(2, 3, seed=6))
    with torch.no_grad():
        out = ch(model, emb(ids), mask, cont)
        assert out.logits.shape == (2, 4, VOCAB)
        assert out.meta_hidden.shape == (2, 2, 32)
        for row in range(2):
            keep = mask[row].bool()
            x = torch.cat([emb(ids[row:row + 1, keep]), ch.meta.block(1)], 1)
            p, past = call_lm(model, None, inputs_embeds=x, use_cache=True,
                              output_hidden_states=True)
            torch.testing.assert_close(p.hidden_states[-1][0, -2:], out.meta_hidden[row],
                                       atol=1e-5, rtol=1e-5)
            ref = merged_copy(model, ch.layers, out.deltas, row)
            y = torch.cat([ch.meta.close_block(1), cont[row:row + 1]], 1)
            r = call_lm(ref, past, inputs_embeds=y, use_cache=True)[0].logits
            torch.testing.assert_close(out.logits[row], r[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("zero_init", [True, False])
def test_gradients_reach_the_head_and_it_learns(saved, zero_init):
    model = load(saved, "qwen2")
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    ch = WeightChannel(model, ChannelConfig(patterns=("q_proj", "v_proj", "down_proj", "lm_head"),
                                            zero_init=zero_init))
    emb = model.get_input_embeddings()
    prefix, cont = emb(tokens(4, 6, seed=8)), emb(tokens(4, 3, seed=9))
    mask = torch.ones(4, 6, dtype=torch.long)
    target = tokens(4, 4, seed=10)

    def loss_fn():
        logits = ch(model, prefix, mask, cont).logits                  # [B, 1 + T, V]
        return nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())

    loss = loss_fn()
    loss.backward()
    for k in range(len(ch.head.names)):
        assert ch.head.proj_u[k].weight.grad.abs().sum() > 0           # every target's U
    if not zero_init:
        for name, p in ch.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the head alone (LM and metatokens frozen) learns to fit the later positions' targets
    opt = torch.optim.Adam(ch.head.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(25):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert first > 3.5 and loss.item() < 0.5


def test_weight_head_shapes_dtypes_and_scale():
    targets = {"a.q": (8, 5), "b.v": (3, 12)}
    torch.manual_seed(0)
    head = WeightHead(16, targets, rank=4, n_meta=3)
    h = torch.randn(2, 3, 16) * 7                                      # LayerNorm'd inside
    out = head(h)
    assert list(out) == ["a.q", "b.v"]
    for name, (o, i) in targets.items():
        assert out[name].u.shape == (2, o, 4) and out[name].v.shape == (2, i, 4)
        assert out[name].u.dtype == torch.float32
    assert head(h.to(torch.bfloat16))["a.q"].u.dtype == torch.float32   # the head's dtype
    assert head.double()(h)["b.v"].v.dtype == torch.float64
    big = WeightHead(64, {"w": (64, 64)}, rank=4, n_meta=3)(torch.randn(64, 3, 64))
    dw = big["w"].u @ big["w"].v.transpose(1, 2)                        # [B, O, I]
    assert 2e-4 < dw.std().item() < 5e-3                                # ~ init_std = 1e-3
    zero = WeightHead(16, targets, rank=2, n_meta=3, zero_init=True)(h)
    assert all(not d.u.any() and d.v.abs().sum() > 0 for d in zero.values())
    with pytest.raises(ValueError, match=r"\[B, 3, 16\]"):
        head(torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="out_features, in_features"):
        WeightHead(16, {"x": (0, 4)}, rank=2, n_meta=1)
    with pytest.raises(ValueError, match="at least one target"):
        WeightHead(16, {}, rank=2, n_meta=1)


def test_clear_errors(saved):
    model = load(saved, "gpt2")
    with pytest.raises(ValueError, match=r"'q_proj' matches no linear layer.*c_attn"):
        wrap_linear_layers(model, ["c_attn", "q_proj"])
    with pytest.raises(ValueError, match="no wrapped layers"):
        with deltas(model, {}):
            pass
    layers = wrap_linear_layers(model, [re.compile(r"transformer\.h\.0\.attn\.c_.*")])
    assert set(layers) == {"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"}
    assert layers.shapes["transformer.h.0.attn.c_attn"] == (96, 32)     # (out, in) though [in, out]
    with pytest.raises(ValueError, match="already wrapped"):
        wrap_linear_layers(model, "c_fc")
    bad = LowRankDelta(torch.zeros(1, 32, 2), torch.zeros(1, 32, 2))    # c_attn is 96 × 32
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_attn.*96×32"):
        with deltas(model, {"transformer.h.0.attn.c_attn": bad}):
            pass
    with pytest.raises(KeyError, match="not a wrapped layer"):
        with deltas(model, {"transformer.h.1.attn.c_attn": None}):
            pass
    d = LowRankDelta(torch.ones(2, 96, 1), torch.ones(2, 32, 1))
    with pytest.raises(ValueError, match="batch of 2 rows"), deltas(model, {
            "transformer.h.0.attn.c_attn": d}):
        model(tokens(3, 4))
    layers.remove()
    wrap_linear_layers(model, "c_fc")                                  # fine after remove()


def test_peft_lora_layers(saved):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load(saved, "llama"),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False)).eval()
    ids = tokens(2, 6)
    with torch.no_grad():
        base = model(ids).logits
    keys = set(model.state_dict())
    layers = wrap_linear_layers(model, ["q_proj", "v_proj", "o_proj"])
    assert set(model.state_dict()) == keys
    assert len(layers) == 6 and not any("lora_" in n or "base_layer" in n for n in layers)
    assert layers["base_model.model.model.layers.0.self_attn.q_proj"].kind == "peft:linear"
    ds = random_deltas(layers, 1, seed=4)
    zero = zero_like(ds)
    with torch.no_grad():
        with deltas(model, zero):                                      # deltas() finds the
            assert torch.equal(model(ids).logits, base)                # hooks via PeftModel
        with deltas(model, ds):
            out = model(ids).logits
        merged = copy.deepcopy(model)
        for n in layers:
            merged.get_submodule(n)._forward_hooks.clear()
        merged = merged.merge_and_unload()                             # W + LoRA
        for n, (u, v) in ds.items():
            short = n.removeprefix("base_model.model.")
            merged.get_submodule(short).weight += u[0] @ v[0].T        # + U Vᵀ
        torch.testing.assert_close(out, merged(ids).logits, atol=1e-5, rtol=1e-5)


def test_metatoken_ids_for_the_symbol_tokenizer():
    tok = SymbolTokenizer()
    torch.manual_seed(0)
    lm = build_tiny_llama(ControllerConfig(hidden_size=32, num_heads=4), len(tok))
    meta = MetaTokens(32, 3, markers=False)
    open_id, meta_ids, close_id = meta.token_ids(tok, lm.get_input_embeddings())
    assert (open_id, close_id) == (tok.weights_id, tok.weights_end_id)
    assert meta_ids == [len(tok), len(tok) + 1, len(tok) + 2]
    ids = torch.tensor([[tok.bos_id, *tok.encode("f:0"), open_id, *meta_ids, close_id]])
    x = meta.embed(ids, lm.get_input_embeddings())
    table = lm.get_input_embeddings().weight
    assert torch.equal(x[0, :5], table[ids[0, :5]])                     # ordinary ids + <weights>
    assert torch.equal(x[0, 5:8], meta.embeddings)                      # the learned rows
    assert torch.equal(x[0, 8], table[close_id])
    x.sum().backward()
    assert meta.embeddings.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="token ids must lie in"):
        meta.embed(torch.tensor([[len(tok) + 3]]), lm.get_input_embeddings())
    with pytest.raises(ValueError, match="no learned <weights> marker"):
        meta.block(1)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(conv=st.booleans(), i=st.integers(1, 6), o=st.integers(1, 6), r=st.integers(1, 3),
       B=st.integers(1, 3), T=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_hooked_layer_is_w_plus_uvt(conv, i, o, r, B, T, seed):
    """Property: a hooked layer computes x (W + U Vᵀ)ᵀ + b for each row (float64)."""
    g = torch.Generator().manual_seed(seed)
    holder = nn.Module()
    holder.f = Conv1D(o, i) if conv else nn.Linear(i, o)
    holder.double()
    with torch.no_grad():
        for p in holder.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    w = holder.f.weight.T if conv else holder.f.weight                  # [O, I]
    layers = wrap_linear_layers(holder, "f")
    d = LowRankDelta(torch.randn(B, o, r, generator=g, dtype=torch.float64),
                     torch.randn(B, i, r, generator=g, dtype=torch.float64))
    x = torch.randn(B, T, i, generator=g, dtype=torch.float64)
    with deltas(layers, {"f": d}):
        y = holder.f(x)
    want = torch.einsum("bti,boi->bto", x, w + d.u @ d.v.transpose(1, 2)) + holder.f.bias
    torch.testing.assert_close(y, want)


def test_wrapping_before_peft_keeps_working(saved):
    """Hooks set on the plain model survive get_peft_model (they sit on the base layers)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = load(saved, "mistral")
    layers = wrap_linear_layers(model, "q_proj")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"],
                                                  init_lora_weights=False)).eval()
    ids = tokens(1, 5)
    ds = random_deltas(layers, 1, seed=2)
    with torch.no_grad():
        base = peft_model(ids).logits
        with deltas(peft_model, ds):                                   # found through peft
            out = peft_model(ids).logits
        merged = copy.deepcopy(peft_model)
        for name in layers:
            merged.get_submodule("base_model.model." + name + ".base_layer")._forward_hooks.clear()
        merged = merged.merge_and_unload()
        for n, (u, v) in ds.items():
            merged.get_submodule(n).weight += u[0] @ v[0].T
        assert (out - base).abs().max() > 1e-3
        torch.testing.assert_close(out, merged(ids).logits, atol=1e-5, rtol=1e-5)


def test_bitsandbytes_4bit_layers(tmp_path):
    """Linear4bit (an nn.Linear subclass) is hooked; zero delta identical, a delta acts."""
    from transformers import BitsAndBytesConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=q,
                                                 device_map="cpu", local_files_only=True).eval()
    layers = wrap_linear_layers(model, ["q_proj", "v_proj"])
    assert layers.shapes["model.layers.0.self_attn.v_proj"] == (64, 64)
    base, out = zero_identical_then_delta(model, random_deltas(layers, 2, seed=1))
    assert (out - base).abs().max() > 1e-3


def test_channel_on_token_ids_matches_the_id_path():
    """markers=False: <weights>/</weights> are the tokenizer's ids; the channel's metatoken
    states equal an unwrapped run of the id sequence embedded by MetaTokens.embed."""
    tok = SymbolTokenizer()
    torch.manual_seed(0)
    lm = build_tiny_llama(ControllerConfig(hidden_size=32, num_heads=4), len(tok)).eval()
    emb = lm.get_input_embeddings()
    with pytest.raises(ValueError, match="marker_ids"):
        WeightChannel(lm, ChannelConfig(markers=False))
    ch = WeightChannel(lm, ChannelConfig(markers=False, n_meta=3),
                       marker_ids=(tok.weights_id, tok.weights_end_id))
    open_id, meta_ids, close_id = ch.meta.token_ids(tok, emb)
    prefix = torch.tensor([[tok.bos_id, *tok.encode("f:0>3 1>7")]])
    with torch.no_grad():
        out = ch(lm, emb(prefix), torch.ones_like(prefix))
        full = torch.cat([prefix, torch.tensor([[open_id, *meta_ids]])], 1)
        h = lm(inputs_embeds=ch.meta.embed(full, emb), output_hidden_states=True)
    torch.testing.assert_close(out.meta_hidden[0], h.hidden_states[-1][0, -3:],
                               atol=1e-5, rtol=1e-5)
    assert out.logits.shape == (1, 1, len(tok))


def test_bfloat16_model_float32_deltas(saved):
    """A float32 head's deltas on a bfloat16 LM: outputs stay bf16, zero stays identical."""
    model = load(saved, "llama").to(torch.bfloat16)
    layers = wrap_linear_layers(model, ["o_proj", "up_proj"])
    base, out = zero_identical_then_delta(model, random_deltas(layers, 2, seed=3))
    assert out.dtype == torch.bfloat16 and (out - base).abs().max() > 1e-2


def test_gradcheck_through_a_hooked_layer():
    """float64 gradcheck of y = x Wᵀ + b + (x V) Uᵀ w.r.t. x, U and V (Linear and Conv1D)."""
    torch.manual_seed(0)
    for layer in (nn.Linear(4, 3), Conv1D(3, 4)):
        holder = nn.Module()
        holder.f = layer.double()
        layers = wrap_linear_layers(holder, "f")

        def f(x, u, v, holder=holder, layers=layers):
            with deltas(layers, {"f": LowRankDelta(u, v)}):
                return holder.f(x)

        x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
        u = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
        v = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(f, (x, u, v))


def test_isolated_continuation_learns_only_through_the_channel():
    """With the prompt masked out of the continuation's attention, the deltas are its only
    path to the prompt: untrained (ΔW = 0) every row answers the same; trained ~100 steps,
    the continuation reads the prompt's first digit on fresh prompts."""
    tok = SymbolTokenizer()
    torch.manual_seed(0)
    lm = build_tiny_llama(ControllerConfig(hidden_size=32, num_heads=4, intermediate_size=64),
                          len(tok))
    ch = WeightChannel(lm, ChannelConfig(patterns=("q_proj", "v_proj", "lm_head"), rank=4,
                                         n_meta=4, zero_init=True))
    emb = lm.get_input_embeddings()
    digits = torch.tensor([tok.encode(str(i))[0] for i in range(10)])
    g = torch.Generator().manual_seed(1)

    def batch(B):
        d = torch.randint(0, 10, (B, 4), generator=g)
        prefix = torch.cat([torch.full((B, 1), tok.bos_id), digits[d]], 1)
        return emb(prefix), torch.ones_like(prefix), digits[d[:, 0]]

    x, mask, _ = batch(8)
    with torch.no_grad():
        first = ch(lm, x, mask, isolate=True).logits[:, -1]
    assert torch.allclose(first, first[:1].expand_as(first), atol=1e-6)  # prompt invisible
    opt = torch.optim.Adam([*lm.parameters(), *ch.parameters()], lr=3e-3)
    for _ in range(100):
        x, mask, target = batch(32)
        loss = nn.functional.cross_entropy(ch(lm, x, mask, isolate=True).logits[:, -1], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, mask, target = batch(200)
    with torch.no_grad():
        acc = (ch(lm, x, mask, isolate=True).logits[:, -1].argmax(-1) == target).float().mean()
    assert acc >= 0.9, acc
