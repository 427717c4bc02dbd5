"""Baselines next to llamacpu: ``python -m llamacpu.bench baselines``.

    python -m llamacpu.bench baselines --checkpoint checkpoints/stage_5

What a researcher would train instead, on the same data for the same time:

- **transformer**: a decoder-only transformer (``transformers``' Llama, RoPE, hidden 64, 2
  layers, 4 heads, the MLP width set so its parameter count matches the tiny controller's)
  trained on ``prompt <sep> reversed(answer) <eos>``, loss on the answer only; answers
  are reversed, least significant digit first, as the arithmetic literature does.
- **lstm**: an LSTM encoder-decoder (embedding 64, one layer each, the width set to the
  same parameter count), the same reversed targets, greedy decoding.

Both are trained through the same curriculum stages as the checkpoint (stage 0 up to its
stage), on batches from ``curriculum.sample_batch`` (the same generator, the same review
mix, the same held-out partition), each stage for the wall-clock seconds llamacpu spent on
it (read from the checkpoint's ``metrics.jsonl``; ``--budget`` overrides the total). Then
all three — llamacpu running free, transformer, LSTM — are scored on the SAME examples:
for every trained task, hypothesis examples (``llamacpu.evaluate.strategies.task_examples``, the
report's strategies) at lengths from 1 to 10× the trained length and 1000 digits for
add/sub/cmp. One run, one machine; the table is printed as markdown. Everything is written
in the checkpoint's alphabet: the baselines' characters, their training batches and the
scored examples.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet
from llamacpu.learn.curriculum import STAGES, sample_batch
from llamacpu.learn.tasks import Example

__all__ = ["CharVocab", "TransformerBaseline", "LSTMBaseline", "train_baseline"]

# Shape letters: B batch, T tokens, H hidden, V vocabulary.


class CharVocab:
    """Characters of an alphabet (default: the default one) plus PAD (0), SEP (prompt end)
    and EOS."""

    PAD, SEP, EOS = 0, 1, 2

    def __init__(self, alphabet: Alphabet = DEFAULT_ALPHABET) -> None:
        chars = alphabet.decode(tuple(range(alphabet.end)))
        self.chars = chars
        self.index = {c: i + 3 for i, c in enumerate(chars)}
        self.size = len(chars) + 3

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.EOS:
                break
            out.append(self.chars[i - 3] if i >= 3 else "")
        return "".join(out)


def _target(answer: str) -> str:
    """What the baselines are trained to write: the answer reversed (LSB first)."""
    return answer[::-1]


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ the transformer


class TransformerBaseline(nn.Module):
    """Decoder-only Llama (RoPE) over ``prompt SEP target EOS``."""

    def __init__(self, vocab: CharVocab, intermediate: int, hidden: int = 64,
                 layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.vocab = vocab
        cfg = LlamaConfig(vocab_size=vocab.size, hidden_size=hidden,
                          intermediate_size=intermediate, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=8192, pad_token_id=vocab.PAD,
                          bos_token_id=vocab.SEP, eos_token_id=vocab.EOS,
                          tie_word_embeddings=False)
        self.lm = LlamaForCausalLM(cfg)

    @classmethod
    def matching(cls, vocab: CharVocab, n_params: int) -> TransformerBaseline:
        """The MLP width that brings the parameter count closest to ``n_params``."""
        small, big = cls(vocab, 64), cls(vocab, 128)
        per = (_params(big) - _params(small)) / 64
        width = max(8, round(64 + (n_params - _params(small)) / per))
        return cls(vocab, width)

    def loss(self, prompts: list[str], targets: list[str]) -> Tensor:
        v = self.vocab
        seqs, labels = [], []
        for p, t in zip(prompts, targets):
            src, tgt = v.encode(p) + [v.SEP], v.encode(t) + [v.EOS]
            seqs.append(src + tgt)
            labels.append([-100] * len(src) + tgt)
        T = max(len(s) for s in seqs)
        ids = torch.tensor([s + [v.PAD] * (T - len(s)) for s in seqs])
        lab = torch.tensor([x + [-100] * (T - len(x)) for x in labels])
        mask = (torch.arange(T)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
        return self.lm(input_ids=ids, attention_mask=mask, labels=lab).loss

    @torch.no_grad()
    def answer(self, prompts: list[str], max_new: int) -> list[str]:
        v = self.vocab
        srcs = [v.encode(p) + [v.SEP] for p in prompts]
        T = max(len(s) for s in srcs)
        ids = torch.tensor([[v.PAD] * (T - len(s)) + s for s in srcs])   # left padding
        mask = (ids != v.PAD).long()
        out = self.lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                               do_sample=False, eos_token_id=v.EOS, pad_token_id=v.PAD)
        return [v.decode(row[T:].tolist()) for row in out]


# ------------------------------------------------------------------ the LSTM


class LSTMBaseline(nn.Module):
    """Encoder LSTM over the prompt; its final state starts a decoder LSTM over the target."""

    def __init__(self, vocab: CharVocab, hidden: int, embed: int = 64) -> None:
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab.size, embed, padding_idx=vocab.PAD)
        self.encoder = nn.LSTM(embed, hidden, batch_first=True)
        self.decoder = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab.size)

    @classmethod
    def matching(cls, vocab: CharVocab, n_params: int) -> LSTMBaseline:
        best = min(range(16, 512, 2), key=lambda h: abs(_params(cls(vocab, h)) - n_params))
        return cls(vocab, best)

    def _encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        v = self.vocab
        srcs = [v.encode(p) for p in prompts]
        T = max(len(s) for s in srcs)
        ids = torch.tensor([s + [v.PAD] * (T - len(s)) for s in srcs])
        lens = torch.tensor([len(s) for s in srcs])
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lens, batch_first=True,
                                                   enforce_sorted=False)
        _, state = self.encoder(packed)
        return state

    def loss(self, prompts: list[str], targets: list[str]) -> Tensor:
        v = self.vocab
        state = self._encode(prompts)
        tgts = [v.encode(t) + [v.EOS] for t in targets]
        T = max(len(t) for t in tgts)
        inp = torch.tensor([[v.SEP] + t[:-1] + [v.PAD] * (T - len(t)) for t in tgts])
        lab = torch.tensor([t + [-100] * (T - len(t)) for t in tgts])
        h, _ = self.decoder(self.embed(inp), state)                          # [B, T, H]
        return F.cross_entropy(self.out(h).flatten(0, 1), lab.flatten(), ignore_index=-100)

    @torch.no_grad()
    def answer(self, prompts: list[str], max_new: int) -> list[str]:
        v = self.vocab
        state = self._encode(prompts)
        tok = torch.full((len(prompts), 1), v.SEP)
        outs = []
        for _ in range(max_new):
            h, state = self.decoder(self.embed(tok), state)
            tok = self.out(h[:, -1]).argmax(-1, keepdim=True)
            outs.append(tok)
        ids = torch.cat(outs, 1)
        return [v.decode(row.tolist()) for row in ids]


# ------------------------------------------------------------------ training and scoring


def train_baseline(model: nn.Module, stage_seconds: Sequence[tuple[int, float]], seed: int,
                   batch_size: int = 32, lr: float = 3e-3, log=print,
                   alphabet: Alphabet = DEFAULT_ALPHABET, *, review: float | None = None,
                   split: str = "train") -> dict:
    """Train through the stages, each for its wall-clock seconds, on sample_batch (written
    in ``alphabet``, in the wordings of ``split``; ``review``: the share of earlier stages
    in a batch, default each stage's own). Returns the steps and seconds, in all and per
    stage."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps, start, per_stage = 0, time.time(), []
    model.train()
    for stage, seconds in stage_seconds:
        t0, n, last = time.time(), 0, float("nan")
        while time.time() - t0 < seconds:
            batch = sample_batch(STAGES[stage], rng, batch_size, review=review, split=split,
                                 alphabet=alphabet)
            loss = model.loss([e.prompt for e in batch], [_target(e.answer) for e in batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            n, last = n + 1, loss.item()
        steps += n
        took = time.time() - t0
        per_stage.append({"stage": STAGES[stage].name, "budget_seconds": seconds, "steps": n,
                          "seconds": took, "last_loss": None if n == 0 else last})
        log(f"  {type(model).__name__} stage {stage} ({STAGES[stage].name}): {n} steps in "
            f"{seconds:.0f} s, last loss {last:.3f}")
    model.eval()
    return {"steps": steps, "seconds": time.time() - start, "stages": per_stage}


def score_baseline(model: nn.Module, examples: list[Example], batch: int = 64) -> int:
    """Exact matches (answers un-reversed) on the examples."""
    right = 0
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        max_new = max(len(e.answer) for e in chunk) + 2
        got = model.answer([e.prompt for e in chunk], max_new)
        right += sum(g[::-1] == e.answer for g, e in zip(got, chunk))
    return right


def stage_seconds(checkpoint_dir: Path, stages: Sequence[int]) -> list[tuple[int, float]]:
    """Seconds llamacpu trained each of ``stages`` (a checkpoint's trained stages), from
    the metrics.jsonl next to the checkpoint (``logs.stage_seconds``: a resumed stage's runs
    add up)."""
    from llamacpu.learn.logs import stage_seconds as logged

    metrics = checkpoint_dir.parent / "metrics.jsonl"
    if not metrics.is_file():
        raise ValueError(f"{metrics}: no training log to read the time budget from; "
                         "pass --budget SECONDS")
    last = logged(checkpoint_dir.parent)
    missing = [s for s in stages if s not in last]
    if missing:
        raise ValueError(f"{metrics}: no timing for stages {missing}; pass --budget SECONDS")
    return [(s, last[s]) for s in stages]


def run_baselines(checkpoint: Path, examples: int, long_examples: int, budget: float | None,
                  seed: int, log=print) -> str:
    from llamacpu.evaluate.properties import check_learned, draw_examples
    from llamacpu.evaluate.report import LONG, report_lengths, trained_tasks
    from llamacpu.learn.curriculum import trained_stages
    from llamacpu.learn.evaluation import load_checkpoint_machine

    c, machine = load_checkpoint_machine(checkpoint)
    stages = trained_stages(c)  # a run that skipped stages trained only these
    controller_params = _params(machine.controller)
    secs = stage_seconds(checkpoint, stages)
    if budget is not None:  # keep the stages' proportions
        total = sum(s for _, s in secs)
        secs = [(i, s * budget / total) for i, s in secs]
    vocab = CharVocab(machine.alphabet)
    models = {"transformer": TransformerBaseline.matching(vocab, controller_params),
              "lstm": LSTMBaseline.matching(vocab, controller_params)}
    lines = [f"controller {controller_params:,} parameters (+ OEU {_params(machine.oeu):,}); "
             + ", ".join(f"{k} {_params(m):,}" for k, m in models.items())]
    log(lines[0])
    info = {}
    for name, m in models.items():
        log(f"training {name} for {sum(s for _, s in secs):.0f} s over stages "
            f"{', '.join(str(i) for i, _ in secs)}")
        info[name] = train_baseline(m, secs, seed, log=log, alphabet=machine.alphabet)

    rows: list[tuple[str, int, int, dict[str, int]]] = []
    trained = trained_tasks(c.stage, trained=stages)
    for task, top in trained.items():
        lengths = report_lengths(task, top)
        short = [n for n in lengths if n != LONG]
        per = math.ceil(examples / len(short))
        plan = {n: (long_examples if n == LONG else per) for n in lengths}
        plan = {n: k for n, k in plan.items() if k > 0}
        t0 = time.time()
        rep = check_learned(machine, task, lengths=plan, seed=seed, shrink_seconds=0,
                            plain_from=LONG)
        ours = {b.length: b.passed for b in rep.buckets}
        log(f"llamacpu {task}: {rep.passed}/{rep.n} ({time.time() - t0:.0f} s)")
        for n, k in plan.items():
            drawn = draw_examples(task, n, k, seed, plain=n >= LONG,  # the same examples
                                  alphabet=machine.alphabet)
            scores = {"llamacpu": ours.get(n, 0)}
            for name, m in models.items():
                scores[name] = score_baseline(m, drawn)
            rows.append((task, n, len(drawn), scores))
            log(f"  {task} length {n}: " + ", ".join(f"{k2} {v}/{len(drawn)}"
                                                    for k2, v in scores.items()))
    head = "| task | length | examples | llamacpu | transformer | LSTM |"
    table = [head, "|---|---:|---:|---:|---:|---:|"]
    for task, n, k, s in rows:
        mark = "" if n <= trained[task] else " ↑"
        table.append(f"| {task} | {n}{mark} | {k} | " + " | ".join(
            f"{100 * s[x] / k:.0f}%" for x in ("llamacpu", "transformer", "lstm")) + " |")
    lines.append("baseline training: " + ", ".join(
        f"{k} {v['steps']} steps in {v['seconds']:.0f} s" for k, v in info.items()))
    return "\n".join(lines) + "\n\n" + "\n".join(table) + "\n\n↑ longer than any trained input\n"
