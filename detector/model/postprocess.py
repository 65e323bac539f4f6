"""Raw head outputs -> final detections (decode, top-k, threshold, NMS), static shapes.

Steps per image (batched, no Python loops over data):

1. ``scores = sigmoid(cls_logits)`` ``[B, N, C]``; flatten anchors x classes and
   keep the ``eval.pre_nms_top_k`` best pairs (an anchor may appear with several
   classes).
2. Decode those anchors' box codes (:func:`detector.targets.box_coder.decode`), clip to the
   image ``[0, S]``.
3. Greedy NMS (``eval.nms_iou``; a box is suppressed when IoU > threshold with a
   kept higher-scoring box) with ``eval.score_threshold``.  Per-class by default:
   each class's boxes are shifted by ``class_id * (S + 1)`` so boxes of different
   classes never overlap, and one batched NMS runs over all pairs (the "batched
   offsets" trick; equivalent to per-class NMS followed by a merge by score).
   ``eval.class_agnostic_nms`` skips the shift.
4. Keep the best ``D = eval.max_detections``; the selected indices gather box,
   score, class and the anchor's depth (``exp`` of the predicted log-depth; of the
   detection's class when the model predicts one per class), so depth travels with its
   box.  With ``eval.box_voting_iou`` each kept box is then replaced by the
   score-weighted mean of the candidates of its class that overlap it at least that much
   (:func:`select_detections`).  Padding rows: boxes 0, scores 0, classes -1, depth 0.

Steps 1-2 are :func:`top_candidates`, steps 3-4 :func:`select_detections`; test-time
augmentation over several input scales (:mod:`detector.model.tta`) merges the candidates
of its passes (:func:`merge_candidates`) between the two.

``tf.image.non_max_suppression_padded`` is used rather than
``combined_non_max_suppression`` because it returns indices (depth must follow the
boxes) and converts to TFLite (see docs/deploy.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detector.targets import box_coder
from detector.targets.assign import iou

# Predicted log-depth is clamped before exp so that an untrained head cannot emit inf.
_LOG_DEPTH_RANGE = (-10.0, 10.0)


def infer_image_size(anchors: np.ndarray) -> float:
    """Input side ``S`` from anchors centred at ``stride/2 + k*stride`` (detector.targets.anchors):
    the first and last centres of a level sit ``stride/2`` inside the image, so
    ``S = min centre + max centre``, rounded to whole pixels (float32 anchors).
    ``anchors`` must be constant (numpy or an eager / constant tensor)."""
    a = tf.get_static_value(anchors) if tf.is_tensor(anchors) else anchors
    if a is None:
        raise ValueError("decode_detections: anchors are not constant; pass image_size explicitly")
    a = np.asarray(a, np.float64)
    centres = 0.5 * (a[:, 0] + a[:, 2])
    return float(np.round(centres.min() + centres.max()))


def decode_detections(outputs, anchors, eval_cfg, scale_factors, image_size=None) -> dict[str, tf.Tensor]:
    """Detections from raw model outputs.

    Args:
      outputs: dict ``cls_logits`` ``[B, N, C]``, ``box`` ``[B, N, 4]`` codes
        ``[ty, tx, th, tw]``, ``depth`` ``[B, N]`` log-metres (the model output), or
        ``[B, N, C]`` one per class (the detection's class is read).
      anchors: float32 ``[N, 4]`` yxyx network-input pixels.
      eval_cfg: :class:`~detector.config.EvalConfig` (``score_threshold``,
        ``pre_nms_top_k``, ``nms_iou``, ``max_detections``, ``class_agnostic_nms``,
        ``box_voting_iou``).
      scale_factors: box-code scale factors ``(sy, sx, sh, sw)``.
      image_size: square input side for clipping; default inferred from the anchors.

    Returns:
      dict with ``D = eval_cfg.max_detections``: ``boxes`` float32 ``[B, D, 4]`` yxyx
      network-input pixels (clipped to ``[0, S]``), ``scores`` float32 ``[B, D]``
      (descending), ``classes`` int32 ``[B, D]`` (-1 pad), ``depth`` float32
      ``[B, D]`` metres (0 pad), ``num_detections`` int32 ``[B]``.
    """
    size = float(image_size) if image_size is not None else infer_image_size(anchors)
    return select_detections(top_candidates(outputs, anchors, eval_cfg, scale_factors, size), eval_cfg, size)


def top_candidates(outputs, anchors, eval_cfg, scale_factors, image_size: float) -> dict[str, tf.Tensor]:
    """Steps 1-2: the ``K = min(eval.pre_nms_top_k, N * C)`` best (anchor, class) pairs, decoded.

    Returns ``boxes`` float32 ``[B, K, 4]`` yxyx clipped to ``[0, image_size]``, ``scores``
    ``[B, K]`` (descending), ``classes`` int32 ``[B, K]``, ``depth`` ``[B, K]`` metres.
    """
    logits = tf.convert_to_tensor(outputs["cls_logits"], tf.float32)
    codes = tf.convert_to_tensor(outputs["box"], tf.float32)
    log_depth = tf.convert_to_tensor(outputs["depth"], tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    num_anchors, num_classes = logits.shape[1], logits.shape[2]

    # 1. top-k over anchors x classes
    flat_scores = tf.reshape(tf.sigmoid(logits), [-1, num_anchors * num_classes])
    k = min(int(eval_cfg.pre_nms_top_k), num_anchors * num_classes)
    scores, flat_idx = tf.math.top_k(flat_scores, k=k, sorted=True)             # [B, K]
    anchor_idx = flat_idx // num_classes
    classes = flat_idx % num_classes

    # 2. decode + clip
    cand_codes = tf.gather(codes, anchor_idx, batch_dims=1)                      # [B, K, 4]
    cand_boxes = box_coder.decode(cand_codes, tf.gather(anchors, anchor_idx), scale_factors)
    cand_boxes = tf.clip_by_value(cand_boxes, 0.0, float(image_size))
    if log_depth.shape.rank == 3:   # [B, N, C], one per class: flat_idx = anchor * C + class
        cand_log_depth = tf.gather(tf.reshape(log_depth, [-1, num_anchors * num_classes]), flat_idx, batch_dims=1)
    else:
        cand_log_depth = tf.gather(log_depth, anchor_idx, batch_dims=1)
    return {"boxes": cand_boxes, "scores": scores, "classes": tf.cast(classes, tf.int32),
            "depth": tf.exp(tf.clip_by_value(cand_log_depth, *_LOG_DEPTH_RANGE))}


def merge_candidates(candidates: list[dict]) -> dict[str, tf.Tensor]:
    """Candidates of several passes (boxes in the same pixel frame) as one set, by descending score."""
    if len(candidates) == 1:
        return candidates[0]
    merged = {k: tf.concat([c[k] for c in candidates], axis=1) for k in candidates[0]}
    _, order = tf.math.top_k(merged["scores"], k=merged["scores"].shape[1], sorted=True)
    return {k: tf.gather(v, order, batch_dims=1) for k, v in merged.items()}


def select_detections(cand: dict, eval_cfg, image_size: float) -> dict[str, tf.Tensor]:
    """Steps 3-4 on candidates sorted by descending score (:func:`top_candidates`,
    :func:`merge_candidates`): NMS, optional box voting, the best ``D``, padding.

    Box voting (``eval.box_voting_iou``, as Detectron's ``BBOX_VOTE``): each kept box
    becomes the score-weighted mean of the candidates of its class (itself included)
    whose IoU with it is at least the threshold and whose score passes
    ``eval.score_threshold``; scores, classes and depth stay those of the kept box.
    """
    size = float(image_size)
    cand_boxes, scores, classes = cand["boxes"], cand["scores"], cand["classes"]
    max_det = int(eval_cfg.max_detections)
    k = int(scores.shape[1])

    # 3. NMS (per class through coordinate offsets)
    nms_boxes = cand_boxes
    if not eval_cfg.class_agnostic_nms:
        nms_boxes = cand_boxes + tf.cast(classes, tf.float32)[..., None] * (size + 1.0)
    max_out = min(max_det, k)
    keep, num = tf.image.non_max_suppression_padded(
        nms_boxes, scores, max_output_size=max_out, iou_threshold=float(eval_cfg.nms_iou),
        score_threshold=float(eval_cfg.score_threshold), pad_to_max_output_size=True, sorted_input=True)
    valid = tf.range(max_out)[None, :] < num[:, None]                            # [B, max_out]

    # 4. gather (+ box voting) + pad
    def padded(got, pad):
        mask = valid if got.shape.rank == 2 else valid[..., None]
        got = tf.where(mask, got, tf.cast(pad, got.dtype))
        if max_out < max_det:
            extra = [[0, 0], [0, max_det - max_out]] + [[0, 0]] * (got.shape.rank - 2)
            got = tf.pad(got, extra, constant_values=tf.cast(pad, got.dtype))
        return got

    def take(values, pad):
        return padded(tf.gather(values, keep, batch_dims=1), pad)

    boxes = tf.gather(cand_boxes, keep, batch_dims=1)                            # [B, max_out, 4]
    if eval_cfg.box_voting_iou is not None:
        kept_classes = tf.gather(classes, keep, batch_dims=1)
        votes = ((iou(boxes, cand_boxes) >= float(eval_cfg.box_voting_iou))
                 & (kept_classes[:, :, None] == classes[:, None, :])
                 & (scores[:, None, :] >= float(eval_cfg.score_threshold)))
        weights = tf.where(votes, scores[:, None, :], 0.0)                       # [B, max_out, K]
        total = tf.reduce_sum(weights, axis=-1, keepdims=True)
        voted = tf.einsum("bdk,bkc->bdc", weights, cand_boxes) / tf.maximum(total, 1e-12)
        boxes = tf.where(total > 0.0, voted, boxes)
    return {
        "boxes": padded(boxes, 0.0),
        "scores": take(scores, 0.0),
        "classes": take(classes, -1),
        "depth": take(cand["depth"], 0.0),
        "num_detections": tf.cast(num, tf.int32),
    }
