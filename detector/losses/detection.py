"""The detector's training loss: focal (or quality focal) classification + box/depth regression.

Classification (``loss.cls_loss``): ``"focal"`` is the sigmoid focal loss on one-hot
targets; ``"quality_focal"`` is the quality focal loss (Li et al. 2020) whose soft target
on a positive anchor's class is the IoU of the anchor's predicted box with its target box
(:func:`~detector.losses.multitask.positive_iou_from_codes` on ``outputs["box"]`` and
``targets["box"]``, under ``stop_gradient``: the box head gets no gradient from the class
term).  With it the sigmoid score estimates that IoU (inference is unchanged, but the
scores are IoU-calibrated, so ``eval.score_threshold`` cuts at an IoU-like level rather
than a class probability; docs/conventions.md §8).

Normalisation (why it is global): every term is a SUM over the anchors this
replica sees, divided by ``max(num_positives, 1)`` where ``num_positives`` is the
positive-anchor count of the GLOBAL batch (the caller all-reduces it, see
:func:`all_reduce_sum`).  Per-replica losses then add up to the single-device loss,
and since Keras' TF optimizer SUM-all-reduces gradients (docs/conventions.md
§9) the applied gradient equals the single-device gradient exactly, independent
of how the batch is split.  Normalising by a per-replica count instead would make
gradients ~N times larger under N replicas.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from detector.config import LossConfig
from detector.losses.focal import FocalLoss, quality_focal_loss_per_anchor
from detector.losses.multitask import (
    DEFAULT_BOX_SCALE_FACTORS,
    MultiTaskRegressionLoss,
    TaskUncertainty,
    combine_tasks,
    positive_iou_from_codes,
)

CLS_LOSSES = ("focal", "quality_focal")


def _float_dtype(outputs) -> tf.DType:
    """The class logits' float dtype (float32 for non-float logits)."""
    dtype = tf.convert_to_tensor(outputs["cls_logits"]).dtype
    return dtype if dtype.is_floating else tf.float32


def count_positives(targets) -> tf.Tensor:
    """Number of positive anchors (``cls >= 0``) in ``targets["cls"]`` ``[B, N]``; float32 scalar."""
    return tf.reduce_sum(tf.cast(tf.cast(targets["cls"], tf.float32) >= 0.0, tf.float32))


def all_reduce_sum(value) -> tf.Tensor:
    """SUM of ``value`` over replicas inside ``strategy.run``; identity elsewhere."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tf.convert_to_tensor(value)
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _as_loss_config(loss_cfg) -> LossConfig:
    if isinstance(loss_cfg, LossConfig):
        return loss_cfg
    if loss_cfg is None:
        return LossConfig()
    return LossConfig(**dict(loss_cfg))


@keras.saving.register_keras_serializable(package="detector")
class DetectionLoss:
    """``loss_fn(targets, outputs, num_positives) -> {"total", "cls", "box", "depth"}``.

    Args:
      loss_cfg: :class:`~detector.config.LossConfig` (or a dict of its fields).
      task_uncertainty: the :class:`TaskUncertainty` layer holding the learned
        log-variances when ``loss_cfg.weighting == "uncertainty"``.  The detector
        passes its own (``model.task_uncertainty``); if omitted one is created here
        and exposed as ``self.task_uncertainty`` / ``self.trainable_variables``, and
        the caller must train those variables itself.
      box_scale_factors: the box coder's ``(sy, sx, sh, sw)`` (``model.box_scale_factors``;
        the detector passes its own), read only by ``loss_cfg.box_loss == "giou"`` and
        ``loss_cfg.cls_loss == "quality_focal"``, which decode the box codes with them.

    Call args:
      targets: dict ``cls`` int32 ``[B, N]`` (class id, -1 background, -2 ignore),
        ``box`` ``[B, N, 4]``, ``depth`` ``[B, N]`` log-metres, ``depth_mask`` ``[B, N]``.
      outputs: model outputs ``cls_logits`` ``[B, N, C]``, ``box`` ``[B, N, 4]``, ``depth`` ``[B, N]``.
      num_positives: positive count of the global batch (scalar).

    Returns:
      dict of scalars (dtype of the outputs): ``cls``, ``box``, ``depth`` are the normalised,
      un-weighted task losses; ``total`` their weighted combination.
    """

    def __init__(self, loss_cfg=None, task_uncertainty: TaskUncertainty | None = None,
                 box_scale_factors=DEFAULT_BOX_SCALE_FACTORS):
        self.cfg = _as_loss_config(loss_cfg)
        c = self.cfg
        if c.cls_loss not in CLS_LOSSES:
            raise ValueError(f"DetectionLoss: cls_loss must be one of {CLS_LOSSES}, got {c.cls_loss!r}")
        self.focal = FocalLoss(alpha=c.focal_alpha, gamma=c.focal_gamma)
        self.regression = MultiTaskRegressionLoss(box_weight=c.box_weight, depth_weight=c.depth_weight,
                                                  huber_delta=c.huber_delta, depth_loss=c.depth_loss,
                                                  box_loss=c.box_loss, box_scale_factors=box_scale_factors)
        self.box_scale_factors = self.regression.box_scale_factors
        self.weights = (c.cls_weight, c.box_weight, c.depth_weight)
        if c.weighting == "uncertainty" and task_uncertainty is None:
            task_uncertainty = TaskUncertainty(name="task_uncertainty")
            task_uncertainty.build()
        self.task_uncertainty = task_uncertainty if c.weighting == "uncertainty" else None

    @property
    def trainable_variables(self) -> list:
        return [] if self.task_uncertainty is None else list(self.task_uncertainty.trainable_variables)

    def __call__(self, targets, outputs, num_positives) -> dict[str, tf.Tensor]:
        dtype = _float_dtype(outputs)
        norm = tf.maximum(tf.cast(num_positives, dtype), 1.0)
        cls_sum = tf.reduce_sum(self.cls_per_anchor(targets, outputs))
        box_sum, depth_sum = self.regression.task_sums(targets, outputs)
        cls, box, depth = cls_sum / norm, box_sum / norm, depth_sum / norm
        total = combine_tasks(cls, box, depth, self.weights, self.task_uncertainty)
        return {"total": total, "cls": cls, "box": box, "depth": depth}

    def quality(self, targets, outputs) -> tf.Tensor:
        """``[B, N]`` soft targets of ``"quality_focal"``: IoU of the decoded predicted and target
        boxes on positives, 0 elsewhere, in the logits' float dtype, without gradient."""
        dtype = _float_dtype(outputs)
        overlap = positive_iou_from_codes(targets["cls"], tf.cast(outputs["box"], dtype), targets["box"],
                                          self.box_scale_factors)
        return tf.stop_gradient(overlap)

    def cls_per_anchor(self, targets, outputs) -> tf.Tensor:
        """Per-anchor classification loss ``[B, N]`` (``loss.cls_loss``), not normalised."""
        if self.cfg.cls_loss == "quality_focal":
            return quality_focal_loss_per_anchor(targets["cls"], outputs["cls_logits"],
                                                 self.quality(targets, outputs), beta=self.cfg.focal_gamma)
        # .call (per-anchor values) rather than __call__, which would cast to the loss dtype.
        return self.focal.call(targets["cls"], outputs["cls_logits"])

    def get_config(self) -> dict:
        return {"loss_cfg": dataclasses.asdict(self.cfg), "box_scale_factors": list(self.box_scale_factors)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
