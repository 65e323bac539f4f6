"""Assignment of ground truth to anchors (IoU matching) and per-anchor training targets.

Labels per anchor (the ``cls`` target):

* ``c >= 0``  positive, matched to a ground-truth box of class ``c``;
* ``-1``      negative (background): best IoU below ``negative_iou``;
* ``-2``      ignored: best IoU in ``[negative_iou, positive_iou)``, or overlapping a
  crowd box (IoU >= ``negative_iou``).  Ignored anchors contribute no loss.

With ``force_match`` every non-crowd ground-truth box also claims its best anchor,
so small or oddly shaped objects always get at least one positive (Model Garden's
``force_match_for_each_col``).  When two boxes claim the same anchor the later box
wins; the regular IoU assignment is otherwise kept.  With ``force_match_top_k = k > 1``
each such box also claims its anchors of IoU rank 2..k (IoU > 0) that are not already
positive: a small object then gets k positives instead of one (with one anchor
aspect ratio, mostly the k scales at its best location), a large one is unaffected.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from detector.targets import box_coder

IGNORE = -2
BACKGROUND = -1


def iou(boxes_a, boxes_b) -> tf.Tensor:
    """Pairwise IoU.

    Args:
      boxes_a: float32 ``[..., N, 4]`` yxyx.
      boxes_b: float32 ``[..., M, 4]`` yxyx.

    Returns:
      float32 ``[..., N, M]``; 0 where a union is empty (degenerate boxes).
    """
    a = tf.convert_to_tensor(boxes_a, tf.float32)[..., :, None, :]
    b = tf.convert_to_tensor(boxes_b, tf.float32)[..., None, :, :]
    ih = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = ih * iw
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return tf.math.divide_no_nan(inter, union)


class PreparedAnchors(NamedTuple):
    """Anchors with the per-anchor quantities the assignment needs, computed once.

    ``boxes`` float32 ``[N, 4]`` yxyx pixels; ``ymin``, ``xmin``, ``ymax``, ``xmax``, ``area``
    float32 ``[N]`` each.  The input pipeline builds this once (:func:`prepare_anchors`) instead
    of slicing the anchors in every image's assignment.
    """
    boxes: tf.Tensor
    ymin: tf.Tensor
    xmin: tf.Tensor
    ymax: tf.Tensor
    xmax: tf.Tensor
    area: tf.Tensor


def prepare_anchors(anchors) -> PreparedAnchors:
    """:class:`PreparedAnchors` of float32 ``[N, 4]`` yxyx ``anchors`` (numpy or tensor).

    Called eagerly (outside a graph), the columns are computed once and a graph that uses
    them captures them as constants."""
    boxes = tf.reshape(tf.cast(anchors, tf.float32), [-1, 4])
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return PreparedAnchors(boxes, ymin, xmin, ymax, xmax, (ymax - ymin) * (xmax - xmin))


def _iou_per_box(anchors: PreparedAnchors, boxes) -> tf.Tensor:
    """IoU of every box with every anchor: float32 ``[M, N]`` (a box per row, so the long
    anchor axis is the contiguous one), 0 where a union is empty."""
    ymin, xmin, ymax, xmax = (boxes[:, i:i + 1] for i in range(4))              # [M, 1] each
    ih = tf.maximum(tf.minimum(anchors.ymax, ymax) - tf.maximum(anchors.ymin, ymin), 0.0)
    iw = tf.maximum(tf.minimum(anchors.xmax, xmax) - tf.maximum(anchors.xmin, xmin), 0.0)
    inter = ih * iw
    return tf.math.divide_no_nan(inter, anchors.area + (ymax - ymin) * (xmax - xmin) - inter)


def assign_targets(
    anchors,
    gt_boxes,
    gt_classes,
    gt_is_crowd,
    gt_depth,
    matching_cfg,
    scale_factors=(1.0, 1.0, 1.0, 1.0),
    level_sizes=None,
) -> dict[str, tf.Tensor]:
    """Targets for one image.

    Args:
      anchors: float32 ``[N, 4]`` yxyx pixels (see :mod:`detector.targets.anchors`), or
        :class:`PreparedAnchors` of them (cheaper when called per image).
      gt_boxes: float32 ``[M, 4]`` yxyx pixels, same frame as the anchors; ``M`` may be 0.
      gt_classes: int32 ``[M]`` class ids ``0..C-1``; ``-1`` marks padding.
      gt_is_crowd: bool ``[M]``; crowd boxes never create positives.
      gt_depth: float32 ``[M]`` depth in metres; ``<= 0`` means unknown.
      matching_cfg: :class:`~detector.config.MatchingConfig`.
      scale_factors: box-coder scale factors ``(sy, sx, sh, sw)``.
      level_sizes: anchors per pyramid level, in the anchors' order (``matching.method: atss``).

    Returns:
      ``{"cls": int32 [N], "box": float32 [N, 4] codes (0 unless positive),
      "depth": float32 [N] log(metres) (0 where none), "depth_mask": float32 [N]}``.
    """
    if not isinstance(anchors, PreparedAnchors):
        anchors = prepare_anchors(anchors)
    n_anchors = tf.shape(anchors.boxes)[0]
    # One padding row guarantees M >= 1, so the reductions below are defined.
    gt_boxes = tf.concat([tf.reshape(tf.cast(gt_boxes, tf.float32), [-1, 4]), tf.zeros([1, 4])], 0)
    gt_classes = tf.concat([tf.reshape(tf.cast(gt_classes, tf.int32), [-1]), [-1]], 0)
    gt_is_crowd = tf.concat([tf.reshape(tf.cast(gt_is_crowd, tf.bool), [-1]), [False]], 0)
    gt_depth = tf.concat([tf.reshape(tf.cast(gt_depth, tf.float32), [-1]), [-1.0]], 0)
    box_ids = tf.range(tf.shape(gt_classes)[0])

    valid = gt_classes >= 0
    regular = valid & ~gt_is_crowd
    crowd = valid & gt_is_crowd
    overlaps = _iou_per_box(anchors, gt_boxes)                           # [M, N]
    reg_iou = tf.where(regular[:, None], overlaps, -1.0)
    best_iou = tf.reduce_max(reg_iou, axis=0)                            # [N]
    match = tf.argmax(reg_iou, axis=0, output_type=tf.int32)            # [N]

    if getattr(matching_cfg, "method", "iou") == "atss":
        if level_sizes is None:
            raise ValueError("matching.method 'atss' needs the anchors' level_sizes")
        labels, match = _atss(anchors.boxes, tf.transpose(overlaps), gt_boxes, regular, level_sizes,
                              matching_cfg.atss_top_k)
    else:
        labels = tf.where(best_iou >= matching_cfg.positive_iou, 0, BACKGROUND)
        labels = tf.where((best_iou >= matching_cfg.negative_iou) & (labels == BACKGROUND), IGNORE, labels)
    crowd_iou = tf.reduce_max(tf.where(crowd[:, None], overlaps, 0.0), axis=0)
    labels = tf.where((labels == BACKGROUND) & (crowd_iou >= matching_cfg.negative_iou), IGNORE, labels)

    top_k = matching_cfg.force_match_top_k
    if matching_cfg.force_match and top_k > 1:
        # Ranks 2..k: lower priority than the IoU rule and the rank-1 claim below.
        k = tf.minimum(top_k, n_anchors)
        top_iou, top_idx = tf.math.top_k(reg_iou, k)                     # [M, k]
        rank = tf.range(k)[None, :]
        extra = regular[:, None] & (top_iou > 0.0) & (rank >= 1)
        owner = tf.tensor_scatter_nd_max(tf.fill(tf.shape(match), -1),
                                         tf.boolean_mask(top_idx, extra)[:, None],
                                         tf.boolean_mask(tf.broadcast_to(box_ids[:, None], tf.shape(top_idx)),
                                                         extra))
        claimed = (owner >= 0) & (labels != 0)
        match = tf.where(claimed, owner, match)
        labels = tf.where(claimed, 0, labels)

    if matching_cfg.force_match:
        best_anchor = tf.argmax(reg_iou, axis=1, output_type=tf.int32)  # [M]
        claim = regular & (tf.reduce_max(reg_iou, axis=1) > 0.0)
        # Scatter in box order: for duplicate anchors the later update wins on CPU, but
        # that is unspecified in general, so resolve duplicates explicitly by max box index.
        owner = tf.tensor_scatter_nd_max(tf.fill(tf.shape(match), -1),
                                         tf.boolean_mask(best_anchor, claim)[:, None],
                                         tf.boolean_mask(box_ids, claim))
        forced = owner >= 0
        match = tf.where(forced, owner, match)
        labels = tf.where(forced, 0, labels)

    positive = labels == 0
    cls = tf.where(positive, tf.gather(gt_classes, match), labels)
    # Box codes only for the positives (a few dozen of N), scattered into zeros.
    pos = tf.where(positive)                                             # [P, 1] int64
    codes = box_coder.encode(tf.gather(gt_boxes, tf.gather_nd(match, pos)),
                             tf.gather_nd(anchors.boxes, pos), scale_factors)
    box = tf.scatter_nd(pos, codes, tf.stack([tf.cast(n_anchors, tf.int64), 4]))
    depth_m = tf.gather(gt_depth, match)
    has_depth = positive & (depth_m > 0.0)
    depth = tf.where(has_depth, tf.math.log(tf.maximum(depth_m, 1e-6)), 0.0)
    return {
        "cls": tf.cast(cls, tf.int32),
        "box": box,
        "depth": depth,
        "depth_mask": tf.cast(has_depth, tf.float32),
    }


def _atss(anchors, overlaps, gt_boxes, regular, level_sizes, top_k: int):
    """Adaptive training sample selection (Zhang et al., CVPR 2020): ``(labels [N], match [N])``.

    Per box, the ``top_k`` anchors of each level with the nearest centres are candidates;
    the box's IoU threshold is the mean plus the standard deviation of its candidates'
    IoUs; a candidate at or above it whose centre lies inside the box is positive (label
    0, ``match`` = the box; the highest IoU wins between boxes).  Every other anchor is
    background: there is no ignore band.  A small box gets positives even where no anchor
    reaches a fixed IoU threshold; a large one gets the anchors that fit it best.
    """
    a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2.0                       # [N, 2]
    g_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0                     # [M, 2]
    dist = tf.norm(a_ctr[:, None, :] - g_ctr[None, :, :], axis=-1)        # [N, M]
    m = tf.shape(gt_boxes)[0]
    parts, start = [], 0
    for size in level_sizes:
        k = min(top_k, size)
        _, idx = tf.math.top_k(-tf.transpose(dist[start:start + size]), k)   # [M, k]
        rows = tf.broadcast_to(tf.range(m)[:, None], tf.shape(idx))
        mask = tf.scatter_nd(tf.stack([rows, idx], -1), tf.ones([m, k], tf.bool), [m, size])
        parts.append(tf.transpose(mask))
        start += size
    candidate = tf.concat(parts, 0) & regular[None, :]                    # [N, M]
    cand_f = tf.cast(candidate, tf.float32)
    n = tf.maximum(tf.reduce_sum(cand_f, 0), 1.0)
    mean = tf.reduce_sum(overlaps * cand_f, 0) / n
    std = tf.sqrt(tf.reduce_sum(tf.square(overlaps - mean) * cand_f, 0) / n)
    inside = ((a_ctr[:, None, 0] > gt_boxes[None, :, 0]) & (a_ctr[:, None, 0] < gt_boxes[None, :, 2])
              & (a_ctr[:, None, 1] > gt_boxes[None, :, 1]) & (a_ctr[:, None, 1] < gt_boxes[None, :, 3]))
    positive = candidate & inside & (overlaps >= (mean + std)[None, :]) & (overlaps > 0.0)
    pos_iou = tf.where(positive, overlaps, -1.0)
    match = tf.argmax(pos_iou, axis=1, output_type=tf.int32)
    labels = tf.where(tf.reduce_max(pos_iou, axis=1) > 0.0, 0, BACKGROUND)
    return labels, match
