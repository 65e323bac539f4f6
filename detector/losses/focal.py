"""Sigmoid focal loss (Lin et al. 2017) on logits, with background and ignore labels.

For one anchor, class ``c`` and logit ``x`` with binary target ``y`` (1 if the
anchor's class id equals ``c``)::

    ce      = softplus(x) - y*x                        (= -log p_t, stable)
    (1-p_t) = sigmoid(z),  z = x if y == 0 else -x
    FL      = alpha_t * (1-p_t)**gamma * ce,   alpha_t = alpha if y else 1-alpha

``(1-p_t)**gamma`` is computed as ``exp(-gamma * softplus(-z))`` (a log-sigmoid), so
there is never a log of a clipped probability, values and gradients stay finite
for logits of any size, and ``gamma < 1`` has no infinite derivative at
``p_t = 1`` (the NaN Model Garden warns about).

Targets are class ids ``[B, N]`` (int, or float holding integers as Keras casts
``y_true``): ``0..C-1`` positive, ``-1`` background (all-zero one-hot row),
``-2`` ignore (the anchor contributes exactly 0).  There is no background slot in
the ``C`` logits.

Quality focal loss (``loss.cls_loss: quality_focal``; Li et al. 2020, "Generalized Focal
Loss", arXiv:2006.04388): the one-hot target is replaced by a soft one, ``y = q`` (the
IoU of the anchor's predicted and target boxes, a constant in ``[0, 1]``) for the
anchor's target class on a positive anchor and ``y = 0`` otherwise, and::

    QFL = BCE(x, y) * |y - sigmoid(x)|**beta,    BCE(x, y) = softplus(x) - y*x

with no ``alpha``.  ``|y - sigmoid(x)|`` is computed as ``|y*sigmoid(-x) - (1-y)*sigmoid(x)|``
(the same number, since ``sigmoid(x) + sigmoid(-x) = 1``), which is exact for ``y = 0`` and
``y = 1`` where ``1 - sigmoid(x)`` would cancel; with ``y = 1`` QFL is the focal loss
without alpha (``alpha_t = 1``).  The sigmoid score then estimates the IoU of the box the
anchor predicts (a joint "classification-IoU" score) rather than a class probability.
Ignored anchors contribute exactly 0, as above.
"""

from __future__ import annotations

import keras
import tensorflow as tf

IGNORE = -2


def focal_loss_per_anchor(cls_targets, logits, alpha: float = 0.25, gamma: float = 2.0) -> tf.Tensor:
    """Focal loss summed over classes for every anchor.

    Args:
      cls_targets: ``[B, N]`` class ids (``-1`` background, ``-2`` ignore).
      logits: float ``[B, N, C]`` classification logits.
      alpha: weight of the positive targets (negatives get ``1 - alpha``).
      gamma: focusing exponent ``>= 0``.

    Returns:
      ``[B, N]`` in the logits' float dtype (float32 for other inputs); 0 for
      ignored anchors.  Not normalised.
    """
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        logits = tf.cast(logits, tf.float32)
    ids = tf.cast(tf.round(tf.cast(cls_targets, tf.float32)), tf.int32)
    num_classes = logits.shape[-1]
    y = tf.one_hot(ids, num_classes, dtype=logits.dtype)  # -1 / -2 -> all-zero rows
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
    z = logits * (1.0 - 2.0 * y)  # logit of (1 - p_t)
    modulator = tf.exp(-gamma * tf.math.softplus(-z))
    alpha_t = y * alpha + (1.0 - y) * (1.0 - alpha)
    per_anchor = tf.reduce_sum(alpha_t * modulator * ce, axis=-1)
    return tf.where(ids == IGNORE, tf.zeros_like(per_anchor), per_anchor)


def quality_focal_loss_per_anchor(cls_targets, logits, quality, beta: float = 2.0) -> tf.Tensor:
    """Quality focal loss summed over classes for every anchor (formula in the module docstring).

    Args:
      cls_targets: ``[B, N]`` class ids (``-1`` background, ``-2`` ignore).
      logits: float ``[B, N, C]`` classification logits.
      quality: ``[B, N]`` soft target of each positive anchor's class (the IoU of its
        predicted and target boxes); clipped to ``[0, 1]``, read only where ``cls >= 0``
        (anything, NaN included, elsewhere) and never differentiated (``stop_gradient``).
      beta: modulating exponent ``>= 0`` (2 in the paper).

    Returns:
      ``[B, N]`` in the logits' float dtype (float32 for other inputs); 0 for ignored
      anchors.  Not normalised.
    """
    if beta < 0:
        raise ValueError(f"quality_focal_loss_per_anchor: beta must be >= 0, got {beta}")
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        logits = tf.cast(logits, tf.float32)
    ids = tf.cast(tf.round(tf.cast(cls_targets, tf.float32)), tf.int32)
    num_classes = logits.shape[-1]
    quality = tf.clip_by_value(tf.stop_gradient(tf.cast(quality, logits.dtype)), 0.0, 1.0)
    quality = tf.where(ids >= 0, quality, tf.zeros_like(quality))  # also drops NaN off positives
    y = tf.one_hot(ids, num_classes, dtype=logits.dtype) * quality[..., None]  # -1 / -2 -> all-zero rows
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
    dist = tf.abs(y * tf.sigmoid(-logits) - (1.0 - y) * tf.sigmoid(logits))  # |y - sigmoid(x)|
    if beta == 0:
        modulator = tf.ones_like(dist)
    else:
        # |d|**beta with a zero value AND zero gradient at d = 0 (pow's gradient there is
        # 0 * inf for beta < 1); the gradient of the where never reaches pow(0, .).
        nonzero = dist > 0
        safe = tf.where(nonzero, dist, tf.ones_like(dist))
        modulator = tf.where(nonzero, tf.pow(safe, beta), tf.zeros_like(dist))
    per_anchor = tf.reduce_sum(modulator * ce, axis=-1)
    return tf.where(ids == IGNORE, tf.zeros_like(per_anchor), per_anchor)


@keras.saving.register_keras_serializable(package="detector")
class FocalLoss(keras.losses.Loss):
    """Sigmoid focal loss on logits (formula and label convention in the module docstring).

    ``loss(y_true [B, N] class ids, y_pred [B, N, C] logits)`` with the default
    ``reduction="sum"`` returns the **sum** over anchors and classes; divide it by
    ``max(num_positives, 1)`` (global positive count) as :class:`DetectionLoss` does.
    ``call`` returns the per-anchor values ``[B, N]``.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str | None = "sum",
                 name: str = "focal_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"FocalLoss: alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0, got {gamma}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        return focal_loss_per_anchor(y_true, y_pred, self.alpha, self.gamma)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}
