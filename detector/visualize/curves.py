"""Precision-recall and F1-confidence curves (numbers and matplotlib figures).

Numbers come from the exact COCO matching (:class:`~detector.visualize.evaldata.EvalData`):

* :func:`pr_curves`: pycocotools' interpolated precision at the 101 recall thresholds
  (area "all", maxDets 100) per class at IoU 0.5 and 0.75; "all classes" is the mean over
  the classes that have GT, so the area under it (mean over the 101 points) is AP50 /
  AP75 of the 12 COCO stats.
* :func:`f1_curves`: precision, recall and F1 as a function of the score threshold,
  from the same per-detection TP / FP outcomes (IoU 0.5, area "all"; detections COCO
  ignores, e.g. on crowd regions, count as neither).  At threshold ``c`` a class has
  ``TP(c)``, ``FP(c)`` (detections with score >= c) and ``n`` non-ignored GT:
  ``P = TP / (TP + FP)``, ``R = TP / n``, ``F1 = 2 TP / (TP + FP + n)`` (0 when that is
  0/0).  "all classes" pools the counts of every class (micro average), so its best
  threshold is the single score threshold that maximises F1 over all detections.

Class indices 0..K-1 in ``class_names`` order; rows of classes without GT are NaN.
"""

from __future__ import annotations

import numpy as np

from detector.evaluation.params import IOU_THRS, REC_THRS

MAX_LEGEND_CLASSES = 10   # more classes: thin grey lines, the 3 best and worst named in the legend


def _iou_index(iou: float) -> int:
    hits = np.flatnonzero(np.isclose(IOU_THRS, iou))
    if not len(hits):
        raise ValueError(f"IoU {iou} is not a COCO threshold (0.5, 0.55, ..., 0.95)")
    return int(hits[0])


def pr_curves(data, ious=(0.5, 0.75)) -> dict:
    """Interpolated PR curves.

    Returns ``{"recall": float64 [R], "ious": tuple, "precision": float64 [len(ious), K, R]
    (NaN rows: no GT), "mean": float64 [len(ious), R] (over classes with GT; NaN if none),
    "ap": float64 [len(ious), K] (mean of each row = per-class AP at that IoU)}``.
    """
    p = data.result.precision
    p = p[..., -1] if p.ndim == 5 else p                     # [T, R, K, A] at maxDets 100
    has_gt = data.npig[:, 0] > 0
    prec = np.stack([p[_iou_index(t), :, :, 0].T for t in ious])   # [I, K, R]
    prec = np.where(has_gt[None, :, None], prec, np.nan)
    mean = prec[:, has_gt].mean(axis=1) if has_gt.any() else np.full((len(ious), len(REC_THRS)), np.nan)
    return {"recall": REC_THRS.copy(), "ious": tuple(ious), "precision": prec, "mean": mean,
            "ap": prec.mean(axis=2)}


def f1_curves(data, thresholds=None, iou: float = 0.5) -> dict:
    """Precision / recall / F1 against the score threshold (see the module docstring).

    Args:
      data: :class:`EvalData`.
      thresholds: float64 [C] score thresholds (default 0, 0.01, ..., 1).
    Returns ``{"thresholds" [C], "precision" / "recall" / "f1": float64 [K, C] (NaN rows:
    no GT), "precision_all" / "recall_all" / "f1_all": [C] (pooled counts),
    "tp" / "fp": int64 [K, C], "num_gt": int64 [K], "best_threshold", "best_f1"}``
    (best = argmax of ``f1_all``, the lowest such threshold on ties).
    """
    c = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds, np.float64)
    t = _iou_index(iou)
    rec = data.records
    k_all = data.num_classes
    score = np.asarray(rec.score, np.float64)
    tp_mask, fp_mask = rec.tp[:, t, 0], rec.fp[:, t, 0]      # area "all"
    tp = np.zeros((k_all, len(c)), np.int64)
    fp = np.zeros((k_all, len(c)), np.int64)
    for k in range(k_all):
        of_k = rec.category == k
        for counts, mask in ((tp, tp_mask), (fp, fp_mask)):
            s = np.sort(score[of_k & mask])
            counts[k] = len(s) - np.searchsorted(s, c, side="left")    # detections with score >= c
    n = data.npig[:, 0].astype(np.int64)

    def prf(tp_, fp_, n_):
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp_ + fp_ > 0, tp_ / np.maximum(tp_ + fp_, 1), np.nan)
            recall = tp_ / n_
            f1 = np.where(tp_ + fp_ + n_ > 0, 2 * tp_ / np.maximum(tp_ + fp_ + n_, 1), 0.0)
        return precision, recall, f1

    has_gt = (n > 0)[:, None]
    precision, recall, f1 = prf(tp, fp, np.maximum(n, 1)[:, None])
    precision, recall, f1 = (np.where(has_gt, x, np.nan) for x in (precision, recall, f1))
    n_all = int(n.sum())
    p_all, r_all, f1_all = prf(tp.sum(0), fp.sum(0), max(n_all, 1))
    if n_all == 0:
        r_all, f1_all = np.full(len(c), np.nan), np.full(len(c), np.nan)
    best = int(np.nanargmax(f1_all)) if np.isfinite(f1_all).any() else 0
    return {"thresholds": c, "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp,
            "num_gt": n, "precision_all": p_all, "recall_all": r_all, "f1_all": f1_all,
            "best_threshold": float(c[best]), "best_f1": float(f1_all[best]) if n_all else float("nan")}


# --------------------------------------------------------------------------- figures


def _class_lines(ax, x, rows, labels, many: bool, rank=None, highlight: int = 3):
    """One line per class with GT; with ``many`` classes thin grey lines, plus the ``highlight``
    best and worst classes by ``rank`` (float [K]) in colour with a legend entry."""
    from detector.visualize.style import class_colour_rgb

    shown = [k for k, row in enumerate(rows) if not np.all(np.isnan(row))]
    marked = set(shown)
    if many:
        for k in shown:
            ax.plot(x, rows[k], color="0.6", lw=0.6, alpha=0.6)
        order = sorted(shown, key=lambda k: -rank[k]) if rank is not None else []
        marked = set(order[:highlight] + order[-highlight:])
    for k in shown:
        if k in marked:
            ax.plot(x, rows[k], color=class_colour_rgb(k), lw=1.2, label=labels[k])


def plot_pr_curves(data, title: str = "") -> object:
    """matplotlib Figure: one panel per IoU (0.5, 0.75), class curves and the bold mean."""
    from detector.visualize.style import new_figure

    pr = pr_curves(data)
    names = data.class_names
    many = len(names) > MAX_LEGEND_CLASSES
    fig, axes = new_figure(1, len(pr["ious"]), panel=(5.2, 4.6))
    for i, (ax, iou) in enumerate(zip(axes, pr["ious"])):
        labels = [f"{n} {ap:.3f}" for n, ap in zip(names, pr["ap"][i])]
        _class_lines(ax, pr["recall"], pr["precision"][i], labels, many, rank=pr["ap"][i])
        mean_ap = float(np.mean(pr["mean"][i]))
        ax.plot(pr["recall"], pr["mean"][i], color="tab:blue", lw=3,
                label=f"all classes {mean_ap:.3f} AP{int(round(iou * 100))}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision (interpolated)",
               title=f"IoU {iou:.2f}" + (f" ({len(names)} classes in grey, 3 best / worst named)" if many else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7 if not many else 8)
    fig.suptitle(title or "Precision-recall (COCO interpolation, area all, 100 dets/image)")
    return fig


def plot_f1_curves(data, title: str = "") -> object:
    """matplotlib Figure: F1 vs score threshold per class, the pooled curve and its best point;
    a second panel shows pooled precision and recall against the threshold."""
    from detector.visualize.style import new_figure

    f = f1_curves(data)
    names = data.class_names
    many = len(names) > MAX_LEGEND_CLASSES
    fig, (ax, ax2) = new_figure(1, 2, panel=(5.2, 4.6))
    best_per_class = np.nanmax(np.where(np.isnan(f["f1"]), -1, f["f1"]), axis=1)
    labels = [f"{n} {b:.2f}" for n, b in zip(names, best_per_class)]
    _class_lines(ax, f["thresholds"], f["f1"], labels, many, rank=best_per_class)
    ax.plot(f["thresholds"], f["f1_all"], color="tab:blue", lw=3, label="all classes (pooled)")
    bt, bf = f["best_threshold"], f["best_f1"]
    if np.isfinite(bf):
        ax.plot([bt], [bf], "o", color="tab:red", ms=8, zorder=5,
                label=f"best F1 {bf:.3f} at score {bt:.2f}")
        ax.axvline(bt, color="tab:red", ls="--", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold", ylabel="F1 (IoU 0.5)",
           title="F1 vs confidence" + (f" ({len(names)} classes in grey, 3 best / worst named)" if many else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7 if not many else 8)
    ax2.plot(f["thresholds"], f["precision_all"], lw=2, label="precision")
    ax2.plot(f["thresholds"], f["recall_all"], lw=2, label="recall")
    if np.isfinite(bf):
        ax2.axvline(bt, color="tab:red", ls="--", lw=1, label=f"best-F1 threshold {bt:.2f}")
    ax2.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold", ylabel="pooled over classes",
            title="Precision and recall vs confidence (IoU 0.5)")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower left", fontsize=8)
    fig.suptitle(title or "F1 / precision / recall against the score threshold")
    return fig
