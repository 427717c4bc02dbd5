"""The fused pointer read (llamacpu.kernels.pointer_read) against its torch reference.

Three groups:
- CPU torch paths ("torch", "sdpa", "auto") == reference: values, gradients, gradcheck.
- The Triton kernels under the interpreter. ``TRITON_INTERPRET=1`` must be set before the
  kernels are decorated, so one subprocess (this file run as a script) imports the module
  with it set, runs every case and prints JSON; the tests here assert on that report.
- The Triton kernels compiled ahead of time for sm_80, which checks what the interpreter
  does not (tl.dot shapes, type agreement of branches) without a GPU.

Shapes: B batch, P pointers, N slots, A address width, D slot width.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from unittest import mock

import llamacpu.kernels.pointer_read as pr
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llamacpu.kernels.pointer_read import (
    TritonTiling,
    pointer_read,
    pointer_read_reference,
    pointer_read_torch,
    read_shape,
)

ATOL = 1e-5
CPU_BACKENDS = ("torch", "sdpa", "auto")


def _inputs(B, P, N, A, D, shared, dtype=torch.float32, seed=0, key_scale=1.0):
    """Seeded q [B,P,A], k [N,A] or [B,N,A], v [B,N,D], all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, P, A, generator=g, dtype=dtype)
    k = torch.randn(*((N, A) if shared else (B, N, A)), generator=g, dtype=dtype) * key_scale
    v = torch.randn(B, N, D, generator=g, dtype=dtype)
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_()


def _value_and_grads(fn, q, k, v, scale, seed=1):
    out = fn(q, k, v, scale)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad(out, (q, k, v), g, allow_unused=True)
    grads = tuple(torch.zeros_like(x) if d is None else d for x, d in zip((q, k, v), grads))
    return out, grads


def _assert_matches_reference(fn, q, k, v, scale, atol=ATOL, rtol=0.0):
    out, grads = _value_and_grads(fn, q, k, v, scale)
    ref, ref_grads = _value_and_grads(pointer_read_reference, q, k, v, scale)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    for name, d, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(d, r, atol=atol, rtol=rtol, msg=lambda m, n=name: f"d{n}: {m}")


# --------------------------------------------------------------------------------------
# Reference and CPU paths
# --------------------------------------------------------------------------------------


def test_reference_is_softmax_weighted_sum():
    q, k, v = _inputs(2, 3, 7, 4, 5, shared=False, dtype=torch.float64)
    out = pointer_read_reference(q, k, v, 0.5)
    for b in range(2):
        for p in range(3):
            w = torch.softmax(0.5 * (k[b] @ q[b, p]), dim=0)  # [N]
            torch.testing.assert_close(out[b, p], w @ v[b])


def test_one_hot_keys_read_exactly_one_slot():
    """Orthogonal keys and a sharp scale turn the read into a lookup: a differentiable RAM."""
    N = 6
    keys = torch.eye(N)  # [N, A=N]
    v = torch.arange(2 * N * 3, dtype=torch.float32).view(2, N, 3)
    q = keys[torch.tensor([[4, 1], [0, 5]])]  # [B=2, P=2, A]: pointers to slots 4,1 / 0,5
    for backend in ("reference", *CPU_BACKENDS):
        out = pointer_read(q, keys, v, 100.0, backend=backend)
        torch.testing.assert_close(out[0], v[0, [4, 1]])
        torch.testing.assert_close(out[1], v[1, [0, 5]])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_row"])
@pytest.mark.parametrize(
    "B,P,N,A,D",
    [(2, 1, 5, 4, 3), (3, 3, 37, 8, 16), (2, 6, 100, 32, 64), (2, 3, 8192, 32, 64)],
)
def test_cpu_backends_match_reference(backend, shared, B, P, N, A, D):
    q, k, v = _inputs(B, P, N, A, D, shared)
    _assert_matches_reference(
        lambda q, k, v, s: pointer_read(q, k, v, s, backend=backend), q, k, v, A**-0.5
    )


def test_torch_path_uses_convolution_for_large_fp32_memories():
    q, k, v = _inputs(2, 3, 8192, 32, 64, shared=True)  # v holds 2**20 elements
    with mock.patch.object(pr._WeightedSum, "apply", wraps=pr._WeightedSum.apply) as spy:
        pointer_read_torch(q, k, v, 0.2)
        assert spy.call_count == 1
        small = _inputs(2, 3, 16, 32, 64, shared=True)
        pointer_read_torch(*small, 0.2)
        pointer_read_torch(*(x.double() for x in _inputs(2, 3, 8192, 32, 64, True)), 0.2)
        assert spy.call_count == 1  # small memories and fp64 take the reference


@pytest.mark.parametrize("backend", ("reference", *CPU_BACKENDS))
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_row"])
def test_empty_memory_reads_zero(backend, shared):
    q, k, v = _inputs(2, 3, 0, 4, 5, shared)
    out = pointer_read(q, k, v, 1.0, backend=backend)
    assert out.shape == (2, 3, 5)
    assert torch.equal(out, torch.zeros(2, 3, 5))
    (dq,) = torch.autograd.grad(out.sum(), q)
    assert torch.equal(dq, torch.zeros_like(q))


@pytest.mark.parametrize("backend", ("reference", "torch", "sdpa"))
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_row"])
def test_gradcheck_float64(backend, shared):
    q, k, v = _inputs(2, 2, 5, 3, 4, shared, dtype=torch.float64)
    fn = lambda q, k, v: pointer_read(q, k, v, 0.7, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_gradcheck_weighted_sum_convolution():
    """The convolution path's own autograd.Function (chosen only for large memories)."""
    g = torch.Generator().manual_seed(3)
    w = torch.rand(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(pr._WeightedSum.apply(w, v), w @ v)
    assert torch.autograd.gradcheck(pr._WeightedSum.apply, (w, v))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    B=st.integers(1, 3),
    P=st.integers(1, 6),
    N=st.integers(0, 40),
    A=st.integers(1, 9),
    D=st.integers(1, 9),
    shared=st.booleans(),
    backend=st.sampled_from(CPU_BACKENDS),
)
def test_cpu_backends_match_reference_on_random_shapes(B, P, N, A, D, shared, backend):
    q, k, v = _inputs(B, P, N, A, D, shared, key_scale=3.0)  # sharp reads: gradients ~10
    _assert_matches_reference(
        lambda q, k, v, s: pointer_read(q, k, v, s, backend=backend), q, k, v, 1.3, rtol=1e-5
    )


def test_bad_inputs_raise_clear_errors():
    q, k, v = _inputs(2, 3, 5, 4, 6, shared=True)
    with pytest.raises(ValueError, match=r"k has shape \(5, 3\)"):
        read_shape(q, k[:, :3], v)
    with pytest.raises(ValueError, match="batch rows"):
        read_shape(q[:1], k, v)
    with pytest.raises(ValueError, match="share a dtype"):
        read_shape(q, k.double(), v)
    with pytest.raises(ValueError, match=r"q must be \[B, P, A\]"):
        read_shape(q[0], k, v)
    with pytest.raises(ValueError, match="unknown backend"):
        pointer_read(q, k, v, 1.0, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Python float"):
        pointer_read(q, k, v, torch.tensor(1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="power of two"):
        TritonTiling(block_n=24)


@pytest.mark.skipif(not pr.HAS_TRITON, reason="triton is not installed")
def test_triton_backend_refuses_cpu_tensors_without_the_interpreter():
    if pr.triton_interpreted():
        pytest.skip("this process runs Triton in the interpreter")
    q, k, v = _inputs(1, 1, 4, 4, 4, shared=True)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        pointer_read(q, k, v, 1.0, backend="triton")
    torch.testing.assert_close(pointer_read(q, k, v, 1.0), pointer_read_reference(q, k, v, 1.0))


# --------------------------------------------------------------------------------------
# Triton kernels under the interpreter (in a subprocess)
# --------------------------------------------------------------------------------------

# (name, B, P, N, A, D, shared, block_n, num_splits). N = 37 and 100 are not multiples of
# the block sizes; P = 17 spans two pointer blocks of 16; N = 0 is an empty memory.
TRITON_CASES = [
    ("p1_shared", 2, 1, 37, 8, 5, True, 16, None),
    ("p3_shared", 2, 3, 37, 8, 5, True, 16, None),
    ("p6_shared", 2, 6, 37, 8, 5, True, None, None),
    ("p1_per_row", 2, 1, 37, 8, 5, False, 16, None),
    ("p3_per_row", 2, 3, 37, 8, 5, False, None, None),
    ("p6_per_row", 2, 6, 37, 8, 5, False, 16, None),
    ("wide_a20_d40_splits", 1, 3, 100, 20, 40, True, 16, 3),
    ("per_row_splits", 2, 3, 100, 4, 2, False, 16, 2),
    ("n_multiple_of_block", 2, 3, 32, 16, 16, False, 16, None),
    ("p17_two_pointer_blocks", 1, 17, 20, 4, 4, True, 16, None),
    ("empty_shared", 2, 3, 0, 4, 5, True, None, None),
    ("empty_per_row", 2, 6, 0, 4, 5, False, None, None),
    ("one_slot", 2, 3, 1, 4, 5, False, None, None),
]
GRADCHECK_CASES = [("gradcheck_shared", True), ("gradcheck_per_row", False)]


def _interpreter_worker() -> None:
    """Run in a subprocess with TRITON_INTERPRET=1; print one JSON report on stdout."""
    assert pr.triton_interpreted(), "TRITON_INTERPRET=1 must be set before the import"
    report: dict[str, dict] = {}
    for name, B, P, N, A, D, shared, block_n, splits in TRITON_CASES:
        q, k, v = _inputs(B, P, N, A, D, shared)
        tiling = TritonTiling(block_n=block_n, num_splits=splits)
        scale = A**-0.5
        out, grads = _value_and_grads(
            lambda q, k, v, s, t=tiling: pr.pointer_read_triton(q, k, v, s, t), q, k, v, scale
        )
        ref, ref_grads = _value_and_grads(pointer_read_reference, q, k, v, scale)
        report[name] = {
            "shape": list(out.shape),
            "finite": bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(d).all()) for d in grads),
            "out": (out - ref).abs().max().item() if out.numel() else 0.0,
            **{f"d{n}": ((d - r).abs().max().item() if d.numel() else 0.0)
               for n, d, r in zip("qkv", grads, ref_grads)},
            "max_abs_out": out.abs().max().item() if out.numel() else 0.0,
        }  # fmt: skip
    # Strided inputs: a transposed q, per-row keys as a stride-0 expand, every other v column.
    q, k, v = _inputs(2, 3, 37, 8, 10, shared=True)
    qt = q.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    kx = k.detach().expand(2, 37, 8).requires_grad_()
    vs = v.detach()[:, :, ::2].requires_grad_()
    out, grads = _value_and_grads(lambda *a: pointer_read(*a, backend="triton"), qt, kx, vs, 0.4)
    ref, ref_grads = _value_and_grads(pointer_read_reference, qt, kx, vs, 0.4)
    report["strided_inputs"] = {
        "shape": list(out.shape), "finite": True, "out": (out - ref).abs().max().item(),
        **{f"d{n}": (d - r).abs().max().item() for n, d, r in zip("qkv", grads, ref_grads)},
        "max_abs_out": out.abs().max().item(),
    }  # fmt: skip
    for name, shared in GRADCHECK_CASES:
        q, k, v = _inputs(1, 2, 5, 3, 2, shared, dtype=torch.float64)
        fn = lambda q, k, v: pr.pointer_read_triton(q, k, v, 0.9, TritonTiling(num_splits=2))  # noqa: E731
        report[name] = {"ok": bool(torch.autograd.gradcheck(fn, (q, k, v), raise_exception=False))}
    # backend="auto" keeps CPU tensors on the torch path even when Triton is interpreted.
    q, k, v = _inputs(1, 1, 4, 4, 4, shared=True)
    with mock.patch.object(pr._TritonRead, "apply", side_effect=AssertionError("triton used")):
        pointer_read(q, k, v, 1.0)
    report["auto_stays_on_torch"] = {"ok": True}
    print(json.dumps(report))


@pytest.fixture(scope="module")
def interpreter_report() -> dict[str, dict]:
    if not pr.HAS_TRITON:
        pytest.skip("triton is not installed: the Triton kernels cannot be checked here")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--interpreter-worker"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [c[0] for c in TRITON_CASES] + ["strided_inputs"])
def test_triton_matches_reference_under_interpreter(interpreter_report, case):
    r = interpreter_report[case]
    assert r["finite"], f"{case}: non-finite values or gradients"
    for key in ("out", "dq", "dk", "dv"):
        assert r[key] <= ATOL, f"{case}: {key} differs from the reference by {r[key]:.2e}"
    spec = {c[0]: c for c in TRITON_CASES}.get(case)
    if spec is not None:
        _, B, P, N, _, D, *_ = spec
        assert r["shape"] == [B, P, D]
        if N == 0:
            assert r["max_abs_out"] == 0.0  # an empty memory reads as zeros, not NaN
        else:
            assert r["max_abs_out"] > 0.0


@pytest.mark.parametrize("case", [c[0] for c in GRADCHECK_CASES] + ["auto_stays_on_torch"])
def test_triton_gradcheck_and_dispatch_under_interpreter(interpreter_report, case):
    assert interpreter_report[case]["ok"], case


# --------------------------------------------------------------------------------------
# Triton kernels compiled for a GPU target (no GPU needed)
# --------------------------------------------------------------------------------------


def test_triton_kernels_compile_for_sm80():
    if not pr.HAS_TRITON or pr.triton_interpreted():
        pytest.skip("needs triton, not in interpreter mode")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    s = read_shape(*(x.detach() for x in _inputs(2, 3, 64, 32, 64, shared=True)))
    BP, BN, BA, BD, warps = pr._blocks(s, torch.float32, TritonTiling())
    constexprs = {"BLOCK_P": BP, "BLOCK_N": BN, "BLOCK_A": BA, "BLOCK_D": BD, "IS_FP64": False}
    acc_ptrs = {"ACC", "M", "L", "LSE", "DELTA", "DQP", "DK", "DV"}
    data_ptrs = {"QS", "K", "V", "DO"}
    for kernel in (pr._read_fwd_kernel, pr._read_bwd_kernel):
        names = kernel.arg_names
        signature = {
            n: "constexpr" if n in constexprs
            else "*fp32" if n in acc_ptrs | data_ptrs
            else "i32"
            for n in names
        }  # fmt: skip
        src = ASTSource(
            fn=kernel, signature=signature,
            constexprs={(names.index(n),): v for n, v in constexprs.items()},
        )  # fmt: skip
        try:
            compiled = triton.compile(
                src, target=GPUTarget("cuda", 80, 32), options={"num_warps": warps}
            )
        except RuntimeError as e:  # no ptxas/CUDA toolchain shipped with this triton build
            if "ptxas" in str(e).lower():
                pytest.skip(f"no ptxas: {e}")
            raise
        assert "cubin" in compiled.asm and ".entry" in compiled.asm["ptx"]


if __name__ == "__main__" and "--interpreter-worker" in sys.argv:
    _interpreter_worker()


# --------------------------------------------------------------------------------------
# The benchmark script still runs (tiny sizes; its numbers are not checked here)
# --------------------------------------------------------------------------------------


def test_bench_read_script_runs(capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_read.py"
    spec = importlib.util.spec_from_file_location("bench_read", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_read", bench)  # dataclasses look it up there
    spec.loader.exec_module(bench)
    argv = ["--sizes", "64", "--repeats", "1", "--min-time", "0.001", "--copy-mib", "1"]
    report = bench.main([*argv, "--json", "--backward"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["copy_gbps"] > 0
    assert {(r["keys"], r["method"], r["passes"]) for r in payload["rows"]} == {
        (keys, m, p)
        for keys in ("shared", "per_row")
        for m in ("naive", "sdpa", "ours")
        for p in ("fwd", "fwd+bwd")
    }
    assert all(r.max_err < ATOL for r in report.rows)
    assert "| 64 | shared | ours | fwd |" in bench.to_markdown(report)
