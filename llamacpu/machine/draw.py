"""Heatmaps of where a run's reads looked: :class:`AttentionMaps`, made by
``Machine.attention`` (fetch and each operand read, per step), and :func:`draw_heatmap`
(matplotlib, imported only when drawing).

Shape letters::

    F  address fields (4)        T  steps              N  slots
    T', N'  steps and slots after binning
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["AttentionMaps", "draw_heatmap"]


@dataclass(frozen=True)
class AttentionMaps:
    """Where each read of a run looked, per step: for heatmaps.

    ``image[c, t, n]`` is the largest address weight read channel c gave a slot of bin n in a
    step of bin t (bins merge ``step_bin`` steps and ``slot_bin`` slots, for long runs).
    """

    image: Tensor                   # [1 + F, T', N'] channels: fetch, operand 1..4
    labels: tuple[str, ...]         # channel names
    steps: int
    slots: int
    step_bin: int
    slot_bin: int
    regions: tuple[tuple[str, int], ...]  # (name, first slot) of program, input, output, padding
    hard: bool                      # hard maps are one-hot; soft ones spread over slots


def draw_heatmap(maps: AttentionMaps, path: str, title: str = "") -> None:
    """Draw ``maps`` to ``path`` (matplotlib, Agg): one panel per read channel that read
    anything; rows are steps, columns slots, cropped to the slots that were read; the
    program / input / output boundaries are marked and named inside each panel (clear of
    its title); ticks are whole slots and steps; a colour bar gives the address weight.
    Soft maps use a log colour scale, so the attention spread around each target is
    visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import offset_copy

    img = maps.image
    used = [c for c in range(img.shape[0]) if c == 0 or bool((img[c] > 0.5).any())]
    read = (img[used] > 0.01).any(0).any(0).nonzero()                     # columns read
    last = int(read.max()) + 1 if len(read) else img.shape[2]
    cols = min(img.shape[2], max(last + max(2, last // 10), 8))
    fig, axes = plt.subplots(1, len(used), figsize=(3.2 * len(used) + 1.6, 6), sharey=True,
                             squeeze=False, layout="constrained")
    extent = (0, cols * maps.slot_bin, img.shape[1] * maps.step_bin, 0)
    norm = Normalize(0, 1) if maps.hard else LogNorm(1e-7, 1)
    for ax, c in zip(axes[0], used):
        shown = img[c, :, :cols].numpy()
        if not maps.hard:
            shown = shown.clip(1e-7, 1)
        im = ax.imshow(shown, aspect="auto", cmap="magma", norm=norm, extent=extent,
                       interpolation="nearest")
        ax.set_title(maps.labels[c])
        ax.set_xlabel("slot")
        for axis in (ax.xaxis, ax.yaxis):  # whole slots and steps: 1, 2, 5 or 10 apart (× 10ᵏ)
            axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        label_at = offset_copy(ax.get_xaxis_transform(), fig=fig, x=1.5, units="points")
        for name, at in maps.regions:
            if 0 < at < cols * maps.slot_bin:
                ax.axvline(at, color="cyan", lw=0.8, ls="--")
            if name != "end" and at < cols * maps.slot_bin:  # inside the panel, at its top
                ax.text(at, 0.99, name, color="cyan", fontsize=7, va="top", ha="left",
                        rotation=90, transform=label_at,
                        bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0))
    axes[0][0].set_ylabel("step")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9, pad=0.01,
                 label="address weight" + ("" if maps.hard else " (log scale)"))
    fig.suptitle(title or f"pointer attention ({'hard' if maps.hard else 'soft'})")
    fig.savefig(path, dpi=110)
    plt.close(fig)
