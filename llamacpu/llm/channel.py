"""The weight-token channel, LM side (layer 9 of docs/architecture.md): metatokens → weight deltas.

The controller writes *computation*, not only data: after ``<weights> m_1 … m_M`` the final
hidden states at the M metatoken positions are decoded by a :class:`WeightHead` into rank-r
factors ``(U, V)`` for chosen linear layers, and those deltas then act on the LM's OWN
layers for every later position of the same batch row: ``W ← W + U Vᵀ``, row by row. (The
same factors, stored in memory as a WEIGHTS slot, are what APPLY hands the OEU; that is the
ISA side, see ``docs/homoiconic.md``.)

Pieces, bottom-up:

- :func:`wrap_linear_layers` hooks the model's linear layers whose names match a pattern
  (``nn.Linear`` and its subclasses such as bitsandbytes' ``Linear4bit``, GPT-2's
  ``Conv1D`` whose weight is ``[in, out]``, and PEFT tuner layers such as ``lora.Linear``).
  A forward hook adds ``(x V) Uᵀ`` to the layer's output while a delta is set; the module
  tree, parameter names and ``state_dict`` stay exactly as they were (an adapter that keeps
  the base layer and adds to its output, as PEFT's LoRA does).
- :func:`deltas` (a context manager) or :meth:`DeltaLayers.set` / :meth:`DeltaLayers.clear`
  set a per-batch-row :class:`~llamacpu.machine.oeu.LowRankDelta` on each hooked layer.
- :class:`MetaTokens` holds the M learned metatoken embeddings (and the ``<weights>``/
  ``</weights>`` markers for models without ids for them).
- :class:`WeightHead` decodes ``[B, M, H]`` metatoken hidden states into one
  ``LowRankDelta`` per target layer.
- :class:`WeightChannel` ties them together: :meth:`WeightChannel.forward` runs
  ``prefix <weights> m_1 … m_M`` WITHOUT deltas (cached), decodes the deltas, and runs the
  continuation ``</weights> …`` on the cache WITH them.

**Metatokens are input embeddings, not vocabulary.** The pretrained-model path feeds the
LM continuous marker embeddings (``inputs_embeds``) rather than adding rows to a
pretrained vocabulary, so a metatoken is a learned row of ``MetaTokens.embeddings``
(``nn.Parameter [M, H]``) appended to the sequence. For the character tokenizer
(``controller.SymbolTokenizer``) the ids ``E + k`` (k < M, E the LM embedding table's
size, ``len(tokenizer)`` for the tiny Llama) name the same rows
(:meth:`MetaTokens.token_ids`, :meth:`MetaTokens.embed`): they lie past the tokenizer's
vocabulary, so neither the tokenizer nor the LM's embedding table changes size (no
``resize_token_embeddings``, checkpoints keep their shapes), and ``<weights>``/``</weights>``
use the ids the tokenizer already reserves.

**KV cache.** A delta acts on whatever the hooked layers compute while it is set. The
channel computes the prefix and the metatokens without a delta and keeps their cache; the
continuation is fed with that cache while the delta is set, so its queries, keys
and values see ``W + U Vᵀ`` and the cached positions are neither recomputed nor changed.
Deltas therefore apply from ``</weights>`` (the first position after ``m_M``) on.

**Zero delta is bit-identical.** The hook computes the base layer exactly as the unwrapped
model does and adds the delta term as a separate tensor, ``y = base(x) + (x V) Uᵀ``. For a
zero ``U`` or ``V`` (and finite x) the term is exactly ±0, and adding ±0 leaves every float
unchanged (``torch.equal`` holds; only the sign of an exact zero output may flip), so a
zero delta, or a zero row of a batch of deltas, gives the unwrapped model's outputs bit
for bit while gradients still reach the factors (a zero-initialised head trains). With no
delta set, or a constant (no-grad) all-zero delta, the term is skipped entirely.

Shape letters::

    B  batch                 T  positions in one forward
    H  LM hidden size        M  metatokens per <weights> block
    r  rank of a delta       O  out features of a target layer
    I  in features of a target layer
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.pytorch_utils import Conv1D

from llamacpu.llm.models import call_lm
from llamacpu.machine.oeu import LowRankDelta

__all__ = [
    "LowRankDelta", "DeltaLayer", "DeltaLayers", "wrap_linear_layers", "deltas", "MetaTokens",
    "WeightHead", "PromptLookup", "ChannelConfig", "ChannelOutput", "WeightChannel",
]

Pattern = str | re.Pattern[str]


# ================================================================ hooking the LM's layers

def _in_out(module: nn.Module) -> tuple[int, int, str] | None:
    """(in_features, out_features, kind) of a layer the channel can hook, else None."""
    if isinstance(module, Conv1D):
        return module.nx, module.nf, "conv1d"
    if isinstance(module, nn.Linear):  # also bitsandbytes Linear8bitLt / Linear4bit
        return module.in_features, module.out_features, "linear"
    base = getattr(module, "get_base_layer", None)   # a PEFT tuner layer (lora.Linear, ...)
    if callable(base) and base() is not module:
        inner = _in_out(base())
        if inner is not None:
            return inner[0], inner[1], f"peft:{inner[2]}"
    return None


def _matches(name: str, pattern: Pattern) -> bool:
    """PEFT's convention: a string matches the name or its dotted suffix (``"q_proj"``
    matches ``model.layers.0.self_attn.q_proj``); a compiled regex must fullmatch."""
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    return name == pattern or name.endswith("." + pattern)


class DeltaLayer:
    """The forward hook on one linear layer: adds ``(x V) Uᵀ`` per batch row while set.

    ``delta.u [B, O, r]``, ``delta.v [B, I, r]`` (B = 1 broadcasts over the batch). The
    equivalent weight is ``W + U Vᵀ`` in ``nn.Linear``'s ``[O, I]`` layout, i.e.
    ``W + (U Vᵀ)ᵀ`` for GPT-2's ``Conv1D`` whose weight is ``[I, O]``.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        io = _in_out(module)
        if io is None:
            raise TypeError(f"{name} is a {type(module).__name__}, not a linear layer")
        self.name, self.module = name, module
        self.in_features, self.out_features, self.kind = io
        self.delta: LowRankDelta | None = None
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features), the ``nn.Linear`` weight shape."""
        return self.out_features, self.in_features

    def check(self, delta: LowRankDelta) -> None:
        """Raise a ValueError naming the layer unless ``delta`` fits it."""
        u, v = delta
        if u.dim() != 3 or v.dim() != 3:
            raise ValueError(f"delta for {self.name}: u and v must be [B, out, r] and [B, in, r], "
                             f"got {tuple(u.shape)} and {tuple(v.shape)}")
        if (u.shape[1], v.shape[1]) != self.shape:
            raise ValueError(f"delta for {self.name}: factors give a {u.shape[1]}×{v.shape[1]} "
                             f"delta but the layer's weight is {self.out_features}×"
                             f"{self.in_features} (out × in); u is {tuple(u.shape)}, v is "
                             f"{tuple(v.shape)}")
        if u.shape[0] != v.shape[0] or u.shape[2] != v.shape[2]:
            raise ValueError(f"delta for {self.name}: u {tuple(u.shape)} and v {tuple(v.shape)} "
                             f"disagree on batch or rank")

    def set(self, delta: LowRankDelta | None) -> None:
        """Set (or with None clear) the delta; a constant all-zero delta is skipped."""
        if delta is not None:
            delta = LowRankDelta(*delta)
            self.check(delta)
            constant = not (delta.u.requires_grad or delta.v.requires_grad)
            if constant and not (delta.u.any() and delta.v.any()):
                delta = None   # exactly zero and needs no gradient: nothing to add
        self.delta = delta

    def weight_delta(self, delta: LowRankDelta, row: int = 0) -> Tensor:
        """Row ``row``'s delta in the layout of this layer's weight (``[I, O]`` for Conv1D)."""
        self.check(delta)
        dw = delta.u[row] @ delta.v[row].T                                  # [O, I]
        return dw.T if self.kind.endswith("conv1d") else dw

    def remove(self) -> None:
        """Detach the hook; the layer is the plain layer again."""
        self._handle.remove()
        self.delta = None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, y: Tensor) -> Tensor | None:
        d = self.delta
        if d is None:
            return None
        x = args[0] if args else next(iter(kwargs.values()))               # [B, ..., I]
        B = d.u.shape[0]
        if B != 1 and x.shape[0] != B:
            raise ValueError(f"{self.name}: the delta is set for a batch of {B} rows but the "
                             f"layer got input {tuple(x.shape)}")
        xb = x.reshape(x.shape[0], -1, self.in_features).to(d.v.dtype)      # [B, T, I]
        # (x V) Uᵀ per batch row: [B, T, I]·[B, I, r] → [B, T, r]; ·[B, r, O] → [B, T, O]
        extra = (xb @ d.v) @ d.u.transpose(1, 2)
        return y + extra.reshape(y.shape).to(y.dtype)


class DeltaLayers(Mapping[str, DeltaLayer]):
    """The hooked layers of one model, by the names they had when they were wrapped."""

    def __init__(self, layers: Mapping[str, DeltaLayer]) -> None:
        self._layers = dict(layers)

    def __getitem__(self, name: str) -> DeltaLayer:
        try:
            return self._layers[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a wrapped layer; wrapped: "
                           f"{_preview(self._layers)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """``{name: (out_features, in_features)}``: the ``targets`` of a :class:`WeightHead`."""
        return {n: layer.shape for n, layer in self._layers.items()}

    def set(self, deltas: Mapping[str, LowRankDelta | None]) -> None:
        """Set the given layers' deltas (all checked before any is set); others unchanged."""
        for name, d in deltas.items():
            layer = self[name]   # KeyError naming the wrapped layers
            if d is not None:
                layer.check(LowRankDelta(*d))
        for name, d in deltas.items():
            self._layers[name].set(d)

    def clear(self) -> None:
        """No delta on any layer."""
        for layer in self._layers.values():
            layer.delta = None

    def remove(self) -> None:
        """Remove every hook (the model is unwrapped again)."""
        for layer in self._layers.values():
            layer.remove()


def _preview(names: Sequence[str] | Mapping[str, Any], k: int = 6) -> str:
    names = list(names)
    more = f", … ({len(names)} in all)" if len(names) > k else ""
    return ", ".join(names[:k]) + more if names else "(none)"


_ATTR = "_llamacpu_delta_layers"


def wrap_linear_layers(model: nn.Module, patterns: Pattern | Sequence[Pattern]) -> DeltaLayers:
    """Hook every linear layer of ``model`` whose name matches one of ``patterns``.

    A string pattern matches a module name or its dotted suffix (``"q_proj"``,
    ``"mlp.down_proj"``, ``"attn.c_attn"``), a compiled regex must match the whole name
    (``re.compile(r".*layers\\.1\\..*_proj")``). Matching layers: ``nn.Linear`` (and
    subclasses, e.g. bitsandbytes), GPT-2's ``Conv1D``, PEFT tuner layers (the hook goes on
    the tuner layer, so the delta adds to base + LoRA; the base layer inside is not hooked
    again). Wrapping a model twice is an error; :meth:`DeltaLayers.remove` unwraps it.
    Raises ValueError when a pattern matches no linear layer, naming the candidates.
    """
    if isinstance(patterns, (str, re.Pattern)):
        patterns = (patterns,)
    patterns = tuple(patterns)
    if not patterns:
        raise ValueError("wrap_linear_layers needs at least one pattern")
    old = model.__dict__.get(_ATTR)
    if old is not None and any(layer._handle.id in layer.module._forward_hooks
                               for layer in old.values()):
        raise ValueError("this model is already wrapped; call .remove() on its DeltaLayers first")
    candidates: dict[str, nn.Module] = {}
    inside_tuner: set[str] = set()
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in inside_tuner):
            continue   # a PEFT layer's base_layer / lora_A / lora_B: the tuner layer is hooked
        if _in_out(module) is not None:
            candidates[name] = module
            if _in_out(module)[2].startswith("peft:"):
                inside_tuner.add(name)
    for p in patterns:
        if not any(_matches(n, p) for n in candidates):
            shown = p.pattern if isinstance(p, re.Pattern) else p
            raise ValueError(f"pattern {shown!r} matches no linear layer of "
                             f"{type(model).__name__}; linear layers: {_preview(candidates, 8)}")
    chosen = {n: m for n, m in candidates.items() if any(_matches(n, p) for p in patterns)}
    layers = DeltaLayers({n: DeltaLayer(n, m) for n, m in chosen.items()})
    model.__dict__[_ATTR] = layers   # a plain attribute: no submodule, no state_dict entry
    return layers


def _layers_of(model: nn.Module | DeltaLayers) -> DeltaLayers:
    if isinstance(model, DeltaLayers):
        return model
    m: Any = model
    while m is not None:   # PeftModel → LoraModel → the model that was wrapped
        found = m.__dict__.get(_ATTR)
        if found is not None:
            return found
        children = m.__dict__.get("_modules", {})
        m = children.get("base_model", children.get("model"))
    raise ValueError(f"{type(model).__name__} has no wrapped layers; call "
                     f"wrap_linear_layers(model, patterns) first")


@contextmanager
def deltas(model: nn.Module | DeltaLayers,
           mapping: Mapping[str, LowRankDelta | None]) -> Iterator[DeltaLayers]:
    """``with deltas(model, {name: LowRankDelta}): model(...)`` — set, run, clear.

    Every forward inside the block (prefill or cached continuation) sees ``W + U Vᵀ`` on
    the named layers, per batch row; the previous deltas are restored on exit.
    """
    layers = _layers_of(model)
    before = {n: layers[n].delta for n in mapping}
    layers.set(mapping)
    try:
        yield layers
    finally:
        for n, d in before.items():
            layers._layers[n].delta = d


# ================================================================ metatokens and the head

class MetaTokens(nn.Module):
    """M learned metatoken embeddings (and learned ``<weights>``/``</weights>`` markers).

    ``embeddings [M, H]`` are appended to a sequence as ``inputs_embeds``. ``markers=True``
    adds learned ``open``/``close`` embeddings [H] for models that have no token ids for
    ``<weights>``/``</weights>`` (pretrained LMs fed continuous markers); the character
    tokenizer's path uses its reserved ids through the LM's own embedding table instead
    (:meth:`embed`). Initialised like an HF embedding table (normal, ``init_std``).
    """

    def __init__(self, hidden: int, n_meta: int, *, markers: bool = True,
                 init_std: float = 0.02) -> None:
        super().__init__()
        if hidden < 1 or n_meta < 1:
            raise ValueError(f"MetaTokens needs hidden >= 1 and n_meta >= 1, got {hidden}, "
                             f"{n_meta}")
        self.hidden, self.n_meta = hidden, n_meta
        self.embeddings = nn.Parameter(torch.randn(n_meta, hidden) * init_std)   # [M, H]
        if markers:
            self.open = nn.Parameter(torch.randn(hidden) * init_std)              # [H]
            self.close = nn.Parameter(torch.randn(hidden) * init_std)             # [H]
        else:
            self.open = self.close = None

    def block(self, batch: int) -> Tensor:
        """``<weights> m_1 … m_M`` for ``batch`` rows: [B, 1 + M, H] (learned markers)."""
        if self.open is None:
            raise ValueError("MetaTokens(markers=False) has no learned <weights> marker; "
                             "embed the tokenizer's ids with .embed(ids, lm_embedding)")
        x = torch.cat([self.open[None], self.embeddings])                        # [1 + M, H]
        return x.expand(batch, -1, -1)

    def close_block(self, batch: int) -> Tensor:
        """``</weights>`` for ``batch`` rows: [B, 1, H] (learned marker)."""
        if self.close is None:
            raise ValueError("MetaTokens(markers=False) has no learned </weights> marker")
        return self.close.expand(batch, 1, -1)

    def token_ids(self, tokenizer: Any, lm_embedding: nn.Embedding) -> tuple[int, list[int], int]:
        """(``<weights>`` id, metatoken ids, ``</weights>`` id) for a SymbolTokenizer.

        Metatoken k has id ``E + k`` where E is the LM embedding table's size (at least the
        tokenizer's vocabulary): past every real token, embedded by :meth:`embed`, never
        decoded as text.
        """
        base = lm_embedding.num_embeddings
        if base < len(tokenizer):
            raise ValueError(f"the LM's embedding table has {base} rows, fewer than the "
                             f"tokenizer's {len(tokenizer)} tokens")
        return tokenizer.weights_id, list(range(base, base + self.n_meta)), \
            tokenizer.weights_end_id

    def embed(self, ids: Tensor, lm_embedding: nn.Embedding) -> Tensor:
        """Embeddings [B, S, H] of ids [B, S]: ids below the LM table's size E through the
        table, ids ``E + k`` (k < M) as metatoken k (gradients reach ``embeddings``)."""
        n = lm_embedding.num_embeddings
        meta = ids >= n
        if (ids < 0).any() or (ids >= n + self.n_meta).any():
            raise ValueError(f"token ids must lie in 0..{n + self.n_meta - 1} (vocabulary "
                             f"{n} + {self.n_meta} metatokens), got {ids.min()}..{ids.max()}")
        x = lm_embedding(ids.clamp(max=n - 1))                                   # [B, S, H]
        if meta.any():
            m = self.embeddings[(ids - n).clamp(min=0)].to(x.dtype)              # [B, S, H]
            x = torch.where(meta[..., None], m, x)
        return x


class WeightHead(nn.Module):
    """Decodes metatoken hidden states [B, M, H] into one LowRankDelta per target layer.

    Per target ``t`` with weight ``O × I``: the LayerNorm'd states are mixed into r codes
    for each side, ``c = mix_t · LN(h)`` (``mix_t [2, r, M]``), and projected,
    ``U = P_u c_u [B, O, r]``, ``V = P_v c_v [B, I, r]``, so ``ΔW = U Vᵀ`` has rank ≤ r.
    ``P_u`` starts small so a fresh head's ``ΔW`` entries have std about ``init_std`` for
    unit-scale hidden states (the LM's own weights are ~0.02); ``zero_init=True`` starts it
    at exactly zero (ΔW = 0, yet gradients reach ``P_u``, as LoRA's zero ``B``).
    ``identity_mix=True`` (r = M) starts ``mix`` at the identity: code k is metatoken k's
    own state, so factor column k is written by metatoken k (a WEIGHTS slot's column x
    by "its" metatoken; a random mix couples every column to every metatoken at first and
    trains far slower). Outputs are in the head's dtype.
    """

    def __init__(self, hidden: int, targets: Mapping[str, tuple[int, int]], rank: int,
                 n_meta: int, *, zero_init: bool = False, init_std: float = 1e-3,
                 identity_mix: bool = False) -> None:
        super().__init__()
        if hidden < 1 or rank < 1 or n_meta < 1:
            raise ValueError(f"WeightHead needs hidden, rank and n_meta >= 1, got {hidden}, "
                             f"{rank}, {n_meta}")
        if not targets:
            raise ValueError("WeightHead needs at least one target layer")
        for name, shape in targets.items():
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"target {name!r}: shape must be (out_features, in_features) "
                                 f">= 1, got {shape}")
        self.hidden, self.rank, self.n_meta = hidden, rank, n_meta
        self.names: tuple[str, ...] = tuple(targets)
        self.shapes: tuple[tuple[int, int], ...] = tuple(tuple(targets[n]) for n in self.names)
        self.norm = nn.LayerNorm(hidden)
        if identity_mix and rank != n_meta:
            raise ValueError(f"identity_mix needs rank == n_meta, got {rank} and {n_meta}")
        mix = (torch.eye(rank).expand(len(targets), 2, rank, rank).clone() if identity_mix
               else torch.randn(len(targets), 2, rank, n_meta) / math.sqrt(n_meta))
        self.mix = nn.Parameter(mix)                                          # [Tg, 2, r, M]
        self.proj_u = nn.ModuleList(nn.Linear(hidden, o, bias=False) for o, _ in self.shapes)
        self.proj_v = nn.ModuleList(nn.Linear(hidden, i, bias=False) for _, i in self.shapes)
        for pu, pv in zip(self.proj_u, self.proj_v):
            nn.init.normal_(pv.weight, std=1 / math.sqrt(hidden))             # V entries ~ 1
            if zero_init:
                nn.init.zeros_(pu.weight)
            else:   # std(ΔW) = √r · std(U) · std(V) = init_std
                nn.init.normal_(pu.weight, std=init_std / math.sqrt(rank * hidden))

    def forward(self, h: Tensor) -> dict[str, LowRankDelta]:
        """h [B, M, H] → {target name: LowRankDelta(u [B, O, r], v [B, I, r])}."""
        if h.dim() != 3 or h.shape[1:] != (self.n_meta, self.hidden):
            raise ValueError(f"WeightHead expects hidden states [B, {self.n_meta}, "
                             f"{self.hidden}] (M metatokens × H), got {tuple(h.shape)}")
        hn = self.norm(h.to(self.mix.dtype))                                  # [B, M, H]
        codes = torch.einsum("tsrm,bmh->tbsrh", self.mix, hn)                 # [Tg, B, 2, r, H]
        out = {}
        for k, name in enumerate(self.names):
            u = self.proj_u[k](codes[k, :, 0]).transpose(1, 2)               # [B, O, r]
            v = self.proj_v[k](codes[k, :, 1]).transpose(1, 2)               # [B, I, r]
            out[name] = LowRankDelta(u, v)
        return out


class PromptLookup(nn.Module):
    """M query states ``[B, M, H]`` read a prompt ``[B, S, H]`` by one attention hop:
    ``h_m = e_m + W_o Σ_t α_mt v(w_t)`` with ``α_m = softmax_t(q(e_m) · k(w_t) / √d)`` over
    the real positions (``mask``). Keys and values come from a causal window of ``window``
    positions, ``w_t = [LN(x_t); LN(x_{t−1}); …]``, so a definition written ``x>y`` is ONE
    key ("the symbol two back is x") holding its value y. ``W_o`` starts at zero.

    The weight-token channel's reader (``Controller``): the queries ``e_m`` are the
    metatokens' learned embeddings and the prompt is its token embeddings, so metatoken m
    learns to fetch what the prompt says about symbol m and a :class:`WeightHead` turns the
    M results into factor columns. (A tiny LM left to find "x>" among shuffled
    definitions itself must grow an induction-style two-hop circuit; docs/weights.md has
    the measurements that led here.)
    """

    def __init__(self, hidden: int, window: int = 3, dim: int = 64) -> None:
        super().__init__()
        if hidden < 1 or window < 1 or dim < 1:
            raise ValueError(f"PromptLookup needs hidden, window and dim >= 1, got {hidden}, "
                             f"{window}, {dim}")
        self.window, self.dim = window, dim
        self.norm = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, dim)
        self.k = nn.Linear(window * hidden, dim)
        self.v = nn.Linear(window * hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def forward(self, queries: Tensor, prompt: Tensor, mask: Tensor) -> Tensor:
        """queries [B, M, H], prompt [B, S, H], mask [B, S] (1 on real positions) →
        [B, M, H]."""
        hp = self.norm(prompt) * mask[..., None].to(prompt.dtype)             # [B, S, H]
        shifted = [nn.functional.pad(hp, (0, 0, j, 0))[:, : hp.shape[1]]      # x_{t−j}
                   for j in range(self.window)]
        w = torch.cat(shifted, -1)                                            # [B, S, wH]
        att = self.q(queries) @ self.k(w).transpose(1, 2) / math.sqrt(self.dim)  # [B, M, S]
        att = att.masked_fill(mask[:, None, :] == 0, float("-inf")).softmax(-1)
        return queries + self.o(att @ self.v(w))                              # [B, M, H]


# ================================================================ the channel

@dataclass(frozen=True)
class ChannelConfig:
    """What the weight-token channel writes to."""

    patterns: tuple[str, ...] = ("q_proj", "v_proj")  # linear layers that receive deltas
    #                                                   (name suffixes; GPT-2: "c_attn")
    rank: int = 4                  # r of every delta
    n_meta: int = 4                # M metatokens per <weights> block
    zero_init: bool = False        # the head starts at ΔW = 0 exactly
    init_std: float = 1e-3         # else: std of a fresh head's ΔW entries
    markers: bool = True           # learned <weights>/</weights> embeddings; False: the
    #                                tokenizer's ids (WeightChannel's marker_ids) via the LM

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError("ChannelConfig.patterns must name at least one layer")
        if self.rank < 1 or self.n_meta < 1:
            raise ValueError(f"ChannelConfig.rank and n_meta must be >= 1, got {self.rank}, "
                             f"{self.n_meta}")
        if not self.init_std >= 0:
            raise ValueError(f"ChannelConfig.init_std must be >= 0, got {self.init_std}")


class ChannelOutput(NamedTuple):
    """One pass through the channel."""

    deltas: dict[str, LowRankDelta]  # decoded from the metatokens, per layer [B, ...]
    meta_hidden: Tensor              # [B, M, H] final hidden states at m_1 … m_M
    logits: Tensor | None            # [B, T, V] continuation logits, computed with the deltas
    past: DynamicCache               # the cache after the continuation


def _positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded mask [B, S] (0 on the first real token)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class WeightChannel(nn.Module):
    """Metatokens + head on a wrapped LM. The LM is passed in, not owned (no duplicate
    parameters in the channel's state_dict).

    ``forward(lm, prefix, mask, continuation)``: ``prefix <weights> m_1 … m_M`` without
    deltas (left-padded ``prefix [B, S, H]``, ``mask [B, S]``), deltas from the metatoken
    states, then ``</weights> continuation [B, T, H]`` on the cache with the deltas. Rows
    of different continuation lengths: pad on the right and ignore the padded outputs (a
    causal LM's real positions never see them).
    """

    def __init__(self, lm: nn.Module, cfg: ChannelConfig = ChannelConfig(),
                 marker_ids: tuple[int, int] | None = None) -> None:
        super().__init__()
        if not cfg.markers and marker_ids is None:
            raise ValueError("ChannelConfig(markers=False) needs marker_ids=(<weights> id, "
                             "</weights> id), e.g. (tokenizer.weights_id, "
                             "tokenizer.weights_end_id)")
        self.cfg = cfg
        self.marker_ids = None if cfg.markers else tuple(marker_ids)
        hidden = lm.get_input_embeddings().embedding_dim
        self.layers = wrap_linear_layers(lm, cfg.patterns)
        self.meta = MetaTokens(hidden, cfg.n_meta, markers=cfg.markers)
        self.head = WeightHead(hidden, self.layers.shapes, cfg.rank, cfg.n_meta,
                               zero_init=cfg.zero_init, init_std=cfg.init_std)

    def markers(self, lm: nn.Module, batch: int) -> tuple[Tensor, Tensor]:
        """``<weights> m_1 … m_M`` [B, 1 + M, H] and ``</weights>`` [B, 1, H]: learned
        markers, or the LM's embeddings of ``marker_ids``."""
        if self.marker_ids is None:
            return self.meta.block(batch), self.meta.close_block(batch)
        emb = lm.get_input_embeddings()
        o, c = emb(torch.tensor(self.marker_ids, device=emb.weight.device))   # [2, H]
        block = torch.cat([o[None], self.meta.embeddings.to(o.dtype)])          # [1 + M, H]
        return block.expand(batch, -1, -1), c.expand(batch, 1, -1)

    def write(self, lm: nn.Module, prefix: Tensor, mask: Tensor
              ) -> tuple[dict[str, LowRankDelta], Tensor, DynamicCache, Tensor]:
        """Run ``prefix <weights> m_1 … m_M`` without deltas: (deltas, metatoken states
        [B, M, H], cache, extended mask [B, S + 1 + M])."""
        B, S, _ = prefix.shape
        M = self.cfg.n_meta
        block = self.markers(lm, B)[0].to(prefix.dtype)                        # [B, 1 + M, H]
        x = torch.cat([prefix, block], 1)                                     # [B, S + 1 + M, H]
        mask = torch.cat([mask, mask.new_ones(B, 1 + M)], 1)
        with deltas(self.layers, dict.fromkeys(self.layers)):   # the prefix sees no delta
            out, past = call_lm(lm, DynamicCache(), inputs_embeds=x, attention_mask=mask,
                                position_ids=_positions(mask), use_cache=True,
                                output_hidden_states=True, logits_to_keep=1)
        h = out.hidden_states[-1][:, -M:]                                     # [B, M, H]
        return self.head(h), h, past, mask

    def forward(self, lm: nn.Module, prefix: Tensor, mask: Tensor,
                continuation: Tensor | None = None, *, isolate: bool = False) -> ChannelOutput:
        """See the class docstring; ``continuation`` None runs ``</weights>`` alone.

        ``isolate=True`` masks the cached prefix and block out of the continuation's
        attention, so the deltas are the ONLY path from the prefix to the continuation (a
        probe of what the channel carries; positions are unchanged).
        """
        d, h, past, mask = self.write(lm, prefix, mask)
        B = prefix.shape[0]
        x = self.markers(lm, B)[1].to(prefix.dtype)                            # [B, 1, H]
        if continuation is not None:
            x = torch.cat([x, continuation], 1)                               # [B, 1 + T, H]
        T = x.shape[1]
        full = torch.cat([mask, mask.new_ones(B, T)], 1)
        pos = _positions(full)[:, -T:]
        if isolate:
            full = torch.cat([torch.zeros_like(mask), mask.new_ones(B, T)], 1)
        with deltas(self.layers, d):
            out, past = call_lm(lm, past, inputs_embeds=x, attention_mask=full,
                                position_ids=pos, use_cache=True)
        return ChannelOutput(d, h, out.logits, past)
