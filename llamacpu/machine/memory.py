"""HybridSWM: the differentiable slot memory (layer 4 of ARCHITECTURE.md).

Memory is a tensor of slots ``[B, N, D]``; a slot vector holds one :class:`~llamacpu.core.isa.Slot`
as one-hots (kind, op, a mode per address field, value) and address keys (the four address
fields). A pointer is an address key; a read is attention of the pointer over the keys of
all slots; a write is the NTM/DNC gated erase + add. Soft mode is differentiable; hard mode
(one-hot forward, straight-through backward) is exact, so a machine built on it agrees with
the reference interpreter bit for bit.

Three levels, as in deepmind/dnc (``addressing.py`` → ``access.py`` → ``dnc.py``):

1. addressing primitives: :class:`AddressCodec` (keys, pointer shift, exact decode),
   :func:`address_scores`, :func:`address_weights`, :func:`topk_addresses`;
2. heads: :func:`read`, :func:`read_topk`, :func:`write`, :func:`write_sparse`, and the slot
   encoding :class:`SlotLayout`; :class:`HybridSWM` bundles them with their config;
3. the machine that fetches, decodes and executes with them (``llamacpu/machine.py``).

Shape letters::

    B  batch                        N  slots
    D  slot width (SlotLayout.width) A  address width, 2 L
    L  address bits (AddressCodec.bits); addresses are 0 .. 2^L - 1
    P  pointers per read            K  candidates of a sparse (top-k) read
    V  alphabet size                F  address fields per slot (4)
    W  beam width of the top-k search

Address keys. Block k (k = 1..L) of ``key(i)`` is the point of the unit circle at angle
``2π i / 2^k``; blocks are interleaved ``[cos₁, sin₁, cos₂, sin₂, …]``, so A = 2L grows like
log N. Block k depends only on ``i mod 2^k``, i.e. on the low k bits of i.

Why addressing is exact (the margin argument). For a query ``q = key(i)`` the score of slot
j is ``q·key(j) = Σ_k cos(2π d / 2^k) = L − gap(d)`` with ``d = i − j`` and
``gap(d) = Σ_k (1 − cos(2π d / 2^k)) ≥ 0``, zero only for ``d ≡ 0 (mod 2^L)``. Write
``d = 2^v m`` with m odd: block v+1 sees the angle ``π m`` and adds 2 to the gap, and if
``v ≤ L−2`` block v+2 sees ``±π/2`` and adds 1 more. So every wrong slot scores at least 2
below the right one (exactly 2 only for the antipode ``i ± 2^(L−1)``, at least 3 for all
others): the hard argmax is exact with a margin of 2, far above float32 rounding. The soft
weight of the right slot is ``1 / Σ_d exp(−β gap(d))``; the sum is the antipode ``e^(−2β)``
plus about 2L near neighbours ``i ± 2^v`` with gap ≈ 3–3.4, then a tail that is negligible.
At the default sharpness β = 4 the right slot gets 0.99962 (L = 16), 0.99961 (L = 20),
0.99959 (L = 24) of the weight: 25× inside a 1 % budget and still growing only like
``2L e^(−3.4β)``, while β is small enough for useful gradients (``∂w ∝ β w (1 − w)``).
:meth:`AddressCodec.soft_weight_floor` computes the number exactly.

Pointer arithmetic. ``key(i + n)`` is ``key(i)`` with block k rotated by ``2π n / 2^k``: a
fixed block-diagonal rotation ``R(n)`` (``R(−n) = R(n)ᵀ``), so INC/DEC are exact, linear and
differentiable. Addresses wrap modulo 2^L: a machine that must fault when a pointer leaves
memory checks the decoded address before the shift (or uses 2^L > N).
"""

from __future__ import annotations

import math
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
)

__all__ = [
    "DEFAULT_SHARPNESS", "DEFAULT_ADDRESS_BITS", "AddressCodec", "address_scores",
    "address_weights", "straight_through", "topk_addresses", "Read", "TopkRead", "read",
    "read_topk", "write", "write_sparse", "Field", "FIELD_NAMES",
    "SlotLayout", "HybridSWM",
]

DEFAULT_SHARPNESS = 4.0
"""β of soft addressing, ``softmax(β q·Kᵀ)``: the right slot gets ≥ 0.9995 of the weight for
any memory up to 2^24 slots (see the module docstring for the margin argument)."""

DEFAULT_ADDRESS_BITS = 16
"""L of the default codec: 2^16 = 65,536 addresses (isa.DEFAULT_MEMORY_SIZE), A = 32."""

_MAX_BITS = 40
_KINDS, _OPS, _MODES = len(Kind), len(Op), len(Mode)


# ============================================================== level 1: addressing primitives

_QUARTER_COS = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)
_QUARTER_SIN = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)


def _circle(residue: Tensor, bits: int | Tensor) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of ``2π residue / 2^bits`` in float64, exact at every quarter turn.

    ``residue`` is an integer tensor in ``[0, 2^bits)``; ``bits`` an int or an integer tensor
    broadcastable to it. The angle is split into a quadrant (integer arithmetic) and a
    remainder in ``[0, π/2)``, so e.g. ``key(1)`` has ``sin π = 0`` exactly, not 1e-16.
    """
    bits_t = torch.as_tensor(bits, device=residue.device)
    quadrant = (residue << 2) >> bits_t                            # floor(4 r / 2^bits) ∈ 0..3
    rest = (residue << 2) - (quadrant << bits_t)                   # 4 r mod 2^bits
    phi = rest.double() * torch.exp2(-bits_t.double()) * (math.pi / 2)  # ∈ [0, π/2)
    c0, s0 = torch.cos(phi), torch.sin(phi)
    # rotate (c0, s0) by quadrant · 90°; the factors are 0 and ±1, so this is exact
    cq = _QUARTER_COS.to(residue.device)[quadrant]
    sq = _QUARTER_SIN.to(residue.device)[quadrant]
    c = c0 * cq - s0 * sq
    s = s0 * cq + c0 * sq
    return c, s


class _StraightThrough(torch.autograd.Function):
    """Forward: ``hard``, bit for bit. Backward: the gradient goes to ``soft`` unchanged."""

    @staticmethod
    def forward(ctx, hard: Tensor, soft: Tensor) -> Tensor:  # type: ignore[override]
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, grad


def _one_hot(idx: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """``[..., n]`` float one-hots of ``idx [...]`` (no int64 detour)."""
    out = torch.zeros(*idx.shape, n, dtype=dtype, device=idx.device)
    return out.scatter_(-1, idx[..., None], 1.0)


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """``hard`` in the forward pass, exactly; gradients flow to ``soft`` as if it were used.

    (``soft + (hard − soft).detach()`` is not exact in floating point; this is.)
    """
    if hard.shape != soft.shape:
        raise ValueError(f"hard {tuple(hard.shape)} and soft {tuple(soft.shape)} differ in shape")
    return _StraightThrough.apply(hard.to(soft.dtype), soft)


@dataclass(frozen=True)
class AddressCodec:
    """Address keys of width ``A = 2 L`` for the addresses ``0 .. 2^L − 1``.

    ``key(i)`` block k (k = 1..L) is ``[cos 2πi/2^k, sin 2πi/2^k]``. Keys are unit vectors per
    block (norm √L), ``key(i)·key(i) = L`` and every other key scores ≤ L − 2.
    """

    bits: int = DEFAULT_ADDRESS_BITS  # L: number of frequencies; addresses live mod 2^L

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= _MAX_BITS:
            raise ValueError(f"bits must be in 1..{_MAX_BITS}, got {self.bits}")

    @classmethod
    def for_size(cls, n: int) -> AddressCodec:
        """The smallest codec that addresses ``n`` slots: L = ceil(log2 n)."""
        if n < 1:
            raise ValueError(f"memory size must be at least 1, got {n}")
        return cls(bits=max(1, (n - 1).bit_length()))

    @property
    def width(self) -> int:
        """A, the key width."""
        return 2 * self.bits

    @property
    def capacity(self) -> int:
        """2^L: addresses are taken modulo this."""
        return 1 << self.bits

    def _check_size(self, n: int) -> None:
        if not 1 <= n <= self.capacity:
            raise ValueError(f"{n} slots do not fit {self.bits}-bit addresses (at most "
                             f"{self.capacity}); use AddressCodec.for_size({n})")

    # ---------------------------------------------------------------- address -> key -> address

    def keys(self, n: int, *, start: int = 0, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> Tensor:
        """``[N, A]`` keys of the addresses ``start .. start+n−1`` (a memory's address keys).

        Block k repeats with period 2^k, so it costs ``min(2^k, n)`` cosines, not n.
        """
        if n < 1 or start < 0:
            raise ValueError(f"need n ≥ 1 and start ≥ 0, got n = {n}, start = {start}")
        self._check_size(start + n)
        out = torch.empty(n, self.bits, 2, dtype=dtype, device=device)   # [N, L, 2]
        for lvl in range(self.bits):
            period = 1 << (lvl + 1)
            m = min(period, n)
            residue = (start + torch.arange(m, device=device)) & (period - 1)
            c, s = _circle(residue, lvl + 1)
            table = torch.stack([c, s], -1).to(dtype)                       # [m, 2]
            out[:, lvl] = table.repeat(-(-n // m), 1)[:n]                   # row j: key_k(start+j)
        return out.reshape(n, self.width)                                   # [N, A]

    def address_to_key(self, addresses: Tensor | int, *, dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> Tensor:
        """``[..., A]`` keys of an integer tensor ``[...]`` of addresses in ``[0, 2^L)``."""
        a = torch.as_tensor(addresses, device=device)
        if a.dtype.is_floating_point or a.dtype == torch.bool:
            raise TypeError(f"addresses must be an integer tensor, got {a.dtype}")
        a = a.long()
        if a.numel() and (int(a.min()) < 0 or int(a.max()) >= self.capacity):
            raise ValueError(f"addresses must be in 0..{self.capacity - 1} for {self.bits}-bit "
                             f"keys, got {int(a.min())}..{int(a.max())}")
        ks = torch.arange(1, self.bits + 1, device=a.device)             # [L]
        residue = a[..., None] & ((1 << ks) - 1)                          # [..., L]  i mod 2^k
        c, s = _circle(residue, ks)
        return torch.stack([c, s], -1).to(dtype).flatten(-2)             # [..., L, 2] -> [..., A]

    def key_to_address(self, keys: Tensor) -> Tensor:
        """``[...]`` addresses of ``[..., A]`` keys, decoded bit by bit from the phases: O(L).

        Exact for keys of addresses (up to any float error below 90° per block). Given the low
        k−1 bits ``r``, block k is ``±u`` with ``u`` the point at ``2π r / 2^k``; bit k−1 is 1
        when the block points away from u. Ties (a zero block) decode to bit 0. For a blend of
        keys this is a nearest address bit by bit, not necessarily the dense argmax.
        """
        self._check_width(keys)
        x = keys.detach().double().reshape(*keys.shape[:-1], self.bits, 2)  # [..., L, 2]
        addr = torch.zeros(keys.shape[:-1], dtype=torch.long, device=keys.device)
        for lvl in range(self.bits):
            theta = addr.double() * (2 * math.pi / (1 << (lvl + 1)))        # candidate with bit = 0
            dot = x[..., lvl, 0] * torch.cos(theta) + x[..., lvl, 1] * torch.sin(theta)
            addr = addr | ((dot < 0).long() << lvl)
        return addr

    def snap(self, keys: Tensor) -> Tensor:
        """Keys replaced by the exact key of their decoded address; gradient passes straight.

        Hard mode calls this after pointer arithmetic so that many INCs stay bit-exact.
        """
        exact = self.address_to_key(self.key_to_address(keys), dtype=keys.dtype,
                                    device=keys.device)
        return straight_through(exact, keys)

    # ---------------------------------------------------------------- pointer arithmetic

    def _angles(self, n: Tensor | int, dtype: torch.dtype,
                device: torch.device | None) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of the block angles ``2π n / 2^k``: ``[..., L]`` each."""
        n_t = torch.as_tensor(n, device=device)
        if n_t.dtype.is_floating_point:
            raise TypeError(f"shifts must be integers, got {n_t.dtype}")
        ks = torch.arange(1, self.bits + 1, device=device)                # [L]
        residue = n_t.long()[..., None] & ((1 << ks) - 1)                 # −1 ↦ 2^k − 1
        c, s = _circle(residue, ks)
        return c.to(dtype), s.to(dtype)

    def shift(self, keys: Tensor, n: Tensor | int = 1) -> Tensor:
        """``key(i) ↦ key(i + n)`` for keys ``[..., A]``: a block rotation, linear in the keys.

        ``n`` is an int or an integer tensor broadcastable to ``keys.shape[:-1]`` (a shift per
        pointer). Equal to ``keys @ self.rotation(n).T`` for an int ``n``.
        """
        self._check_width(keys)
        cos, sin = self._angles(n, keys.dtype, keys.device)               # [..., L]
        x = keys.unflatten(-1, (self.bits, 2))                            # [..., L, 2]
        c, s = x[..., 0], x[..., 1]
        # [c, s] ← R(θ_k) [c, s]: c' = c cos θ − s sin θ, s' = c sin θ + s cos θ
        out = torch.stack([c * cos - s * sin, c * sin + s * cos], -1)     # [..., L, 2]
        return out.flatten(-2)                                            # [..., A]

    def inc(self, keys: Tensor, hard: bool = False) -> Tensor:
        """``key(i) ↦ key(i + 1)``; ``hard`` snaps the result to an exact key (straight-through)."""
        out = self.shift(keys, 1)
        return self.snap(out) if hard else out

    def dec(self, keys: Tensor, hard: bool = False) -> Tensor:
        """``key(i) ↦ key(i − 1)``; ``hard`` snaps the result to an exact key (straight-through)."""
        out = self.shift(keys, -1)
        return self.snap(out) if hard else out

    def rotation(self, n: int = 1, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Tensor:
        """``[A, A]`` block-diagonal rotation ``R(n)`` with ``key(i + n) = R(n) key(i)``."""
        cos, sin = self._angles(n, dtype, torch.device(device) if device else None)  # [L]
        blocks = torch.stack([torch.stack([cos, -sin], -1),
                              torch.stack([sin, cos], -1)], -2)            # [L, 2, 2]
        return torch.block_diag(*blocks)                                    # [A, A]

    # ---------------------------------------------------------------- the margin, in numbers

    def soft_weight_floor(self, sharpness: float = DEFAULT_SHARPNESS) -> float:
        """The softmax weight a key gives its own slot when N = 2^L (float64, exact sum).

        It is the same for every address (scores depend only on ``i − j``) and a lower bound
        for every smaller memory (fewer wrong slots). O(2^L): for bits ≤ 26.
        """
        if self.bits > 26:
            raise ValueError(f"soft_weight_floor sums 2^L terms; bits = {self.bits} is too many")
        step = min(1 << 16, self.capacity)
        base = self.keys(step, dtype=torch.float64)                         # [C, A]
        q = self.address_to_key(0, dtype=torch.float64)                    # [A]
        total = 0.0
        for start in range(0, self.capacity, step):
            score = base @ self.shift(q, -start)                           # L − gap(start + j): [C]
            total += float(torch.exp(sharpness * (score - self.bits)).sum())
        return 1.0 / total

    def _check_width(self, keys: Tensor) -> None:
        if keys.shape[-1] != self.width:
            raise ValueError(f"keys have width {keys.shape[-1]}, this {self.bits}-bit codec "
                             f"uses A = {self.width}")


def address_scores(pointers: Tensor, keys: Tensor) -> Tensor:
    """``[B, P, N]`` match scores ``q·kᵀ`` of pointers ``[B, P, A]`` against keys ``[N, A]``
    (or per-batch keys ``[B, N, A]``)."""
    if pointers.dim() != 3:
        raise ValueError(f"pointers must be [B, P, A], got {tuple(pointers.shape)}")
    if keys.shape[-1] != pointers.shape[-1]:
        raise ValueError(f"pointer width {pointers.shape[-1]} != key width {keys.shape[-1]}")
    return pointers @ keys.to(pointers.dtype).transpose(-1, -2)            # [B, P, N]


def address_weights(pointers: Tensor, keys: Tensor, sharpness: float = DEFAULT_SHARPNESS,
                    hard: bool = False) -> Tensor:
    """``[B, P, N]`` address distributions: ``softmax(β q·Kᵀ)``, or in hard mode the one-hot
    of the argmax (first index on ties) with the softmax's gradient (straight-through)."""
    scores = address_scores(pointers, keys)                                 # [B, P, N]
    soft = torch.softmax(sharpness * scores, dim=-1)
    if not hard:
        return soft
    one_hot = _one_hot(scores.argmax(-1), scores.shape[-1], soft.dtype)    # [B, P, N]
    return straight_through(one_hot, soft)


def _trie_topk(codec: AddressCodec, q: Tensor, n: int, beam: int) -> tuple[Tensor, Tensor]:
    """Beam search over the bit trie of addresses: ``[M, W]`` (addresses, scores), best first.

    The score ``q·key(j) = Σ_k q_k·key_k(j mod 2^k)`` is a sum over the levels of a binary
    trie whose level-k nodes are residues mod 2^k; the search keeps the W best prefixes per
    level (prefix r is kept only if r < n, so leaves are slots of memory). For a query that is
    a key (hard mode), its own prefix scores the maximum at every level, so the argmax is
    found with any beam; W ≥ K makes the K leaves a good top-K. O(M · L · W).
    """
    M = q.shape[0]
    x = q.reshape(M, codec.bits, 2)                                          # [M, L, 2]
    prefix = torch.zeros(M, beam, dtype=torch.long, device=q.device)         # [M, W]
    score = torch.full((M, beam), -math.inf, dtype=q.dtype, device=q.device)
    score[:, 0] = 0.0                                                        # only the root is live
    for lvl in range(codec.bits):
        child = torch.cat([prefix, prefix | (1 << lvl)], dim=1)              # [M, 2W] mod 2^k
        c, s = _circle(prefix, lvl + 1)                                      # bit 0: 2πr/2^k
        gain = x[:, None, lvl, 0] * c.to(q.dtype) + x[:, None, lvl, 1] * s.to(q.dtype)  # [M, W]
        cand = torch.cat([score + gain, score - gain], dim=1)                # bit 1: angle + π
        cand = cand.masked_fill(child >= n, -math.inf)
        score, pick = cand.topk(beam, dim=1)                                 # [M, W]
        prefix = child.gather(1, pick)
    return prefix, score


def _scan_topk(codec: AddressCodec, q: Tensor, n: int, k: int,
               chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """Exact top-K by scoring every slot, ``chunk`` slots at a time: O(M · N · A) time,
    O(M · chunk) memory. Uses ``q·key(s + j) = (R(−s) q)·key(j)``: the keys of one chunk
    serve every chunk, the query is rotated instead (A numbers, not chunk · A)."""
    M = q.shape[0]
    C = min(chunk, n)
    base = codec.keys(C, dtype=q.dtype, device=q.device)                   # [C, A]
    best_s = torch.full((M, 0), -math.inf, dtype=q.dtype, device=q.device)
    best_i = torch.zeros(M, 0, dtype=torch.long, device=q.device)
    for start in range(0, n, C):
        size = min(C, n - start)
        s = codec.shift(q, -start) @ base[:size].T                          # [M, size]
        idx = torch.arange(start, start + size, device=q.device)
        all_s = torch.cat([best_s, s], 1)
        all_i = torch.cat([best_i, idx.expand(M, -1)], 1)
        best_s, pick = all_s.topk(min(k, all_s.shape[1]), dim=1)
        best_i = all_i.gather(1, pick)
    return best_i, best_s


def topk_addresses(codec: AddressCodec, pointers: Tensor, n: int, k: int,
                   method: Literal["trie", "scan"] = "trie", beam: int | None = None) -> Tensor:
    """``[..., K]`` addresses of the K slots of an N-slot memory that best match pointers
    ``[..., A]``, best first.

    ``trie`` (default): beam search over the key structure, O(L · W) per pointer whatever N;
    its best candidate is the dense argmax for every pointer that is a key (hard mode).
    ``scan``: exact for any pointer, O(N · A) time in chunks.
    """
    codec._check_width(pointers)
    codec._check_size(n)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the memory size), got {k}")
    lead = pointers.shape[:-1]
    q = pointers.detach().reshape(-1, codec.width)                          # [M, A], M = prod(lead)
    if method == "trie":
        w = max(2 * k, 8) if beam is None else beam
        if w < k:
            raise ValueError(f"beam {w} is narrower than k = {k}")
        idx, score = _trie_topk(codec, q, n, w)
        idx, score = idx[:, :k], score[:, :k]
    elif method == "scan":
        idx, score = _scan_topk(codec, q, n, k)
    else:
        raise ValueError(f"method must be 'trie' or 'scan', got {method!r}")
    return idx.reshape(*lead, k)                                              # [..., K]


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
    fields: tuple[Field, ...] = dc_field(init=False, repr=False)

    def __post_init__(self) -> None:
        sizes = [_KINDS, _OPS, *([_MODES] * NUM_FIELDS), *([self.codec.width] * NUM_FIELDS),
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
        parts = [F_nn.one_hot(kinds, _KINDS), F_nn.one_hot(ops, _OPS),
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
        kind_e, op_e, mode_e = list(Kind), list(Op), list(Mode)
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
    sharpness: float = DEFAULT_SHARPNESS  # β in softmax(β q·Kᵀ); see the module docstring
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
