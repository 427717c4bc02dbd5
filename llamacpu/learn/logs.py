"""What the curriculum trainer writes besides checkpoints: ``metrics.jsonl`` lines,
TensorBoard scalars (when tensorboard is installed), a loss and accuracy plot per stage,
and the short formats of its log lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from llamacpu.learn.curriculum import Stage

__all__ = ["read_curve", "stage_seconds"]  # the rest: the trainer's internals


def _fmt(accuracies: dict[str, float]) -> str:
    return ", ".join(f"{t} {a:.2f}" for t, a in accuracies.items())


def _scalars(m) -> dict[str, float]:
    d = m.as_dict() if hasattr(m, "as_dict") else dict(m)
    return {k: float(v) for k, v in d.items()}


def _log_jsonl(out: Path, metrics: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")


def read_curve(out: str | Path) -> list[dict]:
    """The training curve of a run directory: the step records of ``out/metrics.jsonl`` as
    the checkpoints saw them. A killed run's records past the checkpoint it left are
    superseded when a later run resumes from that checkpoint (its records say
    ``resumed_from``), so each (stage, step) keeps the record of the run that went on.
    Records without a run id (the retention lines) are left out, and so is a line that is
    not JSON (one a running trainer is still writing)."""
    kept: list[dict] = []
    seen_runs: set[str] = set()
    for line in (Path(out) / "metrics.jsonl").read_text().splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if not isinstance(m, dict) or "run" not in m or "step" not in m:
            continue
        if m["run"] not in seen_runs:  # a run starts: drop what it replays
            seen_runs.add(m["run"])
            start = m.get("resumed_from", 0)
            kept = [k for k in kept if k["stage"] != m["stage"] or k["step"] <= start]
        kept.append(m)
    return kept


def stage_seconds(out: str | Path) -> dict[int, float]:
    """{stage: seconds of training} of a run directory, over every run that trained the
    stage: a record's ``time`` counts from its own run's start of the stage, so a stage
    resumed after an interruption took the sum of each run's last time (of the records
    :func:`read_curve` keeps: a killed run's steps past its checkpoint were done again)."""
    last: dict[tuple[int, str], float] = {}
    for m in read_curve(out):
        if "time" in m:
            last[int(m["stage"]), m["run"]] = float(m["time"])
    out_: dict[int, float] = {}
    for (stage, _), seconds in last.items():
        out_[stage] = out_.get(stage, 0.0) + seconds
    return out_


def _tensorboard(out: Path):
    """A TensorBoard writer into ``out/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _plot_curve(out: Path, stage: Stage, metrics: list[dict]) -> None:
    """Loss and free-running accuracy of a stage as ``out/stage_N.png``."""
    if not metrics:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("plan_loss", "step_loss", "oeu_loss", "answer_loss"):
        pts = [(m["step"], m[key]) for m in metrics if key in m]
        if pts:
            ax.plot(*zip(*pts), label=key, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    acc = [(m["step"], m["accuracy"]) for m in metrics if "accuracy" in m]
    if acc:
        ax2.plot(*zip(*acc), "k.-", label="free-running exact match")
    for key in sorted({k for m in metrics for k in m if k.startswith("retained/")}):
        pts = [(m["step"], m[key]) for m in metrics if key in m]
        ax2.plot(*zip(*pts), "x--", lw=0.8, ms=4, label=key)
    ax2.set_ylim(0, 1.02)
    ax2.axhline(stage.competence, color="k", ls=":", lw=0.8)
    ax2.set_ylabel("exact match")
    ax.set_xlim(min(steps) - 1, max(steps) + 1)
    ax.set_title(f"stage {stage.index}: {stage.name}", fontsize=9)
    fig.legend(loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / f"stage_{stage.index}.png", dpi=110)
    plt.close(fig)


def _progress(cfg, stage: Stage, start: int, steps: int, enabled: bool = True):
    """The stage's progress bar (``cfg``: the run's TrainConfig; ``steps``: the stage's)."""
    from tqdm import tqdm

    # A stage stops when it passes, usually long before its step budget, so the bar shows
    # the steps done against the budget ("at most") and the time spent, with no ETA that
    # assumes the whole budget will run.
    budget = f"{steps} steps" + ("" if cfg.time_budget is None
                                 else f" or {cfg.time_budget:g} min")
    return tqdm(total=steps, initial=start, desc=f"stage {stage.index} {stage.name}",
                disable=not (cfg.progress and enabled), dynamic_ncols=True, leave=False,
                bar_format="{desc}: step {n_fmt} (at most " + budget + "), {elapsed}, "
                           "{rate_fmt}{postfix}")
