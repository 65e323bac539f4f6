"""pycocotools' ``evaluateImg`` for all (image, class) groups at once, in numpy.

Exactness (docs/coco_eval.md §2):
* IoU is maskApi's ``bbIou`` in float64 with the same operation order; crowd GT use
  the detection area as the union.
* Per group, detections are sorted stably by -score (ties: submission order) and cut
  to ``maxDets[-1]``; greedy matching in that order, per IoU threshold and area range.
* The GT choice uses the closed form of pycocotools' scan: among eligible
  (``iou >= min(t, 1-1e-10)``, unused or crowd) regular GT take the largest IoU, ties
  to the later GT; only if there is none, the same among ignored GT.
* The GT-id-0 sentinel quirk (cocoapi#664) is reproduced when ``ann_id`` is given.

Speed: groups are independent and a group's detections are processed in rank order,
so rank ``r`` of *all* groups is one vectorised step (at most ``maxDets[-1]`` steps),
and only (detection, GT) pairs with IoU >= 0.5 are ever looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.evaluation.accumulate import MatchRecords
from detector.evaluation.params import AREA_RNG, IOU_THRS_EFF, MAX_DETS, NUM_AREA, NUM_IOU


@dataclass(frozen=True)
class GroundTruthArrays:
    """G ground-truth boxes in annotation-file order.

    image: int64 [G] image index (its order must be the image-id order);
    category: int64 [G] class index 0..K-1; bbox_xywh: float64 [G, 4];
    area: float64 [G] (the annotation ``area`` field); iscrowd: bool [G];
    ann_id: optional int64 [G] annotation ids (only used for the id-0 quirk).
    """

    image: np.ndarray
    category: np.ndarray
    bbox_xywh: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    ann_id: np.ndarray | None = None


@dataclass(frozen=True)
class DetectionArrays:
    """N detections in submission (results-list) order.

    image: int64 [N] image index (same indexing as the GT); category: int64 [N] class
    index; bbox_xywh: float64 [N, 4]; score: float64 [N].  Detection area = w*h.
    depth: optional float64 [N] metres (NaN where a detection has none); not used by matching.
    """

    image: np.ndarray
    category: np.ndarray
    bbox_xywh: np.ndarray
    score: np.ndarray
    depth: np.ndarray | None = None


def bbox_iou(d: np.ndarray, g: np.ndarray, g_crowd: np.ndarray) -> np.ndarray:
    """maskApi ``bbIou`` on pairs: float64 [P, 4] xywh, [P, 4] xywh, bool [P] -> float64 [P]."""
    dx, dy, dw, dh = d.T
    gx, gy, gw, gh = g.T
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.fmin(dw + dx, gw + gx) - np.fmax(dx, gx)
        h = np.fmin(dh + dy, gh + gy) - np.fmax(dy, gy)
        i = w * h
        da = dw * dh
        u = np.where(g_crowd, da, (da + gw * gh) - i)
        iou = i / u
    return np.where((w > 0) & (h > 0), iou, 0.0)


def match(gt: GroundTruthArrays, dt: DetectionArrays, num_classes: int,
          num_images: int) -> tuple[MatchRecords, np.ndarray]:
    """Match all detections; return their records and ``npig`` int64 [K, A].

    Detections with rank >= ``maxDets[-1]`` in their (image, class) group are dropped,
    as pycocotools' ``computeIoU`` does.
    """
    max_det = MAX_DETS[-1]
    K = num_classes
    gkey = gt.image.astype(np.int64) * K + gt.category
    g_order = np.argsort(gkey, kind="stable")            # file order kept within a group
    gkey = gkey[g_order]
    g_box = gt.bbox_xywh[g_order]
    g_crowd = gt.iscrowd[g_order].astype(bool)
    g_area = gt.area[g_order]
    g_ig = g_crowd[None, :] | (g_area[None, :] < AREA_RNG[:, :1]) | (g_area[None, :] > AREA_RNG[:, 1:])
    npig = np.stack([np.bincount(gt.category[g_order][~g_ig[a]], minlength=K)[:K]
                     for a in range(NUM_AREA)], axis=1).astype(np.int64)

    dkey = dt.image.astype(np.int64) * K + dt.category
    d_order = np.lexsort((-dt.score, dkey))                 # stable: ties keep submission order
    dkey = dkey[d_order]
    n_all = len(dkey)
    first = np.ones(n_all, bool)
    first[1:] = dkey[1:] != dkey[:-1]
    rank = np.arange(n_all) - np.maximum.accumulate(np.where(first, np.arange(n_all), 0))
    keep = rank < max_det
    det, rank, dkey = d_order[keep], rank[keep], dkey[keep]
    n = len(det)
    d_box = dt.bbox_xywh[det]
    d_area = d_box[:, 2] * d_box[:, 3]

    pair_det, pair_gt, pair_iou = _candidate_pairs(dkey, d_box, gkey, g_box, g_crowd)
    # a GT with annotation id 0 reads as "unmatched" in pycocotools (dtm stores the id)
    g_zero = (gt.ann_id[g_order] == 0) if gt.ann_id is not None else np.zeros(len(gkey), bool)
    tp, ig = _greedy_match(pair_det, pair_gt, pair_iou, rank, n, g_crowd, g_ig, g_zero)
    d_out = ((d_area[:, None] < AREA_RNG[:, 0]) | (d_area[:, None] > AREA_RNG[:, 1]))[:, None, :]
    fp = ~(tp | ig | d_out)
    records = MatchRecords(score=dt.score[det].astype(np.float64), category=dt.category[det],
                           image_id=dt.image[det].astype(np.int64), rank=rank, tp=tp, fp=fp)
    return records, npig


def _candidate_pairs(dkey, d_box, gkey, g_box, g_crowd):
    """All (detection, GT) pairs of the same group with IoU >= 0.5.

    Returns int64 [P] detection row, int64 [P] GT row (sorted-GT index), float64 [P]
    IoU, ordered by detection row then GT row.
    """
    lo = np.searchsorted(gkey, dkey, side="left")
    cnt = np.searchsorted(gkey, dkey, side="right") - lo
    total = int(cnt.sum())
    pair_det = np.repeat(np.arange(len(dkey)), cnt)
    starts = np.cumsum(cnt) - cnt
    pair_gt = np.arange(total) - np.repeat(starts - lo, cnt)
    iou = bbox_iou(d_box[pair_det], g_box[pair_gt], g_crowd[pair_gt])
    ok = iou >= IOU_THRS_EFF.min()
    return pair_det[ok], pair_gt[ok], iou[ok]


def _greedy_match(pair_det, pair_gt, pair_iou, rank, n, g_crowd, g_ig, g_zero):
    """Greedy matching, one detection rank at a time for all groups.

    Within one rank step every detection belongs to a different group, so steps are
    the only sequential dependency (through ``used``).
    Returns bool [n, T, A] ``tp`` (matched a non-ignored GT whose id is not 0) and
    bool [n, T, A] ``ig`` (matched an ignored GT: neither TP nor FP).
    """
    tp = np.zeros((n, NUM_IOU, NUM_AREA), bool)
    ig = np.zeros((n, NUM_IOU, NUM_AREA), bool)
    if len(pair_det) == 0:
        return tp, ig
    used = np.zeros((NUM_IOU, NUM_AREA, len(g_crowd)), bool)
    thr = IOU_THRS_EFF[:, None, None]
    p_rank = rank[pair_det]
    order = np.argsort(p_rank, kind="stable")               # keeps (det, gt) order inside a rank
    pair_det, pair_gt, pair_iou, p_rank = pair_det[order], pair_gt[order], pair_iou[order], p_rank[order]
    bounds = np.searchsorted(p_rank, np.arange(MAX_DETS[-1] + 1))
    for r in range(MAX_DETS[-1]):
        lo, hi = bounds[r], bounds[r + 1]
        if lo == hi:
            continue
        d, g, iou = pair_det[lo:hi], pair_gt[lo:hi], pair_iou[lo:hi]
        new = np.ones(hi - lo, bool)
        new[1:] = d[1:] != d[:-1]
        seg = np.nonzero(new)[0]                              # segment = one detection
        seg_id = np.cumsum(new) - 1
        elig = (iou >= thr) & (~used[:, :, g] | g_crowd[g])  # [T, A, p]
        prio = elig * (2 - g_ig[:, g]).astype(np.int8)         # 2 regular, 1 ignored, 0 not eligible
        best = np.maximum.reduceat(prio, seg, axis=2)[:, :, seg_id]
        cand = (prio == best) & (prio > 0)
        iou_c = np.where(cand, iou, -1.0)
        cand &= iou_c == np.maximum.reduceat(iou_c, seg, axis=2)[:, :, seg_id]
        pick = np.maximum.reduceat(np.where(cand, np.arange(hi - lo), -1), seg, axis=2)  # [T, A, s]
        t_i, a_i, s_i = np.nonzero(pick >= 0)
        gm = g[pick[t_i, a_i, s_i]]
        used[t_i, a_i, gm] = True
        di = d[seg[s_i]]
        gm_ig = g_ig[a_i, gm]
        tp[di, t_i, a_i] = ~gm_ig & ~g_zero[gm]
        ig[di, t_i, a_i] = gm_ig
    return tp, ig
