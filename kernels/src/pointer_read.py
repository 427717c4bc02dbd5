"""The fused pointer read: P pointers per batch row attend over N address keys.

    out = softmax(scale · q kᵀ) v

This is the memory's hot path (HybridSWM reads operands, instructions and the PC through
it). One function, :func:`pointer_read`, dispatches to the fastest correct implementation:

- ``"triton"``    CUDA tensors: one fused pass over memory per split of N (scores, online
                  softmax with a running max and sum, weighted sum), several pointers per
                  program; backward recomputes the probabilities from the stored logsumexp.
                  Runs on CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1``
                  set before this module is imported), which is how the tests check it.
- ``"torch"``     CPU tensors: scores by one matmul, softmax, then the weighted sum as a
                  grouped 1×1 convolution (oneDNN). With P ≈ 3 rows the weighted sum is a
                  skinny GEMM that MKL's ``bmm`` runs poorly on 2 threads; oneDNN splits the
                  B groups over threads and streams v 2.3× faster (6.3 vs 14.8 ms at
                  B=8, N=65536, D=64; equal on 1 thread). Small memories use the reference,
                  which is faster there. See benchmarks/bench_read.py.
- ``"sdpa"``      ``torch.nn.functional.scaled_dot_product_attention``; kept for comparison:
                  on CPU its fused kernel needs A == D and is slower than both paths above
                  at P ≤ 16 (measured), so ``"auto"`` never picks it.
- ``"reference"`` materialise the scores, softmax, bmm. The definition.

Empty memory (N = 0): a read of nothing returns the zero vector, out = 0 of shape
[B, P, D], with zero gradient for q (k and v are empty). This is what the reference gives
(a softmax over an empty axis is empty, an empty sum is zero), and every backend agrees.

Sharpness: ``scale`` is a plain float. For a learned or per-pointer sharpness β, pass
``q * β`` and ``scale=1.0``; gradients then flow to β through q.

Shapes:
    B  batch rows
    P  pointers (queries) per row
    N  memory slots
    A  address (key) width
    D  slot width
    S  splits of N in the Triton forward (partial results combined on the host)
    q [B, P, A]   k [N, A] (shared by all rows) or [B, N, A] (per row)   v [B, N, D]
    out [B, P, D]
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton is a Linux-only dependency
    HAS_TRITON = False

Backend = Literal["auto", "torch", "sdpa", "reference", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "sdpa", "reference", "triton")

# The CPU "torch" path switches from bmm to the grouped convolution once v holds this many
# elements (4 MiB of fp32). Measured on a 2-core AVX-512 machine (B ∈ {1, 8, 64},
# N ∈ {16 … 4096}, D = 64): below it the convolution's fixed cost loses to bmm.
_CONV_MIN_ELEMENTS = 1 << 20

# Largest A or D (after rounding up to a power of two) that one Triton tile holds.
_MAX_TILE = 256


@dataclass(frozen=True)
class ReadShape:
    """The sizes of one read, unpacked and checked once."""

    B: int  # batch rows
    P: int  # pointers per row
    N: int  # memory slots
    A: int  # address width
    D: int  # slot width
    shared_keys: bool  # k is [N, A] (same keys for every row) rather than [B, N, A]


def read_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> ReadShape:
    """Check that q, k, v form a pointer read and return its sizes; raise ValueError if not."""
    if q.dim() != 3:
        raise ValueError(f"q must be [B, P, A], got shape {tuple(q.shape)}")
    if v.dim() != 3:
        raise ValueError(f"v must be [B, N, D], got shape {tuple(v.shape)}")
    B, P, A = q.shape
    Bv, N, D = v.shape
    if Bv != B:
        raise ValueError(f"q has {B} batch rows but v has {Bv}")
    if k.dim() == 2:
        expected = (N, A)
    elif k.dim() == 3:
        expected = (B, N, A)
    else:
        raise ValueError(f"k must be [N, A] or [B, N, A], got shape {tuple(k.shape)}")
    if tuple(k.shape) != expected:
        raise ValueError(
            f"k has shape {tuple(k.shape)}, expected {expected} for q {tuple(q.shape)} "
            f"and v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.dtype.is_floating_point:
        raise ValueError(f"pointer_read needs floating-point tensors, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    return ReadShape(B=B, P=P, N=N, A=A, D=D, shared_keys=k.dim() == 2)


# --------------------------------------------------------------------------------------
# Torch paths
# --------------------------------------------------------------------------------------


def pointer_read_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """softmax(scale · q kᵀ) v with the scores materialised: the definition of a read."""
    read_shape(q, k, v)
    scores = scale * (q @ k.mT)  # [B, P, N]; [B,P,A] @ [A,N] folds into one GEMM if shared
    return torch.softmax(scores, dim=-1) @ v  # [B, P, D]; N = 0 gives zeros


class _WeightedSum(torch.autograd.Function):
    """out[b] = w[b] v[b] as a grouped 1×1 convolution, with a bmm backward.

    oneDNN's convolution parallelises the skinny per-row GEMMs (M = P rows) over the B
    groups, which MKL's batched GEMM does not; the backward is plain bmm (dw = dO vᵀ,
    dv = wᵀ dO), as in the reference's autograd.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, P, N = w.shape
        D = v.shape[2]
        ctx.save_for_backward(w, v)
        # conv1d: input [1, B·N, D] (channels = slots), weight [B·P, N, 1], groups = B
        out = F.conv1d(v.reshape(1, B * N, D), w.reshape(B * P, N, 1), groups=B)
        return out.view(B, P, D)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        w, v = ctx.saved_tensors
        dw = torch.bmm(dout, v.mT) if ctx.needs_input_grad[0] else None  # [B, P, N]
        dv = torch.bmm(w.mT, dout) if ctx.needs_input_grad[1] else None  # [B, N, D]
        return dw, dv


def pointer_read_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """The fastest correct torch read: the convolution path for large fp32 CPU memories,
    the reference otherwise (small memories, other dtypes, CUDA, N = 0)."""
    s = read_shape(q, k, v)
    use_conv = (
        v.device.type == "cpu"
        and v.dtype == torch.float32
        and s.N > 0
        and s.B * s.N * s.D >= _CONV_MIN_ELEMENTS
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )
    if not use_conv:
        return pointer_read_reference(q, k, v, scale)
    scores = (q @ k.mT).mul_(scale)  # [B, P, N]; in place: matmul keeps q and k, not this
    w = torch.softmax(scores, dim=-1)  # [B, P, N]
    return _WeightedSum.apply(w, v.contiguous())  # [B, P, D]


def pointer_read_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """The read through ``scaled_dot_product_attention`` (rows as batch, one head)."""
    s = read_shape(q, k, v)
    if s.N == 0:
        return pointer_read_reference(q, k, v, scale)
    kb = k.expand(s.B, s.N, s.A) if s.shared_keys else k  # [B, N, A], a view
    out = F.scaled_dot_product_attention(
        q.unsqueeze(1), kb.unsqueeze(1), v.unsqueeze(1), scale=scale
    )  # [B, 1, P, D]: SDPA's [batch, heads, L, E]
    return out.squeeze(1)


# --------------------------------------------------------------------------------------
# Triton path
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonTiling:
    """Tiling of the Triton read. ``None`` picks a default from the sizes and the device."""

    block_n: int | None = None  # slots per tile: a power of two ≥ 16
    num_splits: int | None = None  # splits of N in the forward (flash-decoding style)

    def __post_init__(self) -> None:
        if self.block_n is not None and (self.block_n < 16 or self.block_n & (self.block_n - 1)):
            raise ValueError(f"block_n must be a power of two ≥ 16, got {self.block_n}")
        if self.num_splits is not None and self.num_splits < 1:
            raise ValueError(f"num_splits must be ≥ 1, got {self.num_splits}")


if HAS_TRITON:

    @triton.jit
    def _matmul(a, b, ACC_T: tl.constexpr, USE_DOT: tl.constexpr):
        """[M, K] @ [K, N] → [M, N] in ACC_T; tl.dot needs every dim ≥ 16, so callers pad.

        fp64 takes the multiply-and-sum branch: older Triton releases have no fp64 tl.dot.
        """
        if USE_DOT:
            return tl.dot(a, b, input_precision="ieee").to(ACC_T)
        else:
            return tl.sum(a[:, :, None].to(ACC_T) * b[None, :, :].to(ACC_T), axis=1)

    @triton.jit
    def _read_fwd_kernel(
        QS, K, V, ACC, M, L,
        P, N, A, D, blocks_per_split,
        s_qb, s_qp, s_qa,
        s_kb, s_kn, s_ka,
        s_vb, s_vn, s_vd,
        s_accb, s_accs, s_accp, s_accd,
        s_mb, s_ms, s_mp,
        BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_A: tl.constexpr, BLOCK_D: tl.constexpr, IS_FP64: tl.constexpr,
    ):  # fmt: skip
        """One program: BLOCK_P pointers of row b over one split of N, online softmax.

        Writes the split's running max m, sum l = Σ exp(s − m) and acc = Σ exp(s − m) v;
        the host combines splits. QS holds scale · q, so scores are QS kᵀ.
        """
        pid_p = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        split = tl.program_id(2)
        ACC_T = tl.float64 if IS_FP64 else tl.float32
        USE_DOT = not IS_FP64

        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_a = tl.arange(0, BLOCK_A)
        offs_d = tl.arange(0, BLOCK_D)
        mask_p = offs_p < P
        mask_a = offs_a < A
        mask_d = offs_d < D

        q = tl.load(
            QS + b * s_qb + offs_p[:, None] * s_qp + offs_a[None, :] * s_qa,
            mask=mask_p[:, None] & mask_a[None, :],
            other=0.0,
        )  # [BLOCK_P, BLOCK_A]
        m_i = tl.full([BLOCK_P], float("-inf"), ACC_T)
        l_i = tl.zeros([BLOCK_P], ACC_T)
        acc = tl.zeros([BLOCK_P, BLOCK_D], ACC_T)

        n_lo = split * blocks_per_split * BLOCK_N
        n_hi = tl.minimum(n_lo + blocks_per_split * BLOCK_N, N)
        for start in range(n_lo, n_hi, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            k = tl.load(
                K + b * s_kb + offs_n[:, None] * s_kn + offs_a[None, :] * s_ka,
                mask=mask_n[:, None] & mask_a[None, :],
                other=0.0,
            )  # [BLOCK_N, BLOCK_A]
            s = _matmul(q, tl.trans(k), ACC_T, USE_DOT)  # [BLOCK_P, BLOCK_N]
            s = tl.where(mask_n[None, :], s, float("-inf"))
            # m' = max(m, max_n s);  l ← l·e^(m−m') + Σ e^(s−m');  acc ← acc·e^(m−m') + e^(s−m') v
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(
                V + b * s_vb + offs_n[:, None] * s_vn + offs_d[None, :] * s_vd,
                mask=mask_n[:, None] & mask_d[None, :],
                other=0.0,
            )  # [BLOCK_N, BLOCK_D]
            acc = acc * alpha[:, None] + _matmul(p.to(v.dtype), v, ACC_T, USE_DOT)
            m_i = m_new

        row = b * s_mb + split * s_ms + offs_p * s_mp
        tl.store(M + row, m_i, mask=mask_p)
        tl.store(L + row, l_i, mask=mask_p)
        tl.store(
            ACC + b * s_accb + split * s_accs + offs_p[:, None] * s_accp + offs_d[None, :] * s_accd,
            acc, mask=mask_p[:, None] & mask_d[None, :],
        )  # fmt: skip

    @triton.jit
    def _read_bwd_kernel(
        QS, K, V, DO, LSE, DELTA, DQP, DK, DV,
        P, N, A, D,
        s_qb, s_qp, s_qa,
        s_kb, s_kn, s_ka,
        s_vb, s_vn, s_vd,
        s_dob, s_dop, s_dod,
        s_lb, s_lp,
        s_dqb, s_dqn, s_dqp, s_dqa,
        s_dkb, s_dkn, s_dka,
        s_dvb, s_dvn, s_dvd,
        BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_A: tl.constexpr, BLOCK_D: tl.constexpr, IS_FP64: tl.constexpr,
    ):  # fmt: skip
        """One program: one tile of BLOCK_N slots of row b, looping over all pointers.

        p = exp(s − lse);  dv = pᵀ dO;  ds = p ∘ (dO vᵀ − δ) with δ = rowsum(dO ∘ out);
        dk = dsᵀ (scale·q);  this tile's share of dq/scale = ds k goes to DQP[b, tile]
        (summed on the host), so no atomics and the result is deterministic.
        """
        nb = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        ACC_T = tl.float64 if IS_FP64 else tl.float32
        USE_DOT = not IS_FP64

        offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_a = tl.arange(0, BLOCK_A)
        offs_d = tl.arange(0, BLOCK_D)
        mask_n = offs_n < N
        mask_a = offs_a < A
        mask_d = offs_d < D

        k = tl.load(
            K + b * s_kb + offs_n[:, None] * s_kn + offs_a[None, :] * s_ka,
            mask=mask_n[:, None] & mask_a[None, :],
            other=0.0,
        )  # [BLOCK_N, BLOCK_A]
        v = tl.load(
            V + b * s_vb + offs_n[:, None] * s_vn + offs_d[None, :] * s_vd,
            mask=mask_n[:, None] & mask_d[None, :],
            other=0.0,
        )  # [BLOCK_N, BLOCK_D]
        dk = tl.zeros([BLOCK_N, BLOCK_A], ACC_T)
        dv = tl.zeros([BLOCK_N, BLOCK_D], ACC_T)

        for p0 in range(0, P, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            mask_p = offs_p < P
            q = tl.load(
                QS + b * s_qb + offs_p[:, None] * s_qp + offs_a[None, :] * s_qa,
                mask=mask_p[:, None] & mask_a[None, :],
                other=0.0,
            )  # [BLOCK_P, BLOCK_A]
            do = tl.load(
                DO + b * s_dob + offs_p[:, None] * s_dop + offs_d[None, :] * s_dod,
                mask=mask_p[:, None] & mask_d[None, :],
                other=0.0,
            )  # [BLOCK_P, BLOCK_D]
            lse = tl.load(LSE + b * s_lb + offs_p * s_lp, mask=mask_p, other=0.0)
            delta = tl.load(DELTA + b * s_lb + offs_p * s_lp, mask=mask_p, other=0.0)

            s = _matmul(q, tl.trans(k), ACC_T, USE_DOT)  # [BLOCK_P, BLOCK_N]
            p = tl.exp(s - lse[:, None])
            p = tl.where(mask_p[:, None] & mask_n[None, :], p, 0.0)
            dv += _matmul(tl.trans(p).to(do.dtype), do, ACC_T, USE_DOT)
            dp = _matmul(do, tl.trans(v), ACC_T, USE_DOT)  # [BLOCK_P, BLOCK_N]
            ds = p * (dp - delta[:, None])
            dk += _matmul(tl.trans(ds).to(q.dtype), q, ACC_T, USE_DOT)
            dq = _matmul(ds.to(k.dtype), k, ACC_T, USE_DOT)  # [BLOCK_P, BLOCK_A]
            tl.store(
                DQP + b * s_dqb + nb * s_dqn + offs_p[:, None] * s_dqp + offs_a[None, :] * s_dqa,
                dq, mask=mask_p[:, None] & mask_a[None, :],
            )  # fmt: skip

        tl.store(
            DK + b * s_dkb + offs_n[:, None] * s_dkn + offs_a[None, :] * s_dka,
            dk, mask=mask_n[:, None] & mask_a[None, :],
        )  # fmt: skip
        tl.store(
            DV + b * s_dvb + offs_n[:, None] * s_dvn + offs_d[None, :] * s_dvd,
            dv, mask=mask_n[:, None] & mask_d[None, :],
        )  # fmt: skip


def triton_interpreted() -> bool:
    """True when the Triton kernels run in the interpreter (TRITON_INTERPRET=1 at import)."""
    return HAS_TRITON and isinstance(_read_fwd_kernel, InterpretedFunction)


def triton_supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether :func:`pointer_read_triton` can run these tensors here."""
    if not HAS_TRITON:
        return False
    s = read_shape(q, k, v)
    on_device = q.is_cuda or (triton_interpreted() and q.device.type == "cpu")
    return (
        on_device
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        and _tile(s.A) <= _MAX_TILE
        and _tile(s.D) <= _MAX_TILE
    )


def _tile(n: int) -> int:
    """The power-of-two tile that holds n (at least 16, the smallest tl.dot operand)."""
    return max(16, triton.next_power_of_2(n)) if HAS_TRITON else max(16, n)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(
    s: ReadShape, dtype: torch.dtype, tiling: TritonTiling
) -> tuple[int, int, int, int, int]:
    """(BLOCK_P, BLOCK_N, BLOCK_A, BLOCK_D, num_warps) for this read.

    Chosen from ptxas register reports for sm_80 (A ≤ 32): fp32 uses tl.dot in "ieee"
    precision (FMA, no tensor cores), which needs many registers, so it takes narrow N
    tiles and 8 warps; these choices compile without spills up to D = 128 (fp32, fp64)
    and D = 256 (fp16/bf16). Untimed on a GPU: none was available when they were chosen.
    """
    block_a, block_d = _tile(s.A), _tile(s.D)
    if dtype in (torch.float16, torch.bfloat16):
        block_n, warps = (64, 4) if block_d <= 64 else (32, 8)
    elif dtype == torch.float32:
        block_n, warps = (32 if block_d <= 64 else 16), 8
    else:  # fp64 multiply-and-sum holds [BLOCK_P, BLOCK_N, BLOCK_A] at once
        block_n, warps = 16, 8
    if tiling.block_n is not None:
        block_n = tiling.block_n
    return 16, block_n, block_a, block_d, warps


def _default_splits(s: ReadShape, n_blocks: int, p_blocks: int, device: torch.device) -> int:
    """Enough splits of N to give each streaming multiprocessor about two programs."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(n_blocks, math.ceil(2 * sms / max(1, s.B * p_blocks))))


def _triton_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, tiling: TritonTiling
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, P, D], lse [B, P]) by the split forward kernel and a host-side combine."""
    s = read_shape(q, k, v)
    acc_t = _acc_dtype(q.dtype)
    if s.N == 0 or s.B == 0 or s.P == 0:
        out = v.new_zeros(s.B, s.P, s.D)
        return out, torch.full((s.B, s.P), float("-inf"), dtype=acc_t, device=q.device)
    BP, BN, BA, BD, warps = _blocks(s, q.dtype, tiling)
    n_blocks = triton.cdiv(s.N, BN)
    p_blocks = triton.cdiv(s.P, BP)
    splits = tiling.num_splits or _default_splits(s, n_blocks, p_blocks, q.device)
    per_split = triton.cdiv(n_blocks, min(splits, n_blocks))
    splits = triton.cdiv(n_blocks, per_split)  # every split holds at least one slot

    qs = q * scale  # [B, P, A]: the scale folded into q, so the kernel never sees it
    s_k = (0, *k.stride()) if s.shared_keys else k.stride()  # shared keys: row stride 0
    acc = torch.empty(s.B, splits, s.P, s.D, dtype=acc_t, device=q.device)  # [B, S, P, D]
    m = torch.empty(s.B, splits, s.P, dtype=acc_t, device=q.device)  # [B, S, P]
    l = torch.empty_like(m)  # [B, S, P]
    grid = (p_blocks, s.B, splits)
    with _device_guard(q):
        _read_fwd_kernel[grid](
            qs, k, v, acc, m, l,
            s.P, s.N, s.A, s.D, per_split,
            *qs.stride(), *s_k, *v.stride(), *acc.stride(), *m.stride(),
            BLOCK_P=BP, BLOCK_N=BN, BLOCK_A=BA, BLOCK_D=BD, IS_FP64=q.dtype == torch.float64,
            num_warps=warps,
        )  # fmt: skip
    # Combine splits: M = maxₛ mₛ, l = Σₛ e^(mₛ−M) lₛ, out = Σₛ e^(mₛ−M) accₛ / l
    m_max = m.amax(dim=1)  # [B, P]
    w = torch.exp(m - m_max.unsqueeze(1))  # [B, S, P]
    l_tot = (w * l).sum(dim=1)  # [B, P]
    out = (w.unsqueeze(-1) * acc).sum(dim=1) / l_tot.unsqueeze(-1)  # [B, P, D]
    lse = m_max + torch.log(l_tot)  # [B, P]
    return out.to(v.dtype), lse


def _triton_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    scale: float,
    tiling: TritonTiling,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from the stored logsumexp; probabilities are recomputed per tile."""
    s = read_shape(q, k, v)
    if s.N == 0 or s.B == 0 or s.P == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    acc_t = _acc_dtype(q.dtype)
    BP, BN, BA, BD, warps = _blocks(s, q.dtype, tiling)
    n_blocks = triton.cdiv(s.N, BN)
    qs = q * scale  # [B, P, A]
    delta = (dout.to(acc_t) * out.to(acc_t)).sum(-1)  # [B, P]: δ = rowsum(dO ∘ out)
    lse = lse.contiguous()
    delta = delta.contiguous()
    s_k = (0, *k.stride()) if s.shared_keys else k.stride()
    dqp = torch.empty(s.B, n_blocks, s.P, s.A, dtype=acc_t, device=q.device)  # [B, N/BN, P, A]
    dk = torch.empty(s.B, s.N, s.A, dtype=acc_t, device=q.device)  # per row, even if shared
    dv = torch.empty(s.B, s.N, s.D, dtype=acc_t, device=q.device)
    with _device_guard(q):
        _read_bwd_kernel[(n_blocks, s.B)](
            qs, k, v, dout, lse, delta, dqp, dk, dv,
            s.P, s.N, s.A, s.D,
            *qs.stride(), *s_k, *v.stride(), *dout.stride(), *lse.stride(),
            *dqp.stride(), *dk.stride(), *dv.stride(),
            BLOCK_P=BP, BLOCK_N=BN, BLOCK_A=BA, BLOCK_D=BD, IS_FP64=q.dtype == torch.float64,
            num_warps=warps,
        )  # fmt: skip
    dq = dqp.sum(dim=1) * scale  # [B, P, A]: ∂s/∂q = scale · k
    if s.shared_keys:
        dk = dk.sum(dim=0)  # [N, A]: shared keys gather every row's gradient
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _device_guard(t: torch.Tensor):
    """Launch on t's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _TritonRead(torch.autograd.Function):
    """The Triton read with its Triton backward; saves q, k, v, out and lse [B, P]."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, tiling: TritonTiling):
        out, lse = _triton_forward(q, k, v, scale, tiling)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        ctx.tiling = tiling
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _triton_backward(q, k, v, out, lse, dout, ctx.scale, ctx.tiling)
        needs = ctx.needs_input_grad
        return (dq if needs[0] else None, dk if needs[1] else None, dv if needs[2] else None,
                None, None)  # fmt: skip


def pointer_read_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    tiling: TritonTiling = TritonTiling(),  # noqa: B008 - frozen, so a safe default
) -> torch.Tensor:
    """The fused Triton read (forward and backward). Needs CUDA tensors, or CPU tensors
    with the interpreter on (``TRITON_INTERPRET=1`` set before this module is imported)."""
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the triton package, which is not installed")
    s = read_shape(q, k, v)
    if not (q.is_cuda or (triton_interpreted() and q.device.type == "cpu")):
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {q.device}); to run the kernels on CPU "
            "set TRITON_INTERPRET=1 before llamacpu.kernels.pointer_read is imported"
        )
    if not triton_supports(q, k, v):
        raise ValueError(
            f"backend='triton' supports fp16/bf16/fp32/fp64 with A, D ≤ {_MAX_TILE}; "
            f"got {q.dtype}, A={s.A}, D={s.D}; use backend='torch'"
        )
    return _TritonRead.apply(q, k, v, float(scale), tiling)


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------


def pointer_read(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Read memory through P pointers per row: softmax(scale · q kᵀ) v.

    q [B, P, A], k [N, A] (shared keys) or [B, N, A] (per-row keys), v [B, N, D] → [B, P, D].
    An empty memory (N = 0) reads as zeros. ``backend="auto"`` uses Triton for CUDA
    tensors it supports and the fastest torch path otherwise; the other names force one
    implementation (for tests and benchmarks). Differentiable in q, k and v.
    """
    if isinstance(scale, torch.Tensor):
        raise TypeError("scale must be a Python float; fold a tensor sharpness into q instead")
    if backend == "auto":
        if q.is_cuda and triton_supports(q, k, v):
            return pointer_read_triton(q, k, v, scale)
        return pointer_read_torch(q, k, v, scale)
    if backend == "torch":
        return pointer_read_torch(q, k, v, scale)
    if backend == "sdpa":
        return pointer_read_sdpa(q, k, v, scale)
    if backend == "reference":
        return pointer_read_reference(q, k, v, scale)
    if backend == "triton":
        return pointer_read_triton(q, k, v, scale)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
