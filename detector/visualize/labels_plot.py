"""``labels.png``: what the annotations look like (class histogram, box sizes, depths).

Input: one or more :class:`LabelSet` (e.g. the train and the val split), each a flat view
of the annotations: class index ``0..K-1``, box width / height in ORIGINAL image pixels,
depth in metres (``<= 0`` unknown) and the crowd flag.  Crowd boxes are counted in the
class histogram separately (hatched) and left out of the size and depth panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelSet:
    """Annotations of one split: ``classes`` int [n], ``wh`` float64 [n, 2] original px,
    ``depth`` float64 [n] metres (<= 0 unknown), ``is_crowd`` bool [n], ``num_images``."""

    name: str
    classes: np.ndarray
    wh: np.ndarray
    depth: np.ndarray
    is_crowd: np.ndarray
    num_images: int

    @staticmethod
    def from_records(name: str, records) -> LabelSet:
        """From :class:`detector.data.records.ImageRecord` s (boxes xywh original px)."""
        def cat(f, dtype, width=0):
            parts = [np.asarray(f(r), dtype).reshape((-1, width) if width else -1) for r in records]
            return np.concatenate(parts) if parts else np.zeros((0, width) if width else 0, dtype)

        return LabelSet(name, cat(lambda r: r.classes, np.int64), cat(lambda r: r.boxes[:, 2:4], np.float64, 2),
                        cat(lambda r: r.depth, np.float64), cat(lambda r: r.is_crowd, bool), len(records))

    @staticmethod
    def from_eval_data(name: str, data) -> LabelSet:
        """From the GT of an :class:`~detector.visualize.evaldata.EvalData`."""
        g = data.gt
        return LabelSet(name, g.category.astype(np.int64), g.bbox_xywh[:, 2:4].astype(np.float64),
                        np.asarray(data.gt_depth, np.float64), g.iscrowd.astype(bool), data.num_images)


def plot_labels(sets: list[LabelSet], class_names, title: str = "") -> object:
    """matplotlib Figure: instances per class (top), box width vs height, sqrt(area) with the
    COCO small / medium / large limits, and depth (bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from detector.visualize.style import short_names, tick_fontsize

    k = len(class_names)
    fig = Figure(figsize=(max(13.0, 0.16 * k + 4), 8.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplot_mosaic([["cls", "cls", "cls"], ["wh", "area", "depth"]])
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    width = 0.8 / max(len(sets), 1)
    x = np.arange(k)
    for i, s in enumerate(sets):
        regular = np.bincount(s.classes[~s.is_crowd], minlength=k)[:k]
        crowd = np.bincount(s.classes[s.is_crowd], minlength=k)[:k]
        off = (i - (len(sets) - 1) / 2) * width
        ax["cls"].bar(x + off, regular, width, color=colours[i % 4],
                      label=f"{s.name}: {int(regular.sum())} boxes, {s.num_images} images")
        if crowd.any():
            ax["cls"].bar(x + off, crowd, width, bottom=regular, color="none", edgecolor=colours[i % 4],
                          hatch="///", label=f"{s.name}: crowd ({int(crowd.sum())})")
    ax["cls"].set_xticks(x, short_names(class_names), rotation=90 if k > 12 else 0, fontsize=tick_fontsize(k))
    ax["cls"].set_ylabel("instances")
    ax["cls"].set_title("instances per class")
    ax["cls"].legend(fontsize=8)
    ax["cls"].grid(axis="y", alpha=0.3)

    for i, s in enumerate(sets):
        keep = ~s.is_crowd & (s.wh[:, 0] > 0) & (s.wh[:, 1] > 0)
        wh = s.wh[keep]
        if len(wh) > 20000:                       # plotting cost, not statistics
            wh = wh[np.random.default_rng(0).choice(len(wh), 20000, replace=False)]
        ax["wh"].scatter(wh[:, 0], wh[:, 1], s=3, alpha=0.25, color=colours[i % 4], label=s.name,
                         rasterized=True)
        side = np.sqrt(s.wh[keep, 0] * s.wh[keep, 1])
        if len(side):
            bins = np.geomspace(max(side.min(), 1.0), max(side.max(), 2.0), 40)
            ax["area"].hist(side, bins=bins, histtype="step", lw=1.5, color=colours[i % 4], label=s.name)
        d = s.depth[keep & (s.depth > 0)]
        if len(d):
            ax["depth"].hist(d, bins=40, histtype="step", lw=1.5, color=colours[i % 4],
                             label=f"{s.name} ({len(d)} with depth)")
    ax["wh"].set(xscale="log", yscale="log", xlabel="box width (original px)", ylabel="box height (original px)",
                 title="box sizes")
    ax["area"].set(xscale="log", xlabel="sqrt(w * h) (original px)", ylabel="boxes",
                   title="box size (COCO small < 32 < medium < 96 < large)")
    for limit in (32, 96):
        ax["area"].axvline(limit, color="0.3", ls="--", lw=1)
    ax["depth"].set(xlabel="depth (m)", ylabel="boxes", title="depth")
    if not ax["depth"].get_legend_handles_labels()[0]:
        ax["depth"].text(0.5, 0.5, "no depth labels", ha="center", va="center",
                         transform=ax["depth"].transAxes, color="0.5")
    for name in ("wh", "area", "depth"):
        ax[name].grid(alpha=0.3)
        if ax[name].get_legend_handles_labels()[0]:
            ax[name].legend(fontsize=8)
    fig.suptitle(title or "Labels")
    return fig
