"""How well the anchors fit a dataset's boxes: best possible recall, and a search for better settings.

*Best possible recall* (BPR) is the share of ground-truth boxes that have at least
one anchor with IoU >= ``matching.positive_iou``: boxes below it get a positive only
through ``matching.force_match`` (one anchor, of poor IoU), so the box head learns
them from a bad start and the classifier sees few positives for them.

Boxes are measured as the network sees them at evaluation: ``[ymin, xmin, ymax, xmax]``
in pixels of the letterboxed input (image scaled so that its longer side is
``data.image_size``, placed top-left).  Size buckets use COCO's area thresholds on that
network-input area: small < 32**2 <= medium < 96**2 <= large.

The computation is exact without building the ``boxes x anchors`` IoU matrix: anchors
of one level and shape sit on a regular grid, and for axis-aligned boxes of fixed
sizes the IoU only grows as the centres get closer in x and in y separately, so the
best anchor of each (level, shape) is the one whose grid centre is nearest to the box
centre.  :func:`best_anchor_iou` agrees with a brute-force IoU over
:func:`~detector.targets.anchors.generate_anchors` (tested).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
WARN_BELOW = 0.95  # best possible recall below this triggers a warning


def anchor_shapes(num_scales: int, aspect_ratios, anchor_size: float, level: int) -> np.ndarray:
    """``[A, 2]`` anchor (height, width) of one level, in the order of :mod:`detector.targets.anchors`."""
    stride = 2.0**level
    out = []
    for s in range(num_scales):
        base = anchor_size * stride * 2.0 ** (s / num_scales)
        for r in aspect_ratios:
            out.append((base / np.sqrt(r), base * np.sqrt(r)))
    return np.asarray(out, np.float64)


def best_anchor_iou(boxes_yxyx: np.ndarray, image_size: int, min_level: int, max_level: int,
                    num_scales: int, aspect_ratios, anchor_size: float) -> np.ndarray:
    """float64 ``[n]``: each box's highest IoU with any anchor of the given layout."""
    b = np.asarray(boxes_yxyx, np.float64).reshape(-1, 4)
    best = np.zeros(len(b))
    if not len(b):
        return best
    cy, cx = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    bh, bw = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    area_b = np.maximum(bh, 0) * np.maximum(bw, 0)
    for level in range(min_level, max_level + 1):
        stride = 2.0**level
        cells = image_size // int(stride)
        # nearest grid centre (centres at stride/2 + k*stride, k = 0..cells-1)
        ay = stride / 2 + np.clip(np.floor(cy / stride), 0, cells - 1) * stride
        ax = stride / 2 + np.clip(np.floor(cx / stride), 0, cells - 1) * stride
        for ah, aw in anchor_shapes(num_scales, aspect_ratios, anchor_size, level):
            ih = np.maximum(np.minimum(b[:, 2], ay + ah / 2) - np.maximum(b[:, 0], ay - ah / 2), 0)
            iw = np.maximum(np.minimum(b[:, 3], ax + aw / 2) - np.maximum(b[:, 1], ax - aw / 2), 0)
            inter = ih * iw
            union = area_b + ah * aw - inter
            best = np.maximum(best, np.divide(inter, union, out=np.zeros_like(inter), where=union > 0))
    return best


@dataclass(frozen=True)
class RecallReport:
    """Best possible recall overall and per size bucket (``None`` for an empty bucket)."""

    threshold: float
    num_boxes: int
    recall: float
    buckets: dict          # name -> (num_boxes, recall or None)
    mean_best_iou: float

    def lines(self) -> list[str]:
        parts = [f"{name} {r:.3f} ({n} boxes)" if r is not None else f"{name} - (0 boxes)"
                 for name, (n, r) in self.buckets.items()]
        return [f"anchor best possible recall at IoU >= {self.threshold:g}: {self.recall:.3f} of "
                f"{self.num_boxes} boxes (mean best IoU {self.mean_best_iou:.3f}); " + ", ".join(parts)]


def recall_report(best_iou: np.ndarray, boxes_yxyx: np.ndarray, threshold: float) -> RecallReport:
    b = np.asarray(boxes_yxyx, np.float64).reshape(-1, 4)
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    hit = best_iou >= threshold
    buckets = {}
    for name, lo, hi in BUCKETS:
        sel = (area >= lo) & (area < hi)
        n = int(sel.sum())
        buckets[name] = (n, float(hit[sel].mean()) if n else None)
    return RecallReport(float(threshold), len(b), float(hit.mean()) if len(b) else 1.0, buckets,
                        float(best_iou.mean()) if len(b) else 1.0)


def anchor_recall(boxes_yxyx: np.ndarray, cfg) -> RecallReport:
    """:class:`RecallReport` of ``cfg``'s anchors on ``boxes_yxyx`` (network-input pixels)."""
    m = cfg.model
    best = best_anchor_iou(boxes_yxyx, cfg.data.image_size, m.min_level, m.max_level,
                           m.anchors.num_scales, m.anchors.aspect_ratios, m.anchors.anchor_size)
    return recall_report(best, boxes_yxyx, cfg.matching.positive_iou)


def network_boxes(records, image_size: int) -> np.ndarray:
    """``[n, 4]`` yxyx network-input pixels of the non-crowd, non-degenerate boxes of ``records``
    (letterbox: longer side scaled to ``image_size``, as at evaluation; no augmentation)."""
    from detector.data.records import clip_xyxy

    out = []
    for r in records:
        xyxy = clip_xyxy(r.boxes, r.height, r.width) * (image_size / max(r.height, r.width, 1))
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]) & ~np.asarray(r.is_crowd, bool)
        out.append(xyxy[keep][:, [1, 0, 3, 2]])
    return np.concatenate(out) if out else np.zeros((0, 4))


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class AnchorFit:
    min_level: int
    max_level: int
    num_scales: int
    aspect_ratios: tuple[float, ...]
    anchor_size: float
    recall: float
    num_anchors: int

    def overrides(self) -> list[str]:
        ratios = ", ".join(f"{r:g}" for r in self.aspect_ratios)
        return [f"model.min_level={self.min_level}", f"model.max_level={self.max_level}",
                f"model.anchors.num_scales={self.num_scales}",
                f"model.anchors.aspect_ratios=[{ratios}]", f"model.anchors.anchor_size={self.anchor_size:g}"]

    def yaml(self) -> str:
        ratios = ", ".join(f"{r:g}" for r in self.aspect_ratios)
        return (f"model:\n  min_level: {self.min_level}\n  max_level: {self.max_level}\n"
                f"  anchors: {{num_scales: {self.num_scales}, aspect_ratios: [{ratios}], "
                f"anchor_size: {self.anchor_size:g}}}")


def _ratio_candidates(boxes_yxyx: np.ndarray) -> list[tuple[float, ...]]:
    """COCO's [0.5, 1, 2], [1], and three / two ratios at quantiles of the boxes' w/h."""
    h = boxes_yxyx[:, 2] - boxes_yxyx[:, 0]
    w = boxes_yxyx[:, 3] - boxes_yxyx[:, 1]
    r = np.log(np.clip(w / np.maximum(h, 1e-9), 1e-3, 1e3))
    cands = {(0.5, 1.0, 2.0), (1.0,)}
    if len(r):
        def q(p):
            return float(np.round(np.exp(np.quantile(r, p)), 2))
        cands.add(tuple(sorted({q(0.15), q(0.5), q(0.85)})))
        cands.add(tuple(sorted({q(0.25), q(0.75)})))
    return sorted(cands, key=lambda c: (len(c), c))


def fit_anchors(boxes_yxyx: np.ndarray, image_size: int, positive_iou: float,
                min_levels=(2, 3, 4, 5), max_level_cap: int = 7) -> list[AnchorFit]:
    """Anchor layouts ranked by best possible recall on ``boxes_yxyx`` (network-input pixels).

    Searches pyramid levels (``min_level`` in ``min_levels``, ``max_level`` up to the cap and
    a divisor of ``image_size``), 2..4 scales, aspect-ratio sets (see
    :func:`_ratio_candidates`) and ``anchor_size`` 2..8.  Ranked by recall (in steps of
    0.005), then fewer anchors per image (cheaper heads and NMS).
    """
    boxes = np.asarray(boxes_yxyx, np.float64).reshape(-1, 4)
    if len(boxes) > 20000:   # plenty for a share; keeps the search to seconds
        boxes = boxes[np.random.default_rng(0).choice(len(boxes), 20000, replace=False)]
    fits = []
    levels = [(lo, hi) for lo in min_levels for hi in range(lo, max_level_cap + 1)
              if image_size % 2**hi == 0 and hi - lo >= 1]
    for (lo, hi), ns, ratios, size in itertools.product(
            levels, (2, 3, 4), _ratio_candidates(boxes), (2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)):
        best = best_anchor_iou(boxes, image_size, lo, hi, ns, ratios, size)
        n = sum((image_size // 2**lv) ** 2 for lv in range(lo, hi + 1)) * ns * len(ratios)
        fits.append(AnchorFit(lo, hi, ns, tuple(ratios), size, float((best >= positive_iou).mean()), n))
    fits.sort(key=lambda f: (-round(f.recall / 0.005), f.num_anchors, -f.min_level))
    return fits


def advice(report: RecallReport, cfg) -> str | None:
    """A warning naming the settings to change, or None when the recall is fine."""
    if report.num_boxes == 0 or report.recall >= WARN_BELOW:
        return None
    low = [name for name, (n, r) in report.buckets.items() if r is not None and r < WARN_BELOW]
    hints = []
    if "small" in low:
        hints.append("smaller anchors for small boxes: lower model.anchors.anchor_size or model.min_level, "
                     "or a larger data.image_size")
    if "large" in low:
        hints.append("larger anchors for large boxes: raise model.max_level or model.anchors.anchor_size")
    if "medium" in low or not hints:
        hints.append("more anchor shapes: model.anchors.num_scales / model.anchors.aspect_ratios matching "
                     "the boxes' width/height")
    forced = (f" (matching.force_match is on: each of those boxes still trains its "
              f"{cfg.matching.force_match_top_k} best anchor(s), at a lower IoU.)" if cfg.matching.force_match else "")
    return (f"anchors fit the training boxes poorly: best possible recall {report.recall:.3f} < {WARN_BELOW} "
            f"at matching.positive_iou={cfg.matching.positive_iou:g} (low in: {', '.join(low) or 'all'}). "
            f"Fix: {'; '.join(hints)}. 'detector inspect --config ... --fit-anchors' prints settings that fit.{forced}")
