"""Detection confusion matrix with a background row and column (numbers and figure).

Per image, the detections with ``score >= score_threshold`` are visited in descending
score order (stable); each takes the still-unmatched non-crowd GT box of ANY class with
the highest IoU, if that IoU is ``>= iou_threshold`` (ties: the earlier GT).  Then, with
``K`` classes and index ``K`` = background:

* matched detection of class ``j`` on a GT of class ``i``: ``matrix[i, j] += 1``
  (the diagonal is correct detections, off-diagonal is class confusion);
* unmatched detection of class ``j``: ``matrix[K, j] += 1`` (a false positive on
  background), unless it lies on a crowd region (intersection / detection area
  ``>= iou_threshold``, COCO's crowd IoU), where it is not counted;
* unmatched non-crowd GT of class ``i``: ``matrix[i, K] += 1`` (missed object).

``matrix[K, K]`` is always 0.  Rows are the truth, columns the prediction.  The
normalised matrix divides each row by its sum (row ``i``: where the objects of class
``i`` went; background row: which classes the false positives claimed).  Boxes are COCO
``[x, y, w, h]`` original pixels (see :mod:`detector.visualize.evaldata`).
"""

from __future__ import annotations

import numpy as np

from detector.evaluation.depth import box_iou_xywh


def _crowd_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Intersection / detection area, float64 [D, G] (COCO's IoU against crowd boxes)."""
    d = np.asarray(d, np.float64).reshape(-1, 4)
    g = np.asarray(g, np.float64).reshape(-1, 4)
    dx, dy, gx, gy = d[:, None, 0], d[:, None, 1], g[None, :, 0], g[None, :, 1]
    iw = np.minimum(dx + d[:, None, 2], gx + g[None, :, 2]) - np.maximum(dx, gx)
    ih = np.minimum(dy + d[:, None, 3], gy + g[None, :, 3]) - np.maximum(dy, gy)
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = (d[:, 2] * d[:, 3])[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def confusion_matrix(data, iou_threshold: float = 0.5, score_threshold: float = 0.25) -> np.ndarray:
    """int64 ``[K+1, K+1]`` counts (rows truth, columns prediction, index K = background)."""
    k_bg = data.num_classes
    m = np.zeros((k_bg + 1, k_bg + 1), np.int64)
    gt, dt = data.gt, data.dets
    for _, g_idx, d_idx in data.image_slices():
        d_idx = d_idx[dt.score[d_idx] >= score_threshold]
        d_idx = d_idx[np.argsort(-dt.score[d_idx], kind="stable")]
        crowd = gt.iscrowd[g_idx].astype(bool)
        regular, crowd_idx = g_idx[~crowd], g_idx[crowd]
        iou = box_iou_xywh(dt.bbox_xywh[d_idx], gt.bbox_xywh[regular])          # [D, G]
        on_crowd = (_crowd_iou(dt.bbox_xywh[d_idx], gt.bbox_xywh[crowd_idx]).max(axis=1, initial=0.0)
                    >= iou_threshold)
        taken = np.zeros(len(regular), bool)
        for r, d in enumerate(d_idx):
            j = int(dt.category[d])
            cand = np.where(taken, -1.0, iou[r]) if len(regular) else np.zeros(0)
            g = int(np.argmax(cand)) if len(cand) else -1
            if g >= 0 and cand[g] >= iou_threshold:
                taken[g] = True
                m[int(gt.category[regular[g]]), j] += 1
            elif not on_crowd[r]:
                m[k_bg, j] += 1
        np.add.at(m[:, k_bg], gt.category[regular[~taken]].astype(np.int64), 1)
    return m


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows summing to 0 stay 0), float64."""
    m = np.asarray(matrix, np.float64)
    s = m.sum(axis=1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def plot_confusion_matrix(matrix: np.ndarray, class_names, iou_threshold: float, score_threshold: float,
                          note: str = "") -> object:
    """matplotlib Figure: raw counts and row-normalised shares side by side."""
    from detector.visualize.style import new_figure, short_names, tick_fontsize

    labels = short_names(list(class_names)) + ["background"]
    n = len(labels)
    side = float(np.clip(0.16 * n + 2.5, 5.0, 16.0))
    fig, axes = new_figure(1, 2, panel=(side, side * 0.95), dpi=110)
    annotate = n <= 16
    fs = tick_fontsize(n)
    for ax, values, title, fmt in ((axes[0], np.asarray(matrix), "counts", "d"),
                                   (axes[1], normalise_rows(matrix), "normalised by row (truth)", ".2f")):
        shown = np.log1p(values) if fmt == "d" else values
        im = ax.imshow(shown, cmap="Blues", vmin=0, aspect="equal")
        ax.set_xticks(range(n), labels, rotation=90, fontsize=fs)
        ax.set_yticks(range(n), labels, fontsize=fs)
        ax.set_xlabel("predicted class (background = missed GT)")
        ax.set_ylabel("true class (background = false positive)")
        ax.set_title(title + (" (colour: log(1+count))" if fmt == "d" else ""))
        ax.axhline(n - 1.5, color="0.4", lw=0.8)
        ax.axvline(n - 1.5, color="0.4", lw=0.8)
        if fmt != "d":
            fig.colorbar(im, ax=ax, shrink=0.8)
        if annotate:
            top = shown.max() if shown.size else 0
            for i in range(n):
                for j in range(n):
                    v = values[i, j]
                    if v == 0:
                        continue
                    text = f"{int(v)}" if fmt == "d" else (f"{v:.2f}" if v >= 0.005 else "<.01")
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="white" if shown[i, j] > 0.6 * top else "black")
    fig.suptitle(f"Confusion matrix at IoU >= {iou_threshold:g}, score >= {score_threshold:.2f}"
                 + (f" ({note})" if note else ""))
    return fig
