"""Box coder: boxes <-> regression codes relative to anchors (Faster R-CNN convention).

Boxes and anchors are ``[ymin, xmin, ymax, xmax]``.  Codes are ordered
``[ty, tx, th, tw]`` (the order the TFLite detection post-process op expects)::

    ty = (yc - yc_a) / h_a * sy        th = log(h / h_a) * sh
    tx = (xc - xc_a) / w_a * sx        tw = log(w / w_a) * sw

with ``scale_factors = (sy, sx, sh, sw)`` (e.g. ``(10, 10, 5, 5)``; Keras'
``variance=[0.1, 0.1, 0.2, 0.2]`` is the same thing).  A tiny epsilon keeps the
logarithm finite for zero-size boxes (Model Garden adds 1e-8 likewise).
"""

from __future__ import annotations

import math

import tensorflow as tf

EPSILON = 1e-8
LOG_SIZE_CLIP = math.log(1000.0 / 16.0)  # th / sh and tw / sw are clipped here before exp (decoding)


def _centre_size(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    h = ymax - ymin
    w = xmax - xmin
    return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def encode(boxes, anchors, scale_factors=(1.0, 1.0, 1.0, 1.0)) -> tf.Tensor:
    """Encode ``boxes`` against ``anchors``.

    Args:
      boxes: float32 ``[..., N, 4]`` yxyx pixels.
      anchors: float32 ``[N, 4]`` (or broadcastable to ``boxes``) yxyx pixels.
      scale_factors: ``(sy, sx, sh, sw)`` multipliers.

    Returns:
      float32 ``[..., N, 4]`` codes ``[ty, tx, th, tw]``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    yc, xc, h, w = _centre_size(boxes)
    yca, xca, ha, wa = _centre_size(anchors)
    ha, wa = ha + EPSILON, wa + EPSILON
    sy, sx, sh, sw = (float(s) for s in scale_factors)
    ty = (yc - yca) / ha * sy
    tx = (xc - xca) / wa * sx
    th = tf.math.log((h + EPSILON) / ha) * sh
    tw = tf.math.log((w + EPSILON) / wa) * sw
    return tf.stack([ty, tx, th, tw], axis=-1)


def decode(codes, anchors, scale_factors=(1.0, 1.0, 1.0, 1.0)) -> tf.Tensor:
    """Inverse of :func:`encode`: codes ``[..., N, 4]`` -> boxes ``[..., N, 4]`` yxyx pixels.

    ``th``/``tw`` are clipped at ``log(1000 / 16)`` before ``exp`` (as torchvision and
    detectron2 do) so a wild prediction cannot overflow.
    """
    codes = tf.convert_to_tensor(codes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    yca, xca, ha, wa = _centre_size(anchors)
    ha, wa = ha + EPSILON, wa + EPSILON
    sy, sx, sh, sw = (float(s) for s in scale_factors)
    ty, tx, th, tw = tf.unstack(codes, axis=-1)
    h = tf.exp(tf.minimum(th / sh, LOG_SIZE_CLIP)) * ha
    w = tf.exp(tf.minimum(tw / sw, LOG_SIZE_CLIP)) * wa
    yc = ty / sy * ha + yca
    xc = tx / sx * wa + xca
    return tf.stack([yc - 0.5 * h, xc - 0.5 * w, yc + 0.5 * h, xc + 0.5 * w], axis=-1)
