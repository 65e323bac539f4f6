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
   box.  Padding rows: boxes 0, scores 0, classes -1, depth 0.

``tf.image.non_max_suppression_padded`` is used rather than
``combined_non_max_suppression`` because it returns indices (depth must follow the
boxes) and converts to TFLite (see docs/deploy.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detector.targets import box_coder

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
        ``pre_nms_top_k``, ``nms_iou``, ``max_detections``, ``class_agnostic_nms``).
      scale_factors: box-code scale factors ``(sy, sx, sh, sw)``.
      image_size: square input side for clipping; default inferred from the anchors.

    Returns:
      dict with ``D = eval_cfg.max_detections``: ``boxes`` float32 ``[B, D, 4]`` yxyx
      network-input pixels (clipped to ``[0, S]``), ``scores`` float32 ``[B, D]``
      (descending), ``classes`` int32 ``[B, D]`` (-1 pad), ``depth`` float32
      ``[B, D]`` metres (0 pad), ``num_detections`` int32 ``[B]``.
    """
    size = float(image_size) if image_size is not None else infer_image_size(anchors)
    logits = tf.convert_to_tensor(outputs["cls_logits"], tf.float32)
    codes = tf.convert_to_tensor(outputs["box"], tf.float32)
    log_depth = tf.convert_to_tensor(outputs["depth"], tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    num_anchors, num_classes = logits.shape[1], logits.shape[2]
    max_det = int(eval_cfg.max_detections)

    # 1. top-k over anchors x classes
    flat_scores = tf.reshape(tf.sigmoid(logits), [-1, num_anchors * num_classes])
    k = min(int(eval_cfg.pre_nms_top_k), num_anchors * num_classes)
    scores, flat_idx = tf.math.top_k(flat_scores, k=k, sorted=True)             # [B, K]
    anchor_idx = flat_idx // num_classes
    classes = flat_idx % num_classes

    # 2. decode + clip
    cand_codes = tf.gather(codes, anchor_idx, batch_dims=1)                      # [B, K, 4]
    cand_boxes = box_coder.decode(cand_codes, tf.gather(anchors, anchor_idx), scale_factors)
    cand_boxes = tf.clip_by_value(cand_boxes, 0.0, size)
    if log_depth.shape.rank == 3:   # [B, N, C], one per class: flat_idx = anchor * C + class
        cand_log_depth = tf.gather(tf.reshape(log_depth, [-1, num_anchors * num_classes]), flat_idx, batch_dims=1)
    else:
        cand_log_depth = tf.gather(log_depth, anchor_idx, batch_dims=1)
    cand_depth = tf.exp(tf.clip_by_value(cand_log_depth, *_LOG_DEPTH_RANGE))

    # 3. NMS (per class through coordinate offsets)
    nms_boxes = cand_boxes
    if not eval_cfg.class_agnostic_nms:
        nms_boxes = cand_boxes + tf.cast(classes, tf.float32)[..., None] * (size + 1.0)
    max_out = min(max_det, k)
    keep, num = tf.image.non_max_suppression_padded(
        nms_boxes, scores, max_output_size=max_out, iou_threshold=float(eval_cfg.nms_iou),
        score_threshold=float(eval_cfg.score_threshold), pad_to_max_output_size=True, sorted_input=True)
    valid = tf.range(max_out)[None, :] < num[:, None]                            # [B, max_out]

    # 4. gather + pad
    def take(values, pad):
        got = tf.gather(values, keep, batch_dims=1)
        mask = valid if got.shape.rank == 2 else valid[..., None]
        got = tf.where(mask, got, tf.cast(pad, got.dtype))
        if max_out < max_det:
            extra = [[0, 0], [0, max_det - max_out]] + [[0, 0]] * (got.shape.rank - 2)
            got = tf.pad(got, extra, constant_values=tf.cast(pad, got.dtype))
        return got

    return {
        "boxes": take(cand_boxes, 0.0),
        "scores": take(scores, 0.0),
        "classes": take(tf.cast(classes, tf.int32), -1),
        "depth": take(cand_depth, 0.0),
        "num_detections": tf.cast(num, tf.int32),
    }
