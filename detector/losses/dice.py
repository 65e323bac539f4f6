"""Soft Dice loss for binary, multi-label and multi-class masks.

For one class ``c`` with probabilities ``p`` and targets ``y`` (optionally weighted
per sample by ``w``), summed over the reduced axes::

    I = sum(w * p * y),   S = sum(w * p) + sum(w * y)
    dice_c = (2 I + smooth) / (S + smooth)          (1 when S + smooth == 0)
    loss   = 1 - mean_c(dice_c)

Shapes (``channel_axis=-1``, the default): ``y_true`` and ``y_pred`` are
``[B, ..., C]``; the last axis holds classes (``C == 1`` is plain binary Dice).
``y_true`` may also be ``[B, ...]`` when ``C == 1``.  With ``channel_axis=None``
there is no class axis: ``[B, ...]`` is one binary mask per sample.
``y_true`` is one-hot (multi-class), multi-hot (multi-label) or soft targets in
``[0, 1]``.

``reduction_mode``:

* ``"batch"`` (default): sums run over the batch and spatial axes, giving one Dice
  per class for the whole batch; the loss is a scalar.  Under a
  ``tf.distribute`` strategy the three sums are all-reduced across replicas and the
  loss is divided by the replica count, so value *and* gradients equal the
  single-device loss on the global batch (the optimizer SUM-all-reduces
  gradients; docs/conventions.md §9).  ``sample_weight`` ``[B]`` weights each
  sample's contribution to the sums; the Keras ``reduction`` argument is unused.
* ``"per_sample"``: Dice per sample and class, loss ``[B]`` = 1 - mean over
  classes, then reduced by Keras as usual (``reduction``, ``sample_weight [B]``).

Stability: an empty target with an empty prediction gives loss 0 (``smooth`` > 0
handles it naturally; with ``smooth == 0`` exact zero sums are mapped to Dice 1
through a NaN-free ``where``).  Note that sigmoid outputs are never exactly zero,
so with ``smooth == 0`` an empty target always gives loss ~1; use ``smooth > 0``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

_MODES = ("batch", "per_sample")
_ACTIVATIONS = ("sigmoid", "softmax")


@keras.saving.register_keras_serializable(package="detector")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss (see the module docstring for formula, shapes and modes).

    Args:
      smooth: additive smoothing ``>= 0`` in numerator and denominator.
      from_logits: ``y_pred`` are logits (default) and go through ``activation``;
        otherwise they are probabilities in ``[0, 1]``.
      reduction_mode: ``"batch"`` (one Dice per class over the whole batch) or
        ``"per_sample"`` (one Dice per sample and class).
      channel_axis: ``-1`` (last axis holds classes) or ``None`` (no class axis).
      activation: used only with ``from_logits``: ``"sigmoid"`` (binary /
        multi-label, default) or ``"softmax"`` over the class axis (mutually
        exclusive classes; needs ``channel_axis=-1`` and ``C > 1``).
      reduction: Keras reduction, applied in ``"per_sample"`` mode only.
      name, dtype: as for ``keras.losses.Loss``; ``dtype`` is the compute dtype.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        from_logits: bool = True,
        reduction_mode: str = "batch",
        channel_axis: int | None = -1,
        activation: str = "sigmoid",
        reduction: str | None = "sum_over_batch_size",
        name: str = "dice_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if smooth < 0:
            raise ValueError(f"DiceLoss: smooth must be >= 0, got {smooth}")
        if reduction_mode not in _MODES:
            raise ValueError(f"DiceLoss: reduction_mode must be one of {_MODES}, got {reduction_mode!r}")
        if channel_axis not in (-1, None):
            raise ValueError(f"DiceLoss: channel_axis must be -1 or None, got {channel_axis!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"DiceLoss: activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if activation == "softmax" and channel_axis is None:
            raise ValueError("DiceLoss: activation='softmax' needs channel_axis=-1")
        self.smooth = float(smooth)
        self.from_logits = bool(from_logits)
        self.reduction_mode = reduction_mode
        self.channel_axis = channel_axis
        self.activation = activation

    # ------------------------------------------------------------------ core

    def _probs_and_targets(self, y_true, y_pred):
        """Returns ``(p, y)`` both ``[B, ..., C]`` in the compute dtype."""
        y_pred = tf.cast(y_pred, self.dtype)  # also accepts float16 (mixed precision)
        y_true = tf.cast(y_true, self.dtype)
        if self.channel_axis is None:
            y_pred, y_true = y_pred[..., None], y_true[..., None]
        elif y_true.shape.rank == y_pred.shape.rank - 1 and y_pred.shape[-1] == 1:
            y_true = y_true[..., None]
        if self.from_logits:
            if self.activation == "softmax":
                if y_pred.shape[-1] == 1:
                    raise ValueError("DiceLoss: softmax over a single channel is constant; use sigmoid")
                y_pred = tf.nn.softmax(y_pred, axis=-1)
            else:
                y_pred = tf.sigmoid(y_pred)
        y_true = tf.broadcast_to(y_true, tf.shape(y_pred))
        return y_pred, y_true

    def _dice(self, intersection, total):
        """Dice from sums; exact-zero denominators give Dice 1 with finite gradients."""
        denom = total + self.smooth
        nonzero = denom > 0
        safe = tf.where(nonzero, denom, tf.ones_like(denom))
        return tf.where(nonzero, (2.0 * intersection + self.smooth) / safe, tf.ones_like(denom))

    def call(self, y_true, y_pred):
        """Per-sample loss ``[B]`` (the ``"per_sample"`` path)."""
        p, y = self._probs_and_targets(y_true, y_pred)
        axes = list(range(1, p.shape.rank - 1))  # spatial axes; may be empty
        intersection = tf.reduce_sum(p * y, axis=axes)
        total = tf.reduce_sum(p, axis=axes) + tf.reduce_sum(y, axis=axes)
        return 1.0 - tf.reduce_mean(self._dice(intersection, total), axis=-1)

    def _batch_loss(self, y_true, y_pred, sample_weight):
        """Scalar batch-Dice loss, replica-aware (see module docstring)."""
        p, y = self._probs_and_targets(y_true, y_pred)
        if sample_weight is not None:
            w = tf.reshape(tf.cast(sample_weight, self.dtype), [-1])
            w = tf.reshape(w, [-1] + [1] * (p.shape.rank - 1))
            p_w, y_w = p * w, y * w
        else:
            p_w, y_w = p, y
        axes = list(range(p.shape.rank - 1))
        sums = [tf.reduce_sum(p_w * y, axis=axes), tf.reduce_sum(p_w, axis=axes), tf.reduce_sum(y_w, axis=axes)]
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if num_replicas > 1 and not tf.distribute.in_cross_replica_context():
            # Global sums; all_reduce's gradient is itself an all-reduce, which
            # together with the 1/N below reproduces single-device gradients.
            sums = tf.distribute.get_replica_context().all_reduce("sum", sums)
        intersection, p_sum, y_sum = sums
        loss = 1.0 - tf.reduce_mean(self._dice(intersection, p_sum + y_sum))
        return loss / tf.cast(num_replicas, loss.dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.reduction_mode == "per_sample":
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        with tf.name_scope(self.name):
            return self._batch_loss(y_true, y_pred, sample_weight)

    # --------------------------------------------------------- serialization

    def get_config(self):
        config = super().get_config()
        config.update(
            smooth=self.smooth,
            from_logits=self.from_logits,
            reduction_mode=self.reduction_mode,
            channel_axis=self.channel_axis,
            activation=self.activation,
            dtype=self.dtype,
        )
        return config
