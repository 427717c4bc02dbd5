"""Sparse top-k pointer read against the dense read at N = 1,048,576 slots.

    python benchmarks/bench_topk.py [--n 1048576] [--batch 4] [--pointers 3] [--d 64] [--k 8]

The dense read scores every slot (softmax(β q·Kᵀ) M); the top-k read finds the k best
matching addresses from the key's structure (a trie descent over the address bits) and
touches only those slots. Both run in hard mode, where they must return the same slot;
the script checks that and prints the times and the speed-up as a markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

from llamacpu.machine.addressing import AddressCodec
from llamacpu.machine.memory import read, read_topk


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1 << 20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--pointers", type=int, default=3)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    codec = AddressCodec.for_size(a.n)
    memory = torch.randn(a.batch, a.n, a.d)
    keys = codec.keys(a.n)                                            # [N, A], built once
    target = torch.randint(0, a.n, (a.batch, a.pointers))
    q = codec.address_to_key(target)                                  # [B, P, A]
    dense = read(memory, q, keys, hard=True, need_weights=False).values
    sparse = read_topk(memory, q, codec, a.k, hard=True).values
    same = torch.equal(dense, sparse) and torch.equal(dense, memory[
        torch.arange(a.batch)[:, None], target])
    t_dense = best(lambda: read(memory, q, keys, hard=True, need_weights=False), a.repeats)
    t_sparse = best(lambda: read_topk(memory, q, codec, a.k, hard=True), a.repeats)
    print(f"N = {a.n:,}, B = {a.batch}, P = {a.pointers}, D = {a.d}, k = {a.k}, "
          f"threads = {torch.get_num_threads()}\n")
    print("| read | time (ms) | speed-up |")
    print("|---|---:|---:|")
    print(f"| dense (hard) | {1e3 * t_dense:.1f} | 1.0× |")
    print(f"| top-k (hard) | {1e3 * t_sparse:.2f} | {t_dense / t_sparse:.0f}× |")
    print(f"\nsame slots read in hard mode: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
