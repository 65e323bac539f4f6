"""Depth error on matched detections (numpy only).

The issue asks for "a depth error on matched detections of at most 10% (mean
absolute relative error)".  Definition used everywhere (training logs
``val_depth_error``, ``tools/eval.py`` model mode ``depth_error``):

* Per image, detections are visited in descending score order (stable: on equal
  scores the earlier slot first).  Each takes the still-unmatched, non-crowd GT of
  the SAME class with the highest IoU, if that IoU is >= ``iou_threshold`` (0.5);
  on equal IoU the earlier GT wins.  One detection per GT, one GT per detection.
* Matching runs over all non-crowd GT (so a detection of an object without a depth
  label is not re-assigned to a neighbour); only pairs whose GT depth is known
  (``> 0`` metres) enter the error.
* ``depth_error = mean(|d_pred - d_gt| / d_gt)`` over those pairs of the whole
  evaluation (micro average), undefined (NaN) when there are none.

Boxes are COCO ``[x, y, w, h]`` in original-image pixels; IoU is plain box IoU
in float64.  Class indices 0..K-1; ``-1`` marks padding slots.
"""

from __future__ import annotations

import numpy as np


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a`` [D, 4] and ``b`` [M, 4] (``[x, y, w, h]``), float64 [D, M]; 0 for empty unions."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0][:, None], b[:, 0][None])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1][:, None], b[:, 1][None])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, det_classes: np.ndarray, gt_boxes: np.ndarray,
                gt_classes: np.ndarray, gt_is_crowd: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching of one image's detections to its GT.

    Args:
      det_boxes [D, 4] xywh, det_scores [D], det_classes int [D] (-1 = padding slot);
      gt_boxes [M, 4] xywh, gt_classes int [M] (-1 = padding), gt_is_crowd bool [M].
    Returns int64 [D]: the matched GT index per detection slot, -1 if unmatched.
    """
    det_classes = np.asarray(det_classes).reshape(-1)
    gt_classes = np.asarray(gt_classes).reshape(-1)
    match = np.full(det_classes.shape[0], -1, np.int64)
    usable = (gt_classes >= 0) & ~np.asarray(gt_is_crowd, bool).reshape(-1)
    if not usable.any() or not (det_classes >= 0).any():
        return match
    iou = box_iou_xywh(det_boxes, gt_boxes)
    iou[:, ~usable] = -1.0
    iou[det_classes[:, None] != gt_classes[None, :]] = -1.0
    taken = np.zeros(gt_classes.shape[0], bool)
    reachable = iou.max(axis=1) >= iou_threshold      # skips most slots cheaply
    order = np.argsort(-np.asarray(det_scores, np.float64).reshape(-1), kind="stable")
    for d in order:
        if not reachable[d] or det_classes[d] < 0:
            continue
        cand = np.where(taken, -1.0, iou[d])
        g = int(np.argmax(cand))          # first index on ties
        if cand[g] >= iou_threshold:
            match[d] = g
            taken[g] = True
    return match


def depth_error_sums(gt: dict, detections: dict, valid: np.ndarray | None = None,
                     iou_threshold: float = 0.5) -> tuple[float, int]:
    """``(sum of |d_pred - d_gt| / d_gt, number of pairs)`` over a padded batch.

    Args:
      gt: numpy ``boxes_xywh`` [B, M, 4] original px, ``classes`` int [B, M] (-1 pad),
        ``is_crowd`` bool [B, M], ``depth`` [B, M] metres (<= 0 unknown).
      detections: numpy ``boxes_xywh`` [B, D, 4] original px, ``scores`` [B, D],
        ``classes`` int [B, D] (-1 pad), ``depth`` [B, D] metres.
      valid: optional bool [B]; False marks padding images (skipped).
    """
    classes = np.asarray(detections["classes"])
    valid = np.ones(classes.shape[0], bool) if valid is None else np.asarray(valid, bool)
    total, count = 0.0, 0
    for b in np.flatnonzero(valid):
        match = match_image(detections["boxes_xywh"][b], detections["scores"][b], classes[b],
                            gt["boxes_xywh"][b], gt["classes"][b], gt["is_crowd"][b], iou_threshold)
        d = np.flatnonzero(match >= 0)
        d_gt = np.asarray(gt["depth"][b], np.float64)[match[d]]
        known = d_gt > 0
        d_pred = np.asarray(detections["depth"][b], np.float64)[d][known]
        total += float(np.sum(np.abs(d_pred - d_gt[known]) / d_gt[known]))
        count += int(known.sum())
    return total, count


class DepthError:
    """Streaming :func:`depth_error_sums` over an evaluation: ``update(gt, dets, valid)``,
    ``result()`` -> mean relative error (NaN without pairs), ``count``, ``reset()``."""

    def __init__(self, iou_threshold: float = 0.5):
        self.iou_threshold = float(iou_threshold)
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, gt: dict, detections: dict, valid: np.ndarray | None = None) -> None:
        s, n = depth_error_sums(gt, detections, valid, self.iou_threshold)
        self.total += s
        self.count += n

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")
