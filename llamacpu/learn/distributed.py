"""Data-parallel training: ``torchrun --nproc-per-node K -m llamacpu.train ...``.

The trainer runs the same loop on every rank; this module holds what differs between one
process and K: the process group, which rows of a batch a rank owns, the collectives, and
which rank writes files. Without torchrun's environment (``WORLD_SIZE`` unset or 1)
:func:`from_env` returns a one-process :class:`Dist` whose collectives are no-ops, so a
plain ``python -m llamacpu.train`` runs exactly the code it always ran.

The design goal is that K ranks compute the *same* update as one process on the whole
batch (a test checks it, within float rounding):

- **One global batch, strided shards.** Every rank draws the same seeded global batch (the
  drawing is cheap) and owns rows ``rank, rank + K, …`` (:meth:`Dist.rows`). The expensive
  parts are sharded: the expert runs that supervise a row and the LM forwards of the plan
  and execute losses. Random choices that concern other rows (filler words, prompt
  mixing, each row's step-subsample seed) are drawn for the whole batch on every rank from
  the same generator, so no rank's stream depends on its shard.
- **Global normalisers.** The plan and execute losses are sums over the batch divided by
  counts (slot positions, weighted steps). A rank divides its shard's sum by the GLOBAL
  count, so the per-rank losses add up to the one-process loss and the summed gradients
  are its gradient; averaging per-rank means would weight rows of short shards more. The
  execute loss's balancing weights (``train._balance``) count step kinds over the global
  batch (one all-reduce of a histogram).
- **Replicated small terms.** The OEU's replay loss (the buffer is gathered from all
  shards each step, so it is the same everywhere) and the answer loss (its first
  ``answer_batch`` rows, every ``answer_every`` steps) are computed in full on every rank
  and divided by K. The answer loss cannot be split by rows: the soft machine steps a
  batch until all its rows halt and a half-halted row keeps moving, so a row's answer
  depends on its batch-mates. Its scheduled-sampling draws come from torch's RNG, which
  stays in step on every rank (same seed, same draws).
- **Explicit gradient all-reduce, not ``DistributedDataParallel``.** The trainer calls
  several methods of two modules (controller and OEU) per step, and the answer loss runs
  only every ``answer_every`` steps, so which parameters get a gradient varies by step. DDP hooks ``forward`` of one
  module and would need ``find_unused_parameters`` (an extra graph traversal each step),
  wrapping of every entry point, and ``no_sync`` for the replicated terms. Instead :meth:`Dist.sum_grads` packs all gradients
  plus a has-gradient flag per parameter into one flat buffer, sums it in one all-reduce
  and unpacks it; a parameter no rank touched keeps ``grad = None`` (as in one process,
  where AdamW skips it), one some rank touched gets the sum. Clipping and the AdamW step
  then run on identical gradients on every rank, so parameters stay identical (they start
  identical: :meth:`Dist.broadcast_module` after building or loading the model). Frozen
  parameters (a quantized base model under LoRA) get no gradient and are not sent.
- **Agreed control flow.** Evaluation is sharded (each rank solves its stride of the
  held-out set) and the correct counts are summed, so every rank sees the same accuracy;
  the pass/continue decision is still broadcast from rank 0 (:meth:`Dist.agree`). A
  Ctrl-C sets a flag on the ranks it reaches; :meth:`Dist.any` ORs it across ranks once
  per step, so all ranks stop after the same step. (torchrun puts its workers in their
  own session and forwards one SIGINT to each.)
- **Rank 0 writes.** Checkpoints, ``metrics.jsonl``, the PNG curve, TensorBoard, tqdm and
  log lines come from rank 0 (:attr:`Dist.main`); every save is followed by a barrier, so
  no rank reads a checkpoint before it is complete. Metrics are reduced first: losses are
  summed shares (the global loss), accuracies are row-weighted means.

Backends: gloo on CPU, nccl on CUDA, where rank ``r`` uses ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import Tensor, nn

from llamacpu.core.isa import LlamacpuError

__all__ = ["Dist", "DistributedError", "from_env", "shutdown"]


class DistributedError(LlamacpuError, ValueError):
    """A launch this module cannot run (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; every method is a no-op when ``world == 1``."""

    rank: int = 0            # global rank, 0..world-1
    world: int = 1           # number of processes (K)
    local_rank: int = 0      # rank on this node (selects the GPU)
    device: str = "cpu"      # torch device of this rank's model

    @property
    def main(self) -> bool:
        """Whether this rank writes checkpoints, logs and progress (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def rows(self, n: int) -> list[int]:
        """Indices of this rank's rows of an ``n``-row global batch: ``rank::world``."""
        return list(range(self.rank, n, self.world))

    def take(self, items: Sequence) -> list:
        """This rank's rows of a global list."""
        return [items[i] for i in self.rows(len(items))]

    # ------------------------------------------------------------------ collectives

    def sum(self, t: Tensor) -> Tensor:
        """Elementwise sum over ranks (a new tensor on ``t``'s device)."""
        if not self.active:
            return t.clone()
        x = t.detach().to(self.device).clone()
        td.all_reduce(x, op=td.ReduceOp.SUM)
        return x.to(t.device)

    def max(self, t: Tensor) -> Tensor:
        """Elementwise maximum over ranks."""
        if not self.active:
            return t.clone()
        x = t.detach().to(self.device).clone()
        td.all_reduce(x, op=td.ReduceOp.MAX)
        return x.to(t.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        if not self.active:
            return bool(flag)
        return bool(self.max(torch.tensor([int(flag)], dtype=torch.int64)).item())

    def agree(self, value: bool) -> bool:
        """Rank 0's ``value``, on every rank."""
        if not self.active:
            return value
        x = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        td.broadcast(x, src=0)
        return bool(x.item())

    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def gather_rows(self, t: Tensor) -> Tensor:
        """Every rank's rows of ``t [E_r, ...]`` concatenated in rank order ``[ΣE_r, ...]``
        (ranks may hold different numbers of rows)."""
        if not self.active:
            return t
        n = self.sum(_one_hot_count(t.shape[0], self.rank, self.world))      # [world]
        top = int(n.max())
        pad = t.new_zeros((top, *t.shape[1:]))
        pad[: t.shape[0]] = t
        parts = [torch.empty_like(pad, device=self.device) for _ in range(self.world)]
        td.all_gather(parts, pad.to(self.device))
        return torch.cat([p[: int(k)].to(t.device) for p, k in zip(parts, n)])

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's trainable parameters into every rank's ``module``. (Frozen ones —
        a pretrained or quantized base model — come from the same files on every rank
        and are not sent: 8B parameters would cost gigabytes per rank.)"""
        if not self.active:
            return
        with torch.no_grad():
            for p in module.parameters():
                if p.requires_grad:
                    x = p.data.to(self.device)
                    td.broadcast(x, src=0)
                    p.data.copy_(x)

    def sum_grads(self, params: Iterable[nn.Parameter]) -> None:
        """Sum every trainable parameter's gradient over ranks, in one all-reduce.

        A parameter whose gradient is ``None`` on every rank stays ``None``; otherwise the
        missing ones count as zero. Gradients travel in float32.
        """
        if not self.active:
            return
        ps = [p for p in params if p.requires_grad]
        flat = [torch.zeros(p.numel(), dtype=torch.float32, device=self.device)
                if p.grad is None else p.grad.detach().flatten().float().to(self.device)
                for p in ps]
        flags = torch.tensor([float(p.grad is not None) for p in ps], device=self.device)
        buf = torch.cat([*flat, flags])
        td.all_reduce(buf, op=td.ReduceOp.SUM)
        got = buf[-len(ps):] if ps else buf[:0]
        offset = 0
        for p, seen in zip(ps, got.tolist()):
            g = buf[offset: offset + p.numel()]
            offset += p.numel()
            if seen == 0:
                p.grad = None
            else:
                p.grad = g.view_as(p).to(device=p.device, dtype=p.dtype).clone()

    def reduce_metrics(self, sums: Mapping[str, float],
                       means: Mapping[str, tuple[float, float]]) -> dict[str, float]:
        """Metrics of the whole batch from each rank's: ``sums`` are added over ranks (each
        rank's share of a loss); ``means`` are ``(value, weight)`` pairs averaged with
        their weights (an accuracy and the rows it was measured on). Every rank must pass
        the same keys."""
        keys_s, keys_m = sorted(sums), sorted(means)
        if not self.active:
            return {**{k: float(sums[k]) for k in keys_s},
                    **{k: float(means[k][0]) for k in keys_m}}
        vals = [float(sums[k]) for k in keys_s]
        for k in keys_m:
            v, w = means[k]
            vals += [float(v) * float(w), float(w)]
        x = self.sum(torch.tensor(vals, dtype=torch.float64)).tolist()
        out = dict(zip(keys_s, x[: len(keys_s)]))
        rest = x[len(keys_s):]
        for i, k in enumerate(keys_m):
            vw, w = rest[2 * i], rest[2 * i + 1]
            out[k] = vw / w if w > 0 else float("nan")
        return out


def _one_hot_count(n: int, rank: int, world: int) -> Tensor:
    x = torch.zeros(world, dtype=torch.int64)
    x[rank] = n
    return x


def from_env(device: str = "cpu") -> Dist:
    """The job torchrun described in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), its process group initialised; one
    process when ``WORLD_SIZE`` is absent or 1.

    ``device`` is the ``--device`` flag: ``cpu`` (backend gloo) or ``cuda`` (backend nccl,
    this rank on ``cuda:LOCAL_RANK``). Raises DistributedError for ``cuda:N`` under
    torchrun and for an environment torchrun did not fill in.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    try:
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as e:
        raise DistributedError(f"WORLD_SIZE={world} but RANK/LOCAL_RANK are missing or not "
                         f"integers ({e}); launch with torchrun") from None
    if device.startswith("cuda"):
        if device != "cuda":
            raise DistributedError(f"--device {device}: under torchrun use --device cuda; rank r "
                             f"takes cuda:LOCAL_RANK")
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    if not td.is_initialized():
        td.init_process_group(backend, rank=rank, world_size=world)
    return Dist(rank=rank, world=world, local_rank=local, device=device)


def shutdown() -> None:
    """Tear down the process group if one is up (end of ``main``)."""
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
