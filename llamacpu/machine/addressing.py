"""Level 1 of HybridSWM's memory: addressing primitives (deepmind/dnc's ``addressing.py``).

:class:`AddressCodec` (keys, pointer shift, exact decode), :func:`address_scores`,
:func:`address_weights`, :func:`topk_addresses`, and :func:`straight_through` (the exact
hard forward with a soft gradient). The read and write heads built on them are in
``llamacpu.machine.memory``.

Shape letters::

    B  batch                        N  slots
    A  address width, 2 L
    L  address bits (AddressCodec.bits); addresses are 0 .. 2^L - 1
    P  pointers per read            K  candidates of a sparse (top-k) read
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
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_SHARPNESS", "DEFAULT_ADDRESS_BITS", "AddressCodec", "address_scores",
    "address_weights", "straight_through", "topk_addresses",
]

DEFAULT_SHARPNESS = 4.0
"""β of soft addressing, ``softmax(β q·Kᵀ)``: the right slot gets ≥ 0.9995 of the weight for
any memory up to 2^24 slots (see the module docstring for the margin argument)."""

DEFAULT_ADDRESS_BITS = 16
"""L of the default codec: 2^16 = 65,536 addresses (isa.DEFAULT_MEMORY_SIZE), A = 32."""

_MAX_BITS = 40


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
