"""Benchmark the pointer read on CPU: our path next to the naive baseline.

For each memory size N it times one read, out = softmax(scale · q kᵀ) v, three ways:

- ``naive``  materialise softmax(q kᵀ), then bmm (``pointer_read_reference``)
- ``sdpa``   ``torch.nn.functional.scaled_dot_product_attention``
- ``ours``   ``pointer_read(..., backend="auto")``, what llamacpu.machine.memory calls

and reports time per call, the speed-up over ``naive``, and the achieved bandwidth
(bytes of k and v, each read once, per second) next to the machine's copy bandwidth
measured in the same run (``Tensor.copy_`` of a buffer far larger than the caches;
GB/s = 2 · bytes / time, since a copy reads and writes every byte).

Methods and the copy are interleaved within each repeat and the best repeat is reported
(the median too), because the machine may be shared: the load average is printed with
the results, and the copy bandwidth is the best seen over the whole run.

Usage:
    python benchmarks/bench_read.py                  # markdown table
    python benchmarks/bench_read.py --json           # JSON on stdout
    python benchmarks/bench_read.py --sizes 1024 --keys per_row --backward

Shapes: B batch rows, P pointers, N slots, A address width, D slot width.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from llamacpu.kernels.pointer_read import pointer_read, pointer_read_reference, pointer_read_sdpa

METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "naive": pointer_read_reference,
    "sdpa": pointer_read_sdpa,
    "ours": lambda q, k, v, s: pointer_read(q, k, v, s, backend="auto"),
}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    sizes: tuple[int, ...] = (1024, 16384, 65536)  # memory sizes N
    batch: int = 8  # B
    pointers: int = 3  # P
    addr: int = 32  # A
    width: int = 64  # D
    keys: tuple[str, ...] = ("shared", "per_row")  # k [N, A] and/or k [B, N, A]
    repeats: int = 15  # timed repeats per method (best and median reported)
    min_time: float = 0.03  # seconds of calls per repeat
    copy_mib: int = 256  # size of each copy buffer (well past the last-level cache)
    backward: bool = False  # also time forward + backward
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"sizes must be positive, got {self.sizes}")
        if min(self.batch, self.pointers, self.addr, self.width, self.repeats) < 1:
            raise ValueError("batch, pointers, addr, width and repeats must be ≥ 1")
        unknown = set(self.keys) - {"shared", "per_row"}
        if unknown or not self.keys:
            raise ValueError(f"keys must be 'shared' and/or 'per_row', got {self.keys}")


@dataclass(frozen=True)
class Row:
    """One measured (size, key layout, method, pass) cell."""

    N: int
    keys: str
    method: str
    passes: str  # "fwd" or "fwd+bwd"
    ms_best: float
    ms_median: float
    gbps: float | None  # bytes of k and v read once / best time (forward only)
    pct_copy: float | None  # gbps as a percentage of the copy bandwidth
    speedup: float  # naive's best time / this method's best time
    max_err: float  # max |out − naive| on this input


@dataclass
class Report:
    config: BenchConfig
    copy_gbps: float
    machine: dict[str, object] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


def _per_call(fn: Callable[[], object], min_time: float) -> float:
    """Seconds per call of fn, averaged over at least min_time seconds of calls."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


class CopyProbe:
    """Times ``dst.copy_(src)`` between the reads, so both see the same machine load.

    GB/s = 2 · bytes / time (a copy reads and writes every byte); the best over the run.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        n = cfg.copy_mib * 2**20 // 4
        self.src = torch.rand(n)  # touched, so no page is a shared zero page
        self.dst = torch.rand(n)
        self.nbytes = 2 * n * 4
        self.best = float("inf")

    def __call__(self) -> None:
        self.dst.copy_(self.src)

    def record(self, seconds: list[float]) -> None:
        self.best = min(self.best, *seconds)

    @property
    def gbps(self) -> float:
        return self.nbytes / self.best / 1e9


def _inputs(cfg: BenchConfig, N: int, keys: str, grad: bool):
    g = torch.Generator().manual_seed(cfg.seed)
    B, P, A, D = cfg.batch, cfg.pointers, cfg.addr, cfg.width
    q = torch.randn(B, P, A, generator=g)
    k = torch.randn(*((N, A) if keys == "shared" else (B, N, A)), generator=g)
    v = torch.randn(B, N, D, generator=g)
    return tuple(x.requires_grad_(grad) for x in (q, k, v))


def _bind(f, q, k, v, scale: float, backward: bool = False) -> Callable[[], object]:
    """A no-argument call of one read (and its backward, from out.sum())."""
    if backward:
        return lambda: f(q, k, v, scale).sum().backward()
    return lambda: f(q, k, v, scale)


def _timed(fns: dict[str, Callable[[], object]], cfg: BenchConfig) -> dict[str, list[float]]:
    """Per-call seconds of each fn, methods interleaved within every repeat."""
    for fn in fns.values():  # warm up: allocator, oneDNN primitive caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(cfg.repeats):
        for name, fn in fns.items():
            times[name].append(_per_call(fn, cfg.min_time))
    return times


def run(cfg: BenchConfig) -> Report:
    """Measure every size, key layout and method; return the report."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    report = Report(config=cfg, copy_gbps=0.0, machine=_machine())
    copy = CopyProbe(cfg)
    fwd_rows: list[tuple] = []
    for N in cfg.sizes:
        for keys in cfg.keys:
            scale = cfg.addr**-0.5
            q, k, v = _inputs(cfg, N, keys, grad=False)
            nbytes = (k.numel() + v.numel()) * k.element_size()
            with torch.no_grad():
                ref = pointer_read_reference(q, k, v, scale)
                errs = {m: (f(q, k, v, scale) - ref).abs().max().item() for m, f in METHODS.items()}
                calls = {m: _bind(f, q, k, v, scale) for m, f in METHODS.items()}
                fwd = _timed({**calls, "copy": copy}, cfg)
            copy.record(fwd.pop("copy"))
            fwd_rows.append((N, keys, fwd, errs, nbytes))
            if cfg.backward:
                qg, kg, vg = _inputs(cfg, N, keys, grad=True)
                calls = {m: _bind(f, qg, kg, vg, scale, backward=True) for m, f in METHODS.items()}
                both = _timed(calls, cfg)
                report.rows += _rows(N, keys, "fwd+bwd", both, errs, None, 0.0)
    report.copy_gbps = copy.gbps
    fwd: list[Row] = []
    for N, keys, times, errs, nbytes in fwd_rows:  # % of copy needs the whole run's copy
        fwd += _rows(N, keys, "fwd", times, errs, nbytes, copy.gbps)
    report.rows = fwd + report.rows
    report.machine["loadavg_after"] = _loadavg()
    return report


def _rows(N, keys, passes, times, errs, nbytes, copy_gbps) -> list[Row]:
    naive_best = min(times["naive"])
    rows = []
    for method, ts in times.items():
        best = min(ts)
        gbps = nbytes / best / 1e9 if nbytes is not None else None
        rows.append(
            Row(
                N=N, keys=keys, method=method, passes=passes,
                ms_best=best * 1e3, ms_median=statistics.median(ts) * 1e3,
                gbps=gbps, pct_copy=None if gbps is None else 100 * gbps / copy_gbps,
                speedup=naive_best / best, max_err=errs[method],
            )
        )  # fmt: skip
    return rows


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine() -> dict[str, object]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "loadavg_before": _loadavg(),
    }


def to_markdown(report: Report) -> str:
    cfg = report.config
    lines = [
        f"pointer read on CPU: B={cfg.batch}, P={cfg.pointers}, A={cfg.addr}, D={cfg.width}, "
        f"fp32, torch {report.machine['torch']}, {report.machine['threads']} threads, "
        f"load average {report.machine['loadavg_before']} → {report.machine['loadavg_after']}",
        f"copy bandwidth (Tensor.copy_, {cfg.copy_mib} MiB, 2·bytes/time, best of run): "
        f"**{report.copy_gbps:.1f} GB/s**",
        "",
        "| N | keys | method | pass | ms/call (best) | ms/call (median) | GB/s | % of copy "
        "| speed-up vs naive | max err |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        gbps = "—" if r.gbps is None else f"{r.gbps:.1f}"
        pct = "—" if r.pct_copy is None else f"{r.pct_copy:.0f}%"
        lines.append(
            f"| {r.N} | {r.keys} | {r.method} | {r.passes} | {r.ms_best:.3f} | "
            f"{r.ms_median:.3f} | {gbps} | {pct} | {r.speedup:.2f}× | {r.max_err:.1e} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, bool]:
    d = BenchConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes), help="memory sizes N")
    ap.add_argument("--batch", type=int, default=d.batch, help="batch rows B")
    ap.add_argument("--pointers", type=int, default=d.pointers, help="pointers per row P")
    ap.add_argument("--addr", type=int, default=d.addr, help="address width A")
    ap.add_argument("--width", type=int, default=d.width, help="slot width D")
    ap.add_argument("--keys", choices=["shared", "per_row", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=d.repeats, help="timed repeats per method")
    ap.add_argument("--min-time", type=float, default=d.min_time, help="seconds per repeat")
    ap.add_argument("--copy-mib", type=int, default=d.copy_mib, help="copy buffer size, MiB")
    ap.add_argument("--backward", action="store_true", help="also time forward + backward")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    a = ap.parse_args(argv)
    keys = ("shared", "per_row") if a.keys == "both" else (a.keys,)
    cfg = BenchConfig(
        sizes=tuple(a.sizes), batch=a.batch, pointers=a.pointers, addr=a.addr, width=a.width,
        keys=keys, repeats=a.repeats, min_time=a.min_time, copy_mib=a.copy_mib,
        backward=a.backward, threads=a.threads,
    )  # fmt: skip
    return cfg, a.json


def main(argv: list[str] | None = None) -> Report:
    cfg, as_json = parse_args(argv)
    report = run(cfg)
    if as_json:
        payload = {
            "config": asdict(cfg),
            "copy_gbps": report.copy_gbps,
            "machine": report.machine,
            "rows": [asdict(r) for r in report.rows],
        }
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(to_markdown(report))
    return report


if __name__ == "__main__":
    main()
