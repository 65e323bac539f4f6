"""``results.png``: the per-epoch curves of a run's ``results.csv``.

Panels: the total loss (train, and val where evaluated), each loss term (every
``*_loss`` column other than ``loss``), the learning rate (at the epoch end), val AP /
AP50 / AR100, the depth errors (``val_depth_error`` on matched detections,
``val_depth_abs_rel`` on positive anchors) and the throughput.  Val metrics exist only
on evaluation epochs; the other epochs' empty cells are skipped (points joined by lines).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def read_columns(path: str | Path) -> dict[str, np.ndarray]:
    """``results.csv`` as ``{column: float64 [epochs]}`` (empty or non-numeric cells -> NaN)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, np.ndarray] = {}
    for key in (rows[0].keys() if rows else ()):
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(key) or "nan"))
            except ValueError:
                vals.append(math.nan)
        cols[key] = np.array(vals)
    return cols


def _line(ax, x, y, label, **kw):
    ok = np.isfinite(y)
    if ok.any():
        ax.plot(x[ok], y[ok], marker="o", ms=3, label=label, **kw)
        return True
    return False


def plot_results(path: str | Path, title: str = "") -> object:
    """matplotlib Figure of ``results.csv`` at ``path`` (see the module docstring)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from detector.visualize.style import new_figure

    c = read_columns(path)
    if "epoch" not in c or not len(c["epoch"]):
        raise ValueError(f"{path}: no epochs in results.csv")
    x = c["epoch"]
    terms = [k for k in c if k.endswith("_loss") and not k.startswith("val_")]
    panels = ["loss", *terms, "lr", "val_ap", "depth", "speed"]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = new_figure(rows, cols, panel=(3.6, 2.8))
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            _line(ax, x, c.get("loss", x * np.nan), "train")
            _line(ax, x, c.get("val_loss", x * np.nan), "val")
            ax.set_title("total loss")
        elif panel == "lr":
            _line(ax, x, c.get("lr", x * np.nan), "lr", color="tab:purple")
            ax.set_title("learning rate (epoch end)")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1e}"))
        elif panel == "val_ap":
            for k in ("val_AP", "val_AP50", "val_AR100"):
                _line(ax, x, c.get(k, x * np.nan), k[4:])
            ax.set_title("val COCO AP / AP50 / AR100")
            ax.set_ylim(0, 1)
        elif panel == "depth":
            _line(ax, x, c.get("val_depth_error", x * np.nan), "matched detections")
            _line(ax, x, c.get("val_depth_abs_rel", x * np.nan), "positive anchors")
            ax.set_title("val depth error |d-d*|/d*")
        elif panel == "speed":
            _line(ax, x, c.get("images_per_s", x * np.nan), "images/s", color="tab:gray")
            ax.set_title("training images / s")
        else:
            _line(ax, x, c[panel], "train")
            _line(ax, x, c.get(f"val_{panel}", x * np.nan), "val")
            ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title or f"{Path(path).parent.name}: results.csv")
    return fig
