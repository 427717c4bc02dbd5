"""HybridSWM: the differentiable slot memory (layer 4 of docs/architecture.md).

Memory is a tensor of slots ``[B, N, D]``; a slot vector holds one :class:`~llamacpu.core.isa.Slot`
as one-hots (kind, op, a mode per address field, value) and address keys (the four address
fields). A pointer is an address key; a read is attention of the pointer over the keys of
all slots; a write is the NTM/DNC gated erase + add. Soft mode is differentiable; hard mode
(one-hot forward, straight-through backward) is exact, so a machine built on it agrees with
the reference interpreter bit for bit.

Three levels, as in deepmind/dnc (``addressing.py`` → ``access.py`` → ``dnc.py``):

1. addressing primitives: :class:`AddressCodec` (keys, pointer shift, exact decode),
   :func:`address_scores`, :func:`address_weights`, :func:`topk_addresses`
   (``llamacpu.machine.addressing``, with the margin argument for exact addressing);
2. heads: :func:`read`, :func:`read_topk`, :func:`write`, :func:`write_sparse`, and the slot
   encoding :class:`SlotLayout`; :class:`HybridSWM` bundles them with their config (this
   module);
3. the machine that fetches, decodes and executes with them (``llamacpu.machine.machine``).

Shape letters::

    B  batch                        N  slots
    D  slot width (SlotLayout.width) A  address width, 2 L
    L  address bits (AddressCodec.bits); addresses are 0 .. 2^L - 1
    P  pointers per read            K  candidates of a sparse (top-k) read
    V  alphabet size                F  address fields per slot (4)
    W  beam width of the top-k search
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F_nn
from torch import Tensor

from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    EMPTY_SLOT,
    NUM_FIELDS,
    Alphabet,
    Kind,
    MemoryImage,
    Mode,
    Op,
    Slot,
    opcode,
)
from llamacpu.machine.addressing import (
    DEFAULT_SHARPNESS,
    AddressCodec,
    _one_hot,
    address_scores,
    address_weights,
    straight_through,
    topk_addresses,
)

__all__ = [
    "Read", "TopkRead", "read", "read_topk", "write", "write_sparse", "Field", "FIELD_NAMES",
    "SlotLayout", "HybridSWM",
]

_KINDS, _OPS, _MODES = len(Kind), len(Op), len(Mode)


# ============================================================== level 2: read and write heads

class Read(NamedTuple):
    """A dense read: the values and the address distributions they were read with."""

    values: Tensor   # [B, P, D]
    weights: Tensor | None  # [B, P, N]; None when asked not to compute them


class TopkRead(NamedTuple):
    """A sparse read: values, and the distributions over the K candidate slots."""

    values: Tensor   # [B, P, D]
    weights: Tensor  # [B, P, K]
    indices: Tensor  # [B, P, K] slot addresses, best match first


def _pointer_read_fallback(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``softmax(scale · q kᵀ) v``, the definition, for when the kernel module is absent."""
    return torch.softmax(scale * (q @ k.transpose(-1, -2)), dim=-1) @ v        # [B, P, D]


def _pointer_read(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``llamacpu.kernels.pointer_read`` (Triton on CUDA, a fast torch path on CPU), imported
    lazily so that this module works without it."""
    try:
        from llamacpu.kernels.pointer_read import pointer_read
    except ModuleNotFoundError as e:
        if e.name != "llamacpu.kernels.pointer_read":
            raise
        pointer_read = _pointer_read_fallback
    return pointer_read(q, k, v, float(scale))


class _HardRead(torch.autograd.Function):
    """``values = M[idx]`` (a gather, exact), differentiated as ``values = w M`` with w the
    one-hot of idx whose gradient goes to the soft weights (straight-through)."""

    @staticmethod
    def forward(ctx, soft: Tensor, memory: Tensor, idx: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(memory, idx)
        D = memory.shape[-1]
        return memory.gather(1, idx[..., None].expand(-1, -1, D))             # [B, P, D]

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        memory, idx = ctx.saved_tensors
        g_soft = g_mem = None
        if ctx.needs_input_grad[0]:
            g_soft = grad @ memory.transpose(1, 2)                    # ∂(w M)/∂w: [B, P, N]
        if ctx.needs_input_grad[1]:
            D = memory.shape[-1]
            g_mem = torch.zeros_like(memory).scatter_add_(
                1, idx[..., None].expand(-1, -1, D), grad)                      # wᵀ g: [B, N, D]
        return g_soft, g_mem, None


def read(memory: Tensor, pointers: Tensor, keys: Tensor,
         sharpness: float = DEFAULT_SHARPNESS, hard: bool = False,
         need_weights: bool = True) -> Read:
    """Read P slots per batch row: pointers ``[B, P, A]`` attend over keys ``[N, A]``.

    Soft: ``r = softmax(β q Kᵀ) M`` (via the fused pointer-read kernel). Hard: ``r = M[argmax]``
    exactly, with the softmax's gradient (straight-through) for pointers and a one-hot
    gradient for memory. Returns values ``[B, P, D]`` and weights ``[B, P, N]``.
    """
    if memory.dim() != 3:
        raise ValueError(f"memory must be [B, N, D], got {tuple(memory.shape)}")
    B, N, D = memory.shape
    if keys.shape[-2] != N:
        raise ValueError(f"{keys.shape[-2]} keys for a memory of {N} slots")
    if pointers.shape[0] != B:
        raise ValueError(f"pointers batch {pointers.shape[0]} != memory batch {B}")
    scores = address_scores(pointers, keys)                                   # [B, P, N]
    if not hard:
        values = _pointer_read(pointers, keys.to(pointers.dtype), memory, sharpness)  # [B, P, D]
        weights = torch.softmax(sharpness * scores, -1) if need_weights else None
        return Read(values, weights)
    idx = scores.argmax(-1)                                                   # [B, P]
    wants_grad = torch.is_grad_enabled() and pointers.requires_grad
    soft = torch.softmax(sharpness * scores, -1) if (wants_grad or need_weights) else None
    values = _HardRead.apply(soft if wants_grad else scores.detach(), memory, idx)
    weights = None
    if need_weights:
        assert soft is not None
        weights = straight_through(_one_hot(idx, N, soft.dtype), soft)      # [B, P, N]
    return Read(values, weights)


def read_topk(memory: Tensor, pointers: Tensor, codec: AddressCodec, k: int,
              sharpness: float = DEFAULT_SHARPNESS, hard: bool = False,
              method: Literal["trie", "scan"] = "trie", beam: int | None = None) -> TopkRead:
    """A read that touches only the K best-matching slots: O(K · D) memory traffic.

    Candidates come from :func:`topk_addresses` (no ``[B, P, N]`` tensor is made with the
    default ``trie`` method); the softmax is over the K candidates only. In hard mode the
    result is the best candidate's slot, which is the dense read's argmax for key pointers.
    """
    if memory.dim() != 3:
        raise ValueError(f"memory must be [B, N, D], got {tuple(memory.shape)}")
    B, N, D = memory.shape
    P = pointers.shape[1]
    idx = topk_addresses(codec, pointers, N, k, method=method, beam=beam)    # [B, P, K]
    cand = codec.address_to_key(idx, dtype=pointers.dtype, device=pointers.device)  # [B, P, K, A]
    scores = (cand * pointers[:, :, None, :]).sum(-1)                          # [B, P, K]
    soft = torch.softmax(sharpness * scores, -1)
    rows = memory.gather(1, idx.reshape(B, P * k, 1).expand(-1, -1, D))       # [B, P·K, D]
    rows = rows.reshape(B, P, k, D)                                           # [B, P, K, D]
    if hard:
        # first best in address order, as the dense argmax picks on ties
        best_score = scores.max(-1, keepdim=True).values
        tied = torch.where(scores == best_score, idx, torch.full_like(idx, N))
        one_hot = _one_hot(tied.argmin(-1), k, soft.dtype)                    # [B, P, K]
        weights = straight_through(one_hot, soft)
    else:
        weights = soft
    values = (weights[..., None] * rows).sum(-2)                              # Σ_K w r: [B, P, D]
    return TopkRead(values, weights, idx)


def write(memory: Tensor, weights: Tensor, value: Tensor, erase: Tensor,
          gate: Tensor | None = None) -> Tensor:
    """Gated erase + add at an address distribution; returns the new memory ``[B, N, D]``.

    weights ``[B, N]``, value ``[B, D]``, erase ``[B, D]`` or ``[D]`` (a field mask: 1 where
    the slot is replaced), gate ``[B]`` (None = 1). With one-hot weights and 0/1 erase and
    gate, the untouched entries keep their exact bits and the written ones become ``value``.
    """
    if memory.dim() != 3:
        raise ValueError(f"memory must be [B, N, D], got {tuple(memory.shape)}")
    B, N, D = memory.shape
    if weights.shape != (B, N):
        raise ValueError(f"weights must be [B, N] = {[B, N]}, got {list(weights.shape)}")
    w = weights if gate is None else weights * gate[:, None]                   # g w: [B, N]
    e = erase.expand(B, D)                                                     # [B, D]
    we = w[:, :, None] * e[:, None, :]                                         # g w eᵀ: [B, N, D]
    # M ← M ∘ (1 − g w eᵀ) + g w (e ∘ v)ᵀ
    return memory * (1 - we) + w[:, :, None] * (e * value)[:, None, :]


def write_sparse(memory: Tensor, indices: Tensor, weights: Tensor, value: Tensor,
                 erase: Tensor, gate: Tensor | None = None) -> Tensor:
    """:func:`write` restricted to K distinct slots per row (e.g. a top-k read's candidates):
    indices and weights ``[B, K]``. Same equation, O(K · D) arithmetic plus one copy."""
    B, N, D = memory.shape
    K = indices.shape[1]
    if K > 1 and bool((indices.sort(1).values.diff(dim=1) == 0).any()):
        raise ValueError("write_sparse needs distinct indices per row")
    w = weights if gate is None else weights * gate[:, None]                   # [B, K]
    e = erase.expand(B, D)                                                     # [B, D]
    at = indices[:, :, None].expand(-1, -1, D)                                 # [B, K, D]
    rows = memory.gather(1, at)                                                # [B, K, D]
    we = w[:, :, None] * e[:, None, :]                                         # [B, K, D]
    # m ← m ∘ (1 − g w eᵀ) + g w (e ∘ v)ᵀ on the K rows
    new_rows = rows * (1 - we) + w[:, :, None] * (e * value)[:, None, :]
    return memory.scatter(1, at, new_rows)


# ============================================================== slot encoding

FIELD_NAMES: tuple[str, ...] = (
    "kind", "op", *(f"mode{i}" for i in range(NUM_FIELDS)), *(f"p{i}" for i in range(NUM_FIELDS)),
    "val",
)
"""Fields of a slot vector, in order; ``modes`` and ``args`` name the mode/address groups."""


@dataclass(frozen=True)
class Field:
    """Where one field lives in a slot vector."""

    name: str
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


@dataclass(frozen=True)
class SlotLayout:
    """The slot vector: ``[kind | op | mode0..3 | p0..p3 | val]``, width
    ``D = |Kind| + |Op| + F·|Mode| + F·A + V``.

    One-hots for kind, op, each mode and the value; address keys for p0..p3. ``encode`` and
    ``decode`` are exact inverses on hard (one-hot / exact-key) tensors.
    """

    alphabet: Alphabet = DEFAULT_ALPHABET   # the value field is one-hot over its V symbols
    codec: AddressCodec = AddressCodec()   # address fields hold keys of width A = codec.width
    n_ops: int = _OPS                      # |Op|: the op field's one-hot width (isa.n_ops()
    #                                        once isa.define_op has added ops)
    fields: tuple[Field, ...] = dc_field(init=False, repr=False)

    def __post_init__(self) -> None:
        sizes = [_KINDS, self.n_ops, *([_MODES] * NUM_FIELDS),
                 *([self.codec.width] * NUM_FIELDS),
                 self.alphabet.size]
        out, start = [], 0
        for name, size in zip(FIELD_NAMES, sizes):
            out.append(Field(name, start, size))
            start += size
        object.__setattr__(self, "fields", tuple(out))

    @classmethod
    def for_size(cls, n: int, alphabet: Alphabet = DEFAULT_ALPHABET) -> SlotLayout:
        """A layout whose address fields reach ``n`` slots."""
        return cls(alphabet, AddressCodec.for_size(n))

    @property
    def width(self) -> int:
        """D, the slot width."""
        return self.fields[-1].stop

    def field(self, name: str) -> Field:
        """A field by name; ``modes`` and ``args`` are the four mode / address fields together."""
        if name in ("modes", "args"):
            first = self.field("mode0" if name == "modes" else "p0")
            return Field(name, first.start, first.size * NUM_FIELDS)
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no slot field {name!r}; fields are {FIELD_NAMES + ('modes', 'args')}")

    # ---------------------------------------------------------------- views

    def get(self, x: Tensor, name: str) -> Tensor:
        """The sub-tensor ``[..., size]`` of field ``name`` (a view)."""
        return x[..., self.field(name).slice]

    def modes(self, x: Tensor) -> Tensor:
        """``[..., F, |Mode|]`` the four mode one-hots (a view)."""
        return self.get(x, "modes").unflatten(-1, (NUM_FIELDS, _MODES))

    def args(self, x: Tensor) -> Tensor:
        """``[..., F, A]`` the four address keys (a view)."""
        return self.get(x, "args").unflatten(-1, (NUM_FIELDS, self.codec.width))

    def mask(self, *names: str, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> Tensor:
        """``[D]``: 1 on the named fields, 0 elsewhere (an erase vector for :func:`write`)."""
        m = torch.zeros(self.width, dtype=dtype, device=device)
        for name in names:
            m[self.field(name).slice] = 1
        return m

    def place(self, name: str, sub: Tensor) -> Tensor:
        """``[..., D]``: ``sub [..., size]`` in field ``name``, zeros elsewhere (differentiable)."""
        f = self.field(name)
        if sub.shape[-1] != f.size:
            raise ValueError(f"field {name} has size {f.size}, got {sub.shape[-1]}")
        return F_nn.pad(sub, (f.start, self.width - f.stop))

    def promote_empty(self, x: Tensor) -> Tensor:
        """Slot vectors ``[..., D]`` with the kind's EMPTY mass moved to DATA: the ISA rule
        "writing a field of an EMPTY slot makes it DATA", as a linear map on the kind."""
        kind = self.get(x, "kind")
        moved = kind.clone()
        moved[..., Kind.DATA] = kind[..., Kind.DATA] + kind[..., Kind.EMPTY]
        moved[..., Kind.EMPTY] = 0
        f = self.field("kind")
        return torch.cat([x[..., : f.start], moved, x[..., f.stop:]], -1)

    # ---------------------------------------------------------------- Slot <-> tensor

    def encode(self, slots: Sequence[Slot], *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        """``[N, D]``: one slot vector per Slot (one-hots and exact keys)."""
        V = self.alphabet.size
        kinds = torch.tensor([int(s.kind) for s in slots], dtype=torch.long)   # [N]
        ops = torch.tensor([int(s.op) for s in slots], dtype=torch.long)       # [N]
        modes = torch.tensor([[int(m) for m in s.modes] for s in slots],
                             dtype=torch.long).reshape(-1, NUM_FIELDS)        # [N, F]
        args = torch.tensor([list(s.args) for s in slots],
                            dtype=torch.long).reshape(-1, NUM_FIELDS)          # [N, F]
        vals = torch.tensor([s.val for s in slots], dtype=torch.long)          # [N]
        if vals.numel() and (int(vals.min()) < 0 or int(vals.max()) >= V):
            bad = next(i for i, s in enumerate(slots) if not 0 <= s.val < V)
            raise ValueError(f"slot {bad}: value {slots[bad].val} is outside the alphabet "
                             f"0..{V - 1} ({self.alphabet.describe()})")
        if args.numel() and (int(args.min()) < 0 or int(args.max()) >= self.codec.capacity):
            bad = next(i for i, s in enumerate(slots)
                       if not all(0 <= a < self.codec.capacity for a in s.args))
            raise ValueError(f"slot {bad}: address field {slots[bad].args} outside "
                             f"0..{self.codec.capacity - 1} ({self.codec.bits}-bit keys)")
        parts = [F_nn.one_hot(kinds, _KINDS), F_nn.one_hot(ops, self.n_ops),
                 F_nn.one_hot(modes, _MODES).flatten(-2)]                      # [N, F·|Mode|]
        x = torch.cat([p.to(dtype) for p in parts]
                      + [self.codec.address_to_key(args, dtype=dtype).flatten(-2),  # [N, F·A]
                         F_nn.one_hot(vals, V).to(dtype)], -1)                   # [N, D]
        return x.to(device) if device is not None else x

    def encode_image(self, images: Sequence[MemoryImage | Sequence[Slot]], size: int | None = None,
                     *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> Tensor:
        """``[B, N, D]``: a batch of memory images, padded with EMPTY slots to the longest
        (or to ``size``)."""
        rows = [im.slots if isinstance(im, MemoryImage) else tuple(im) for im in images]
        if not rows:
            raise ValueError("encode_image needs at least one image")
        n = max(len(r) for r in rows) if size is None else size
        if any(len(r) > n for r in rows):
            raise ValueError(f"an image has {max(len(r) for r in rows)} slots, more than size {n}")
        flat = [s for r in rows for s in (*r, *([EMPTY_SLOT] * (n - len(r))))]
        return self.encode(flat, dtype=dtype, device=device).reshape(len(rows), n, self.width)

    def decode(self, x: Tensor) -> tuple[Slot, ...]:
        """The Slots of ``[N, D]`` slot vectors: argmax per one-hot field, exact key decoding
        per address field. The exact inverse of :meth:`encode` on hard tensors."""
        if x.dim() != 2 or x.shape[-1] != self.width:
            raise ValueError(f"decode takes [N, D={self.width}], got {tuple(x.shape)}")
        x = x.detach()
        kinds = self.get(x, "kind").argmax(-1).tolist()
        ops = self.get(x, "op").argmax(-1).tolist()
        modes = self.modes(x).argmax(-1).tolist()                               # [N, F]
        args = self.codec.key_to_address(self.args(x)).tolist()                # [N, F]
        vals = self.get(x, "val").argmax(-1).tolist()
        kind_e, op_e, mode_e = list(Kind), [opcode(o) for o in range(self.n_ops)], list(Mode)
        return tuple(
            Slot(kind_e[k], op_e[o], tuple(mode_e[m] for m in ms),  # type: ignore[arg-type]
                 tuple(a), v)  # type: ignore[arg-type]
            for k, o, ms, a, v in zip(kinds, ops, modes, args, vals))

    def decode_image(self, x: Tensor) -> list[tuple[Slot, ...]]:
        """Per batch row, the Slots of ``[B, N, D]`` memory."""
        return [self.decode(row) for row in x]


# ============================================================== the memory, bundled

@dataclass(frozen=True)
class HybridSWM:
    """The slot memory's config and operations; the memory tensor itself is passed in and a
    new one returned (the machine keeps it in an immutable state tuple).

    ``sharpness`` is β of soft addressing; every method also takes it per call. Address keys
    are made once per (N, dtype, device) and kept; treat them as read-only.
    """

    layout: SlotLayout = SlotLayout()    # slot encoding; its codec makes the address keys
    sharpness: float = DEFAULT_SHARPNESS  # β in softmax(β q·Kᵀ); see addressing.py
    _keys: dict = dc_field(default_factory=dict, init=False, repr=False, compare=False,
                           hash=False)   # (n, dtype, device) -> [N, A] keys

    def __post_init__(self) -> None:
        if not self.sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {self.sharpness}")

    @property
    def codec(self) -> AddressCodec:
        return self.layout.codec

    @property
    def width(self) -> int:
        """D."""
        return self.layout.width

    def keys(self, n: int, *, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> Tensor:
        """``[N, A]`` address keys of an N-slot memory (cached; do not modify in place)."""
        tag = (n, dtype, str(torch.device(device) if device is not None else "cpu"))
        if tag not in self._keys:
            if len(self._keys) >= 8:
                self._keys.clear()
            self._keys[tag] = self.codec.keys(n, dtype=dtype, device=device)
        return self._keys[tag]

    def encode(self, images: Sequence[MemoryImage | Sequence[Slot]], size: int | None = None,
               *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        """``[B, N, D]`` memory from images (see :meth:`SlotLayout.encode_image`)."""
        return self.layout.encode_image(images, size, dtype=dtype, device=device)

    def decode(self, memory: Tensor) -> list[tuple[Slot, ...]]:
        """The Slots of ``[B, N, D]`` memory, per batch row."""
        return self.layout.decode_image(memory)

    def read(self, memory: Tensor, pointers: Tensor, sharpness: float | None = None,
             hard: bool = False, *, keys: Tensor | None = None,
             need_weights: bool = True) -> Read:
        """:func:`read` with this memory's keys: ``([B, P, D], [B, P, N])``."""
        if keys is None:
            keys = self.keys(memory.shape[1], dtype=memory.dtype, device=memory.device)
        beta = self.sharpness if sharpness is None else sharpness
        return read(memory, pointers, keys, beta, hard, need_weights)

    def read_topk(self, memory: Tensor, pointers: Tensor, k: int,
                  sharpness: float | None = None, hard: bool = False,
                  method: Literal["trie", "scan"] = "trie", beam: int | None = None) -> TopkRead:
        """:func:`read_topk`: a sparse read for large memories."""
        beta = self.sharpness if sharpness is None else sharpness
        return read_topk(memory, pointers, self.codec, k, beta, hard, method, beam)

    def address_weights(self, memory: Tensor, pointers: Tensor,
                        sharpness: float | None = None, hard: bool = False) -> Tensor:
        """``[B, P, N]`` address distributions of pointers over this memory's slots (e.g. where
        to write, without reading)."""
        keys = self.keys(memory.shape[1], dtype=memory.dtype, device=memory.device)
        beta = self.sharpness if sharpness is None else sharpness
        return address_weights(pointers, keys, beta, hard)

    def write(self, memory: Tensor, weights: Tensor, value: Tensor, erase: Tensor,
              gate: Tensor | None = None) -> Tensor:
        """:func:`write`: ``M ← M ∘ (1 − g w eᵀ) + g w (e ∘ v)ᵀ``."""
        return write(memory, weights, value, erase, gate)

    def write_sparse(self, memory: Tensor, indices: Tensor, weights: Tensor, value: Tensor,
                     erase: Tensor, gate: Tensor | None = None) -> Tensor:
        """:func:`write_sparse`: the write at K given slots per row (pairs with read_topk)."""
        return write_sparse(memory, indices, weights, value, erase, gate)

    def inc(self, pointers: Tensor, hard: bool = False) -> Tensor:
        """Pointers ``[..., A]`` moved to the next address (exact keys if ``hard``)."""
        return self.codec.inc(pointers, hard)

    def dec(self, pointers: Tensor, hard: bool = False) -> Tensor:
        """Pointers ``[..., A]`` moved to the previous address (exact keys if ``hard``)."""
        return self.codec.dec(pointers, hard)

    def address(self, pointers: Tensor) -> Tensor:
        """``[...]`` integer addresses of pointers ``[..., A]`` (exact phase decoding)."""
        return self.codec.key_to_address(pointers)
