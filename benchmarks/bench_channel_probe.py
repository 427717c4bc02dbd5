"""Does information pass from a prompt through the weight-token channel into the LM?

    python benchmarks/bench_channel_probe.py [--digits 4] [--steps 1500] [--seed 0]

A copy probe on the controller's tiny Llama (trained from scratch, one thread). The prompt
is ``<bos> d_1 … d_n`` (n random digits); the LM then reads ``<weights> m_1 … m_4``, and
the continuation ``</weights> a b c …`` must output d_i at the i-th letter (distinct
letters, so telling the positions apart is not part of the problem). Three runs,
same model size, data and steps, side by side:

- **channel, isolated**: the continuation's attention mask hides the prompt and the block
  (``WeightChannel(..., isolate=True)``), so the deltas decoded from the metatokens, rank-4
  on the chosen layers, are the ONLY path from the prompt to the answer;
- **no channel, isolated**: the same with the deltas never set — chance (10% a digit) is
  the most it can do, a check that nothing leaks past the mask;
- **attention, no channel**: the continuation may attend to the prompt (the ordinary path).

Accuracy is measured on digit strings never seen in training (a held-out 20% of all
10^n strings; for n > 5 random strings, whose overlap with training is negligible).
Prints a markdown table: per-digit accuracy, whole-string exact match, seconds.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from torch import nn

from llamacpu.llm.channel import ChannelConfig, WeightChannel
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.models import build_tiny_llama, call_lm
from llamacpu.llm.tokenizer import SymbolTokenizer


def strings(n: int, seed: int) -> tuple[list[str], list[str] | None]:
    """Train and held-out digit strings (held-out None: draw fresh random strings)."""
    if n > 5:
        return [], None
    every = [f"{i:0{n}d}" for i in range(10 ** n)]
    random.Random(seed).shuffle(every)
    k = max(1, len(every) // 5)
    return every[k:], every[:k]


def run(mode: str, args: argparse.Namespace,
        tok: SymbolTokenizer) -> tuple[float, float, float, str]:
    torch.manual_seed(args.seed)
    lm = build_tiny_llama(ControllerConfig(), len(tok))
    ch = WeightChannel(lm, ChannelConfig(patterns=tuple(args.patterns.split(",")),
                                         rank=args.rank, n_meta=args.n_meta,
                                         zero_init=args.zero_init))
    emb = lm.get_input_embeddings()
    digit_ids = torch.tensor([tok.encode(str(i))[0] for i in range(10)])
    n = args.digits
    queries = torch.tensor(tok.encode("abcdefghijklmnopqrstuvwxyz"[:n]))        # [n]
    train, test = strings(n, args.seed)
    rng = random.Random(args.seed + 1)

    def draw(pool: list[str] | None, B: int) -> torch.Tensor:                  # [B, n]
        rows = [rng.choice(pool) if pool else "".join(rng.choice("0123456789")
                                                      for _ in range(n)) for _ in range(B)]
        return torch.tensor([[int(c) for c in r] for r in rows])

    def logits(d: torch.Tensor) -> torch.Tensor:                                 # [B, n, V]
        B = d.shape[0]
        prefix = torch.cat([torch.full((B, 1), tok.bos_id), digit_ids[d]], 1)
        mask = torch.ones_like(prefix)
        cont = emb(queries.expand(B, n))
        if mode == "attention, no channel":
            x = torch.cat([emb(prefix), emb(torch.full((B, 1), tok.weights_end_id)), cont], 1)
            return lm(inputs_embeds=x).logits[:, -n:]
        if mode == "no channel, isolated":
            d_, _, past, m = ch.write(lm, emb(prefix), mask)
            x = torch.cat([ch.markers(lm, B)[1], cont], 1)
            T = x.shape[1]
            full = torch.cat([torch.zeros_like(m), m.new_ones(B, T)], 1)
            pos = torch.arange(m.shape[1], m.shape[1] + T).expand(B, T)
            return call_lm(lm, past, inputs_embeds=x, attention_mask=full,
                           position_ids=pos)[0].logits[:, -n:]
        return ch(lm, emb(prefix), mask, cont, isolate=True).logits[:, -n:]

    opt = torch.optim.Adam([*lm.parameters(), *ch.parameters()], lr=args.lr)
    t0 = time.process_time()
    for _ in range(args.steps):
        d = draw(train, args.batch)
        loss = nn.functional.cross_entropy(logits(d).flatten(0, 1), digit_ids[d].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.process_time() - t0
    with torch.no_grad():
        d = draw(test, args.eval) if test is not None else draw(None, args.eval)
        ok = logits(d).argmax(-1) == digit_ids[d]                              # [B, n]
    per = " ".join(f"{a:.2f}" for a in ok.float().mean(0).tolist())
    return ok.float().mean().item(), ok.all(-1).float().mean().item(), seconds, per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--digits", type=int, default=4, help="n digits to copy (1..26)")
    ap.add_argument("--steps", type=int, default=1500, help="Adam steps per run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval", type=int, default=1000, help="held-out strings evaluated")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--patterns", default="q_proj,v_proj,o_proj,down_proj",
                    help="comma-separated names of the layers that receive deltas")
    ap.add_argument("--rank", type=int, default=4, help="rank r of every delta")
    ap.add_argument("--n-meta", type=int, default=4, help="M metatokens")
    ap.add_argument("--zero-init", action=argparse.BooleanOptionalAction, default=True,
                    help="start the head at ΔW = 0")
    ap.add_argument("--modes", default="channel,none,attention",
                    help="comma-separated runs out of channel, none, attention")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = {"channel": "channel, isolated", "none": "no channel, isolated",
             "attention": "attention, no channel"}
    modes = args.modes.split(",")
    if not set(modes) <= set(names):
        ap.error(f"--modes takes a comma-separated subset of {', '.join(names)}, "
                 f"got {args.modes!r}")
    if min(args.digits, args.steps, args.batch, args.eval, args.rank, args.n_meta) < 1:
        ap.error("--digits, --steps, --batch, --eval, --rank and --n-meta must be at least 1")
    if args.digits > 26:
        ap.error(f"--digits must be at most 26 (one query letter each), got {args.digits}")
    torch.set_num_threads(1)
    tok = SymbolTokenizer()
    print(f"copy {args.digits} digits; tiny Llama H=64, 2 layers, from scratch; rank-{args.rank} "
          f"deltas on {args.patterns}; M = {args.n_meta}; zero-init {args.zero_init}; {args.steps} steps × batch {args.batch}; seed {args.seed}; "
          f"{args.eval} held-out strings\n")
    print("| run | digit acc | by position | exact match | train s |\n|---|---:|---|---:|---:|")
    for mode in (names[m] for m in modes):
        acc, exact, s, per = run(mode, args, tok)
        print(f"| {mode} | {acc:.3f} | {per} | {exact:.3f} | {s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
