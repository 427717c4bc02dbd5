"""Cost of the weight-token channel's hooks on the controller's LM, side by side.

    python benchmarks/bench_homoiconic.py [--batch 8] [--tokens 64] [--repeats 20]

One tiny Llama (the controller's default size, H = 64, 2 layers), one thread. Forward
passes over ``batch × tokens`` random ids, timed as the best of ``repeats`` (CPU time of
this process), for: the unwrapped model; hooked q/v but no delta set; per-row rank-4 deltas
on q/v; per-row deltas on all seven linear layers of each block; and a whole
``WeightChannel`` pass (``prefix <weights> m_1..m_4`` then ``</weights>`` + continuation
on the cache) against one plain forward over the same number of positions. Ratios are to
the unwrapped forward in the same run. Also checks that a zero delta is bit-identical.
"""

from __future__ import annotations

import argparse
import time

import torch

from llamacpu.llm.channel import (
    ChannelConfig,
    LowRankDelta,
    WeightChannel,
    deltas,
    wrap_linear_layers,
)
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.models import build_tiny_llama

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if min(args.batch, args.tokens, args.repeats) < 1:
        ap.error("--batch, --tokens and --repeats must be at least 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lm = build_tiny_llama(ControllerConfig(), 61).eval()
    B, T = args.batch, args.tokens
    ids = torch.randint(3, 61, (B, T))
    rows = []

    def rand(layers, r=4):
        return {n: LowRankDelta(torch.randn(B, o, r) * 0.1, torch.randn(B, i, r) * 0.1)
                for n, (o, i) in layers.shapes.items()}

    with torch.no_grad():
        base_logits = lm(ids).logits
        t0 = best(lambda: lm(ids), args.repeats)
        rows.append(("unwrapped forward", t0))
        layers = wrap_linear_layers(lm, ("q_proj", "v_proj"))
        rows.append(("hooked q, v; no delta", best(lambda: lm(ids), args.repeats)))
        d = rand(layers)
        with deltas(lm, d):
            rows.append(("per-row rank-4 deltas on q, v", best(lambda: lm(ids), args.repeats)))
        zero = {n: LowRankDelta(torch.zeros_like(x.u).requires_grad_(), x.v) for n, x in d.items()}
        with deltas(lm, zero):
            identical = torch.equal(lm(ids).logits, base_logits)
        layers.remove()
        layers = wrap_linear_layers(lm, ALL)
        d = rand(layers)
        with deltas(lm, d):
            rows.append(("per-row rank-4 deltas on all 7 linears", best(lambda: lm(ids),
                                                                        args.repeats)))
        layers.remove()
        ch = WeightChannel(lm, ChannelConfig(patterns=("q_proj", "v_proj"), rank=4, n_meta=4))
        emb = lm.get_input_embeddings()
        S = T // 2
        prefix, cont = emb(ids[:, :S]), emb(ids[:, S:S + T - S - 6])  # 1 + 4 + 1 markers
        mask = torch.ones(B, S, dtype=torch.long)
        rows.append(("WeightChannel pass (same positions)",
                     best(lambda: ch(lm, prefix, mask, cont), args.repeats)))
    print(f"tiny Llama H=64, 2 layers; batch {B} × {T} positions; best of {args.repeats}; "
          f"1 thread\n")
    print("| forward | ms | ratio |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.2f} | {t / t0:.2f}× |")
    print(f"\nzero delta bit-identical: {identical}")


if __name__ == "__main__":
    main()
