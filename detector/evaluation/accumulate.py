"""pycocotools' ``accumulate()`` + ``summarize()`` from compact per-detection records.

This is the one numpy implementation shared by the file evaluator
(:mod:`detector.evaluation.cocoeval`) and the streaming Keras metric
(:mod:`detector.metrics.coco_map`).  Both produce :class:`MatchRecords` (one row per
detection kept after the per-(image, class) ``maxDets[-1]`` truncation) and
``npig[K, A]`` (non-ignored GT counts); this module turns them into pycocotools'
``precision`` / ``recall`` arrays and the 12 stats, bit-for-bit in the same float64
operation order (docs/coco_eval.md §3).

Conventions: class index ``k`` in ``0..K-1`` (no background slot); T = 10 IoU
thresholds, R = 101 recall thresholds, A = 4 area ranges (all, small, medium, large),
M = 3 maxDets (1, 10, 100); see :mod:`detector.evaluation.params`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.evaluation.params import AREA_LABELS, IOU_THRS, MAX_DETS, NUM_AREA, NUM_IOU, NUM_REC, REC_THRS, STAT_NAMES

_EPS = np.spacing(1)  # pycocotools adds it to the precision denominator


@dataclass(frozen=True)
class MatchRecords:
    """Matching outcome of N detections (only those with ``rank < maxDets[-1]``).

    Attributes:
      score: float64 [N], the score pycocotools sorts by.
      category: int [N], class index 0..K-1.
      image_id: int64 [N]; only its order matters (ties in score go to the lower id).
      rank: int [N], 0-based position in the stable (-score, submission order) sort of
        the detection's (image, class) group.
      tp: bool [N, T, A], matched to a non-ignored GT at IoU threshold t, area range a.
      fp: bool [N, T, A], unmatched and not ignored.  A detection that is neither is
        ignored (matched to a crowd / out-of-range GT, or unmatched and out of range).
    """

    score: np.ndarray
    category: np.ndarray
    image_id: np.ndarray
    rank: np.ndarray
    tp: np.ndarray
    fp: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    @staticmethod
    def concatenate(parts: list[MatchRecords]) -> MatchRecords:
        return MatchRecords(*(np.concatenate([getattr(p, f) for p in parts])
                              for f in ("score", "category", "image_id", "rank", "tp", "fp")))


@dataclass(frozen=True)
class CocoEvalResult:
    """pycocotools-equivalent evaluation arrays (``-1`` = no non-ignored GT).

    Attributes:
      precision: float64 [T, R, K, A] at maxDets = 100 (pycocotools'
        ``eval['precision'][..., -1]``); with ``all_max_dets`` a [T, R, K, A, M] array.
      recall: float64 [T, K, A, M].
      npig: int64 [K, A], number of non-ignored GT per class and area range.
    """

    precision: np.ndarray
    recall: np.ndarray
    npig: np.ndarray

    def stats(self) -> dict[str, float]:
        """The 12 COCO stats, keyed by :data:`STAT_NAMES` (``-1.0`` where pycocotools gives -1)."""
        return summarize(self)

    def per_class_ap(self, iou_index: int | None = None) -> np.ndarray:
        """float64 [K]: AP per class (IoU .50:.95, or one threshold), area all, maxDets 100; -1 = no GT."""
        p = self._precision_at_100()[:, :, :, 0]
        if iou_index is not None:
            p = p[iou_index:iou_index + 1]
        valid = self.npig[:, 0] > 0
        return np.where(valid, p.mean(axis=(0, 1)) if p.size else -1.0, -1.0)

    def pr_curves(self) -> dict[str, np.ndarray]:
        """Precision at the 101 recall thresholds, area all, maxDets 100.

        Returns ``{"recall": float64 [R], "precision_50": float64 [K, R] (IoU 0.5),
        "precision": float64 [K, R] (mean over the 10 IoU thresholds)}``; rows of
        classes without GT are -1.
        """
        p = self._precision_at_100()[:, :, :, 0]          # [T, R, K]
        valid = (self.npig[:, 0] > 0)[:, None]
        return {"recall": REC_THRS.copy(),
                "precision_50": np.where(valid, p[0].T, -1.0),
                "precision": np.where(valid, p.mean(axis=0).T, -1.0)}

    def _precision_at_100(self) -> np.ndarray:
        return self.precision[..., -1] if self.precision.ndim == 5 else self.precision


def accumulate(records: MatchRecords, npig: np.ndarray, all_max_dets: bool = False) -> CocoEvalResult:
    """pycocotools ``accumulate()`` over all images at once.

    Args:
      records: per-detection outcomes, in any order (the global order is rebuilt
        from (class, -score, image_id, rank), which is pycocotools' stable order).
      npig: int [K, A] non-ignored GT counts; K defines the class count.
      all_max_dets: also compute precision for maxDets 1 and 10 (not needed by the
        12 stats; triples the cost).

    Returns:
      :class:`CocoEvalResult`.
    """
    npig = np.asarray(npig, dtype=np.int64)
    num_classes = npig.shape[0]
    n = len(records)
    order = np.lexsort((records.rank, records.image_id, -np.asarray(records.score, np.float64),
                        records.category))
    cat = np.asarray(records.category)[order]
    rank = np.asarray(records.rank)[order]
    # [T*A, N] layout: cumulative sums then run along contiguous memory
    tp = np.ascontiguousarray(records.tp.reshape(n, NUM_IOU * NUM_AREA)[order].T)
    fp = np.ascontiguousarray(records.fp.reshape(n, NUM_IOU * NUM_AREA)[order].T)
    bounds = np.searchsorted(cat, np.arange(num_classes + 1))

    recall = np.full((NUM_IOU, num_classes, NUM_AREA, len(MAX_DETS)), -1.0)
    m_list = range(len(MAX_DETS)) if all_max_dets else [len(MAX_DETS) - 1]
    precision = np.full((NUM_IOU, NUM_REC, num_classes, NUM_AREA, len(MAX_DETS)), -1.0)
    for m, max_det in enumerate(MAX_DETS):
        if max_det < MAX_DETS[-1]:      # rows past maxDet act like ignored detections
            keep = rank < max_det
            tp_m, fp_m = tp & keep, fp & keep
        else:
            tp_m, fp_m = tp, fp
        tp_count = _segment_sums(tp_m, bounds).reshape(NUM_IOU, NUM_AREA, num_classes)
        ratio = tp_count.transpose(0, 2, 1) / np.maximum(npig, 1)   # rc[-1] = tp / npig
        recall[:, :, :, m] = np.where(npig > 0, ratio, -1.0)
        if m in m_list:
            for k in range(num_classes):
                lo, hi = bounds[k], bounds[k + 1]
                precision[:, :, k, :, m] = _class_precision(tp_m[:, lo:hi], fp_m[:, lo:hi], npig[k])
    if not all_max_dets:
        precision = precision[..., -1]
    return CocoEvalResult(precision=precision, recall=recall, npig=npig)


def _segment_sums(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Row sums of bool [C, N] over column segments ``bounds[k]:bounds[k+1]`` -> int64 [C, K]."""
    out = np.zeros((x.shape[0], len(bounds) - 1), np.int64)
    nonempty = np.flatnonzero(bounds[1:] > bounds[:-1])
    if len(nonempty):   # reduceat misreads empty segments, so only nonempty ones are passed
        out[:, nonempty] = np.add.reduceat(x.view(np.uint8), bounds[nonempty], axis=1, dtype=np.int64)
    return out


def _class_precision(tp: np.ndarray, fp: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """Interpolated precision of one class -> float64 [T, R, A] (-1 where npig == 0).

    pycocotools computes ``pr = tp/(fp+tp+eps)`` at every position, takes the
    reverse running max and samples it at the first position whose recall reaches
    each threshold.  That position is always the n-th TP for the smallest n with
    ``n/npig >= thr`` (or position 0 for thr = 0), and the running max there is the
    max over later TPs only (FP and ignored positions have lower or equal ``pr``), so
    only TP positions are evaluated here, with the same float64 expressions.

    Args:
      tp, fp: bool [T*A, n], the class's detections in global score order.
      npig: int [A].
    """
    out = np.full((NUM_IOU, NUM_REC, NUM_AREA), -1.0)
    valid_a = np.nonzero(npig > 0)[0]
    out[:, :, valid_a] = 0.0
    if len(valid_a) == 0 or tp.shape[1] == 0:
        return out
    fp_cum = np.cumsum(fp.view(np.uint8), axis=1, dtype=np.int32)
    for a in valid_a:
        for t in range(NUM_IOU):
            row = t * NUM_AREA + a
            pos = np.flatnonzero(tp[row])
            if len(pos) == 0:
                continue                                         # all q stay 0
            tp_sum = np.arange(1, len(pos) + 1, dtype=np.float64)
            fp_sum = fp_cum[row, pos].astype(np.float64)
            pr = tp_sum / (fp_sum + tp_sum + _EPS)               # exactly as pycocotools
            pr = np.maximum.accumulate(pr[::-1])[::-1]           # precision envelope
            inds = np.searchsorted(tp_sum / npig[a], REC_THRS, side="left")
            ok = inds < len(pos)                                 # beyond max recall: stays 0
            out[t, ok, a] = pr[inds[ok]]
    return out


def summarize(result: CocoEvalResult) -> dict[str, float]:
    """pycocotools ``summarize()``: the 12 stats, each ``mean(s[s > -1])`` or -1."""
    precision = result._precision_at_100()                        # [T, R, K, A]
    recall = result.recall                                        # [T, K, A, M]
    area = {name: i for i, name in enumerate(AREA_LABELS)}
    t50 = int(np.nonzero(IOU_THRS == 0.5)[0][0])
    t75 = int(np.nonzero(IOU_THRS == 0.75)[0][0])
    m100 = MAX_DETS.index(100)  # stats[0..5] are hard-wired to maxDets=100 (cocoapi#558)

    def mean(s: np.ndarray) -> float:
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    values = [
        mean(precision[:, :, :, area["all"]]),
        mean(precision[t50:t50 + 1, :, :, area["all"]]),
        mean(precision[t75:t75 + 1, :, :, area["all"]]),
        mean(precision[:, :, :, area["small"]]),
        mean(precision[:, :, :, area["medium"]]),
        mean(precision[:, :, :, area["large"]]),
        mean(recall[:, :, area["all"], 0]),
        mean(recall[:, :, area["all"], 1]),
        mean(recall[:, :, area["all"], m100]),
        mean(recall[:, :, area["small"], m100]),
        mean(recall[:, :, area["medium"], m100]),
        mean(recall[:, :, area["large"], m100]),
    ]
    return dict(zip(STAT_NAMES, values))


def format_table(stats: dict[str, float]) -> str:
    """The familiar 12-line pycocotools table."""
    rows = [("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
            ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100),
            ("AP", "0.50:0.95", "large", 100), ("AR", "0.50:0.95", "all", 1),
            ("AR", "0.50:0.95", "all", 10), ("AR", "0.50:0.95", "all", 100),
            ("AR", "0.50:0.95", "small", 100), ("AR", "0.50:0.95", "medium", 100),
            ("AR", "0.50:0.95", "large", 100)]
    lines = []
    for (kind, iou, area, max_det), value in zip(rows, stats.values()):
        title = "Average Precision" if kind == "AP" else "Average Recall"
        lines.append(f" {title:<18} ({kind}) @[ IoU={iou:<9} | area={area:>6s} | "
                     f"maxDets={max_det:>3d} ] = {value:0.3f}")
    return "\n".join(lines)
