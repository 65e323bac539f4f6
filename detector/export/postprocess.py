"""Post-processing inside the exported model: decode + top-k + NMS + gather, batch 1.

The same steps as the project's Python post-processing
(:func:`detector.model.postprocess.decode_detections`), written for one image with
ops that the TFLite converter maps to builtins:

``MAXIMUM`` (logits below the score threshold set to one floor value, which makes the
top-k cheap), ``TOPK_V2`` (pre-NMS top-k over anchors x classes, on the logits), ``MUL`` / ``EXP`` /
``ADD`` / ``DIV`` (the sigmoid of the candidates, not ``LOGISTIC``: see :func:`postprocess_single`),
``FLOOR_DIV`` / ``SUB`` / ``MUL`` (anchor and class of each candidate), ``GATHER``
(codes, anchors, depth), the box-coder arithmetic with ``EXP``,
``NON_MAX_SUPPRESSION_V4`` (single-class NMS, per-class through the class-offset
trick) and ``GATHER`` again for the kept rows.  No ``CombinedNonMaxSuppression``
(not convertible) and no ``TFLite_Detection_PostProcess`` (it cannot carry depth).

Outputs (``D = max_detections``), each a separate tensor so that their very
different value ranges never share one quantization scale::

    boxes          float32 [1, D, 4]  [ymin, xmin, ymax, xmax] network-input pixels, clipped to [0, S]
    classes        int32   [1, D]     class index 0..C-1 (data.classes order), -1 on padding rows
    scores         float32 [1, D]     sigmoid score, descending, 0 on padding rows
    depth          float32 [1, D]     metres (exp of the predicted log-depth), 0 on padding rows
    num_detections int32   [1]        number of valid leading rows
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from detector.targets import box_coder

_LOG_DEPTH_RANGE = (-10.0, 10.0)   # as detector.model.postprocess: exp cannot overflow

OUTPUT_NAMES = ("boxes", "classes", "scores", "depth", "num_detections")


class AnchorGrid:
    """Anchors looked up from their index instead of a ``[N, 4]`` float table.

    Anchors of :mod:`detector.targets.anchors` form a regular grid: level ``l`` (stride
    ``s_l``, ``W_l`` columns) holds, row-major, ``A`` boxes per location centred at
    ``((row + 0.5) s_l, (col + 0.5) s_l)`` with per-level half extents.  The exported
    graph computes the anchors of the ``K`` pre-NMS candidates from a few tiny tables
    (level starts, widths, strides, ``L x A`` half extents) rather than embedding the
    ``N x 4`` table (64 KB for 4032 anchors, a tenth of a small INT8 model).

    ``AnchorGrid.fit(anchors, image_size, min_level, max_level, A)`` returns None when
    the table is not such a grid (then the table is embedded).
    """

    def __init__(self, starts, widths, strides, halves, per_location: int):
        self.starts = np.asarray(starts, np.int32)          # [L] first anchor index of each level
        self.widths = np.asarray(widths, np.int32)          # [L] locations per row
        self.strides = np.asarray(strides, np.float32)      # [L]
        self.halves = np.asarray(halves, np.float32)        # [L * A, 2] (h/2, w/2)
        self.per_location = int(per_location)

    @classmethod
    def fit(cls, anchors: np.ndarray, image_size: int, min_level: int, max_level: int,
            per_location: int) -> AnchorGrid | None:
        anchors = np.asarray(anchors, np.float32)
        starts, widths, strides, halves, n = [], [], [], [], 0
        for level in range(min_level, max_level + 1):
            stride, width = 2 ** level, image_size // 2 ** level
            starts.append(n)
            widths.append(width)
            strides.append(stride)
            first = anchors[n:n + per_location].astype(np.float64)
            halves.extend(np.stack([first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]], -1) / 2.0)
            n += width * width * per_location
        if n != len(anchors):
            return None
        grid = cls(starts, widths, strides, halves, per_location)
        if not np.allclose(grid.lookup_numpy(np.arange(n)), anchors, atol=1e-3, rtol=0):
            return None
        return grid

    def lookup_numpy(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        level = (idx[:, None] >= self.starts[None, 1:]).sum(-1)
        local = idx - self.starts[level]
        a, loc = local % self.per_location, local // self.per_location
        row, col = loc // self.widths[level], loc % self.widths[level]
        stride = self.strides[level].astype(np.float64)
        half = self.halves[level * self.per_location + a].astype(np.float64)
        yc, xc = (row + 0.5) * stride, (col + 0.5) * stride
        return np.stack([yc - half[:, 0], xc - half[:, 1], yc + half[:, 0], xc + half[:, 1]], -1).astype(np.float32)

    def lookup(self, idx: tf.Tensor) -> tf.Tensor:
        """float32 ``[K, 4]`` yxyx anchors of int32 indices ``[K]`` (graph ops)."""
        level = tf.reduce_sum(tf.cast(idx[:, None] >= tf.constant(self.starts[None, 1:]), tf.int32), axis=-1)
        local = idx - tf.gather(tf.constant(self.starts), level)
        loc = local // self.per_location
        a = local - loc * self.per_location
        width = tf.gather(tf.constant(self.widths), level)
        row = loc // width
        col = loc - row * width
        stride = tf.gather(tf.constant(self.strides), level)
        half = tf.gather(tf.constant(self.halves), level * self.per_location + a)
        yc = (tf.cast(row, tf.float32) + 0.5) * stride
        xc = (tf.cast(col, tf.float32) + 0.5) * stride
        return tf.stack([yc - half[:, 0], xc - half[:, 1], yc + half[:, 0], xc + half[:, 1]], axis=-1)


def postprocess_single(outputs: dict, anchors: np.ndarray, eval_cfg, scale_factors, image_size: int,
                       grid: AnchorGrid | None = None) -> dict:
    """Detections of one image from the raw head outputs.

    Args:
      outputs: ``cls_logits`` float32 ``[1, N, C]`` (no background slot), ``box``
        ``[1, N, 4]`` codes ``[ty, tx, th, tw]``, ``depth`` ``[1, N]`` log-metres (or
        ``[1, N, C]``, one per class: the detection's class is read).
      anchors: float32 ``[N, 4]`` yxyx network-input pixels (embedded as a constant
        unless ``grid`` is given).
      eval_cfg: :class:`~detector.config.EvalConfig` (``score_threshold``,
        ``pre_nms_top_k``, ``nms_iou``, ``max_detections``, ``class_agnostic_nms``).
      scale_factors: box-code scale factors ``(sy, sx, sh, sw)``.
      image_size: the square input side ``S`` (boxes are clipped to ``[0, S]``).
      grid: an :class:`AnchorGrid` reproducing ``anchors`` (computes the candidates'
        anchors instead of gathering them from the table).

    Returns the dict of the module docstring.
    """
    size = float(image_size)
    logits = tf.convert_to_tensor(outputs["cls_logits"], tf.float32)[0]        # [N, C]
    codes = tf.convert_to_tensor(outputs["box"], tf.float32)[0]                # [N, 4]
    log_depth = tf.convert_to_tensor(outputs["depth"], tf.float32)[0]          # [N]
    num_anchors, num_classes = int(logits.shape[0]), int(logits.shape[1])
    max_det = int(eval_cfg.max_detections)

    # top-k on the logits (the sigmoid is monotonic), then the sigmoid of the K candidates
    # written as 1 / (1 + exp(-1 * x)): the converter fuses tf.sigmoid and 1 / (1 + exp(-x))
    # into LOGISTIC, an op with a fixed int8 output range, and the INT8 quantizer then
    # rounds the scores to steps of 1/256 even with the op kept in float.  MUL by -1
    # (not NEG) escapes that fusion; the export checks that no quantized tensor is left.
    flat = tf.reshape(logits, [num_anchors * num_classes])
    threshold = float(eval_cfg.score_threshold)
    if threshold > 0.0:
        # Logits below the score threshold are raised to one floor value (a sigmoid below
        # the threshold, so NMS still drops them): the detections do not change, but
        # TOPK_V2 then rejects almost every entry at once instead of sifting them through
        # its k-element heap (0.44 -> 0.24 ms on the default model's real logits).
        flat = tf.maximum(flat, np.float32(math.log(threshold / (1.0 - threshold)) - 1.0))
    k = min(int(eval_cfg.pre_nms_top_k), num_anchors * num_classes)
    top_logits, flat_idx = tf.math.top_k(flat, k=k, sorted=True)                # [K]
    scores = 1.0 / (1.0 + tf.exp(top_logits * -1.0))
    anchor_idx = flat_idx // num_classes
    classes = flat_idx - anchor_idx * num_classes

    if grid is not None:
        cand_anchors = grid.lookup(anchor_idx)
    else:
        cand_anchors = tf.gather(tf.constant(np.asarray(anchors, np.float32)), anchor_idx)
    boxes = box_coder.decode(tf.gather(codes, anchor_idx), cand_anchors, scale_factors)
    boxes = tf.clip_by_value(boxes, 0.0, size)
    if log_depth.shape.rank == 2:   # [N, C], one per class: flat_idx = anchor * C + class
        cand_log_depth = tf.gather(tf.reshape(log_depth, [num_anchors * num_classes]), flat_idx)
    else:
        cand_log_depth = tf.gather(log_depth, anchor_idx)
    depth = tf.exp(tf.clip_by_value(cand_log_depth, *_LOG_DEPTH_RANGE))

    nms_boxes = boxes
    if not eval_cfg.class_agnostic_nms:
        nms_boxes = boxes + tf.cast(classes, tf.float32)[:, None] * (size + 1.0)
    max_out = min(max_det, k)
    keep, num = tf.raw_ops.NonMaxSuppressionV4(
        boxes=nms_boxes, scores=scores, max_output_size=tf.constant(max_out, tf.int32),
        iou_threshold=tf.constant(float(eval_cfg.nms_iou), tf.float32),
        score_threshold=tf.constant(float(eval_cfg.score_threshold), tf.float32),
        pad_to_max_output_size=True)
    valid = tf.range(max_out) < num                                             # [max_out]

    def take(values, pad):
        got = tf.gather(values, keep)
        mask = valid if got.shape.rank == 1 else valid[:, None]
        got = tf.where(mask, got, tf.zeros_like(got) + tf.cast(pad, got.dtype))
        if max_out < max_det:
            extra = [[0, max_det - max_out]] + [[0, 0]] * (got.shape.rank - 1)
            got = tf.pad(got, extra, constant_values=tf.cast(pad, got.dtype))
        return got[None]

    return {
        "boxes": take(boxes, 0.0),
        "classes": take(tf.cast(classes, tf.int32), -1),
        "scores": take(scores, 0.0),
        "depth": take(depth, 0.0),
        "num_detections": tf.reshape(tf.cast(num, tf.int32), [1]),
    }
