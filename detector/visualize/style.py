"""Shared figure plumbing: Agg-rendered matplotlib figures and one colour per class.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by the Agg canvas: no
``pyplot``, no global backend switch, no GUI, safe in threads and on headless machines.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np


def new_figure(rows: int, cols: int, panel=(4.0, 3.2), dpi: int = 100):
    """``(figure, axes)``: a ``rows x cols`` grid of panels of ``panel`` inches; ``axes`` is a
    flat list (row-major)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * cols, panel[1] * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, list(axes.ravel())


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` (PNG by the suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def figure_png(fig, dpi: int | None = None) -> bytes:
    """The figure as PNG bytes (e.g. for a TensorBoard image summary)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def class_colour_rgb(k: int) -> tuple[float, float, float]:
    """A distinct, stable colour for class ``k`` (RGB floats 0..1): golden-ratio hue steps."""
    h = (0.07 + 0.618033988749895 * int(k)) % 1.0
    s, v = (0.85, 0.95) if k % 2 == 0 else (0.65, 0.80)
    return colorsys.hsv_to_rgb(h, s, v)


def class_colour_bgr(k: int) -> tuple[int, int, int]:
    """:func:`class_colour_rgb` as OpenCV BGR ints 0..255."""
    r, g, b = (int(round(255 * c)) for c in class_colour_rgb(k))
    return b, g, r


def short_names(names, limit: int = 14) -> list[str]:
    """Names cut to ``limit`` characters (tick labels stay readable with 80 classes)."""
    return [n if len(n) <= limit else n[:limit - 1] + "~" for n in names]


def tick_fontsize(n: int) -> float:
    """Font size for ``n`` tick labels along one axis."""
    return float(np.clip(180 / max(n, 1), 5.0, 9.0))
