"""Box + depth regression loss and the task weighting (fixed or learned uncertainty).

Per anchor (targets from :func:`detector.targets.assign.assign_targets`)::

    box   = sum_{k in ty,tx,th,tw} huber(pred_k - target_k; delta)   only where cls >= 0   (loss.box_loss "huber")
          = 1 - GIoU(unit_decode(pred), unit_decode(target))        only where cls >= 0   (loss.box_loss "giou")
    depth = huber(pred - target; delta) or 0.5 * (pred - target)**2   only where depth_mask = 1

GIoU (Rezatofighi et al. 2019) = IoU - (C - U) / C with U the union and C the smallest
enclosing box; the box term is in ``[0, 2)``: 0 for identical boxes, > 1 for disjoint
ones.  :func:`unit_decode` decodes a code against the UNIT anchor (centre (0, 0), height
and width 1) with the box coder's scale factors (``model.box_scale_factors``) and its
clip of ``th / sh``, ``tw / sw`` at ``log(1000 / 16)`` before ``exp`` (so a wild
prediction cannot overflow).  No anchors are needed: decoding against a real anchor
``(yc_a, xc_a, h_a, w_a)`` is the unit decode followed by ``y -> yc_a + h_a * y``,
``x -> xc_a + w_a * x``, and IoU and GIoU are invariant under translation and under
independent positive scalings of the two axes (the areas of the intersection, the union
and the enclosing box are all multiplied by ``h_a * w_a``).  So the unit-anchor GIoU is
exactly the GIoU of the boxes decoded against their real anchor.  Non-positive anchors
get zero codes before decoding, so garbage there cannot leak NaN either.  The same holds
for the plain IoU, :func:`positive_iou_from_codes`, the soft target of the quality focal
loss (``loss.cls_loss: quality_focal``, :mod:`detector.losses.focal`).

Depth is regressed as log(metres) (with one prediction per class, that of the
anchor's target class); anchors whose object has no depth (e.g. COCO,
``depth_mask = 0``) contribute nothing.  ``huber(e) = 0.5 e**2`` for ``|e| <= delta``,
else ``delta * (|e| - 0.5 delta)`` (Keras' Huber), so "squared" and "huber" agree
on small errors.  Errors are zeroed *before* the loss so garbage targets on masked
anchors cannot leak NaN into gradients.

Task weighting (``loss.weighting``), over the three detector tasks
``i in (cls, box, depth)`` with normalised losses ``L_i`` and config weights ``w_i``:

* ``"fixed"``:        ``total = sum_i w_i * L_i``
* ``"uncertainty"``:  ``total = sum_i exp(-s_i) * w_i * L_i + s_i`` (Kendall et al.
  2018), ``s_i`` a learned log-variance, initialised to 0 (so both modes agree at
  step 0).  The ``s_i`` live in a :class:`TaskUncertainty` layer owned by the model
  (``Detector.task_uncertainty``), so they are in ``model.trainable_variables``, are
  updated by the model's optimizer and saved in its checkpoints.  Caveat: a task
  without any targets (depth on COCO) has ``L_i = 0`` and its ``s_i`` drifts down
  without bound (harmless to the other terms, but the total drifts); use
  ``"fixed"`` for such data.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from detector.targets.box_coder import LOG_SIZE_CLIP

TASKS = ("cls", "box", "depth")
BOX_LOSSES = ("huber", "giou")
DEFAULT_BOX_SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)  # model.box_scale_factors' default
_AREA_EPS = 1e-9  # keeps 0 / 0 out of the GIoU when both boxes are degenerate


def huber(err, delta: float) -> tf.Tensor:
    """Elementwise Huber loss of an error tensor (same shape out)."""
    abs_err = tf.abs(err)
    quad = tf.minimum(abs_err, delta)
    return 0.5 * quad * quad + delta * (abs_err - quad)


def _intersection_union(boxes_a, boxes_b) -> tuple[tf.Tensor, tf.Tensor]:
    """Elementwise intersection and union areas of yxyx boxes ``[..., 4]`` -> two ``[...]``."""
    ya0, xa0, ya1, xa1 = tf.unstack(boxes_a, axis=-1)
    yb0, xb0, yb1, xb1 = tf.unstack(boxes_b, axis=-1)
    area_a = tf.maximum(ya1 - ya0, 0.0) * tf.maximum(xa1 - xa0, 0.0)
    area_b = tf.maximum(yb1 - yb0, 0.0) * tf.maximum(xb1 - xb0, 0.0)
    inter = (tf.maximum(tf.minimum(ya1, yb1) - tf.maximum(ya0, yb0), 0.0)
             * tf.maximum(tf.minimum(xa1, xb1) - tf.maximum(xa0, xb0), 0.0))
    return inter, area_a + area_b - inter


def iou(boxes_a, boxes_b) -> tf.Tensor:
    """Elementwise IoU of yxyx boxes ``[..., 4]`` -> ``[...]``, in ``[0, 1]``."""
    inter, union = _intersection_union(boxes_a, boxes_b)
    return inter / (union + _AREA_EPS)


def giou(boxes_a, boxes_b) -> tf.Tensor:
    """Elementwise generalised IoU of yxyx boxes ``[..., 4]`` -> ``[...]``, in ``(-1, 1]``."""
    inter, union = _intersection_union(boxes_a, boxes_b)
    ya0, xa0, ya1, xa1 = tf.unstack(boxes_a, axis=-1)
    yb0, xb0, yb1, xb1 = tf.unstack(boxes_b, axis=-1)
    enclose = (tf.maximum(ya1, yb1) - tf.minimum(ya0, yb0)) * (tf.maximum(xa1, xb1) - tf.minimum(xa0, xb0))
    return inter / (union + _AREA_EPS) - (enclose - union) / (enclose + _AREA_EPS)


def unit_decode(codes, scale_factors=DEFAULT_BOX_SCALE_FACTORS) -> tf.Tensor:
    """Codes ``[..., 4]`` ``[ty, tx, th, tw]`` -> yxyx boxes relative to the unit anchor.

    :func:`detector.targets.box_coder.decode` against the anchor with centre (0, 0),
    height and width 1 (same clip of ``th / sh``, ``tw / sw`` at ``LOG_SIZE_CLIP``), but
    in the codes' own float dtype (float64 gradient checks stay float64).
    """
    ty, tx, th, tw = tf.unstack(codes, axis=-1)
    sy, sx, sh, sw = (float(s) for s in scale_factors)
    yc, xc = ty / sy, tx / sx
    half_h = 0.5 * tf.exp(tf.minimum(th / sh, LOG_SIZE_CLIP))
    half_w = 0.5 * tf.exp(tf.minimum(tw / sw, LOG_SIZE_CLIP))
    return tf.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], axis=-1)


def giou_loss_from_codes(pred_codes, target_codes, scale_factors=DEFAULT_BOX_SCALE_FACTORS) -> tf.Tensor:
    """``1 - GIoU`` of two code tensors ``[..., 4]`` (``[ty, tx, th, tw]``) -> ``[...]``.

    Both are decoded with :func:`unit_decode` (see the module docstring for why that
    equals the GIoU against any real anchor); the clip of the log-sizes keeps the loss
    and its gradient finite for any prediction.
    """
    pred_codes = tf.convert_to_tensor(pred_codes)
    target_codes = tf.cast(target_codes, pred_codes.dtype)
    return 1.0 - giou(unit_decode(pred_codes, scale_factors), unit_decode(target_codes, scale_factors))


def positive_iou_from_codes(cls_targets, pred_codes, target_codes,
                            scale_factors=DEFAULT_BOX_SCALE_FACTORS) -> tf.Tensor:
    """IoU of predicted and target boxes per anchor ``[..., N]``, 0 where ``cls < 0``.

    ``cls_targets`` ``[..., N]`` class ids, codes ``[..., N, 4]`` (``[ty, tx, th, tw]``), in
    ``pred_codes``' float dtype.  Both are decoded with :func:`unit_decode`, which gives the
    IoU of the boxes decoded against their real anchor (module docstring).  Non-positive
    anchors get zero codes before decoding (as the GIoU loss does), so garbage there cannot
    produce NaN.  Differentiable; callers that use it as a target wrap it in ``stop_gradient``.
    """
    pred_codes = tf.convert_to_tensor(pred_codes)
    positive = tf.cast(cls_targets, tf.float32) >= 0.0
    return _positive_overlap(iou, positive, pred_codes, tf.cast(target_codes, pred_codes.dtype), scale_factors)


def _positive_overlap(overlap_fn, positive, pred_codes, target_codes, scale_factors) -> tf.Tensor:
    """``overlap_fn(pred box, target box)`` ``[..., N]`` on positive anchors, 0 elsewhere.

    Both codes are decoded with :func:`unit_decode`; non-positive anchors get zero codes
    (the unit anchor itself) BEFORE decoding, so garbage there reaches neither the value
    nor its gradient.
    """
    mask = positive[..., None]
    pred = unit_decode(tf.where(mask, pred_codes, tf.zeros_like(pred_codes)), scale_factors)
    target = unit_decode(tf.where(mask, target_codes, tf.zeros_like(target_codes)), scale_factors)
    overlap = overlap_fn(pred, target)
    return tf.where(positive, overlap, tf.zeros_like(overlap))


def depth_of_class(depth, classes) -> tf.Tensor:
    """Per-anchor log-depth ``[..., N]`` from the model's depth output.

    ``depth`` is ``[..., N]`` (one per anchor: returned as is) or ``[..., N, C]``
    (``model.depth_per_class``: the entry of each anchor's class is taken); ``classes``
    int ``[..., N]`` class ids, negative ids (background, ignored) read class 0 and must
    be masked by the caller.
    """
    depth = tf.convert_to_tensor(depth)
    classes = tf.convert_to_tensor(classes)
    if depth.shape.rank == classes.shape.rank:
        return depth
    pick = tf.one_hot(tf.maximum(tf.cast(classes, tf.int32), 0), tf.shape(depth)[-1], dtype=depth.dtype)
    return tf.reduce_sum(depth * pick, axis=-1)


def regression_per_anchor(targets, outputs, huber_delta: float = 1.0, depth_loss: str = "huber",
                          box_loss: str = "huber",
                          box_scale_factors=DEFAULT_BOX_SCALE_FACTORS) -> tuple[tf.Tensor, tf.Tensor]:
    """Masked per-anchor box and depth losses.

    Args:
      targets: dict with ``cls`` ``[B, N]`` class ids (positives ``>= 0``), ``box``
        ``[B, N, 4]`` encoded ``[ty, tx, th, tw]``, ``depth`` ``[B, N]`` log-metres,
        ``depth_mask`` ``[B, N]`` (1 where the depth target is valid).
      outputs: dict with ``box`` ``[B, N, 4]`` and ``depth`` ``[B, N]`` (or ``[B, N, C]``,
        one per class: the target class's entry is used) predictions.
      huber_delta: Huber transition point (box codes with ``box_loss="huber"``, depth).
      depth_loss: ``"huber"`` or ``"squared"``.
      box_loss: ``"huber"`` on the four codes or ``"giou"`` (``1 - GIoU`` of the decoded boxes).
      box_scale_factors: the box coder's ``(sy, sx, sh, sw)``; only ``"giou"`` reads them.

    Returns:
      ``(box [B, N], depth [B, N])`` in the predictions' float dtype, not normalised.
    """
    pred_box = tf.convert_to_tensor(outputs["box"])
    dtype = pred_box.dtype if pred_box.dtype.is_floating else tf.float32
    positive = tf.cast(targets["cls"], tf.float32) >= 0.0
    if box_loss == "huber":
        box_err = tf.cast(pred_box, dtype) - tf.cast(targets["box"], dtype)
        box_err = tf.where(positive[..., None], box_err, tf.zeros_like(box_err))
        box = tf.reduce_sum(huber(box_err, huber_delta), axis=-1)
    elif box_loss == "giou":
        box = _positive_overlap(lambda a, b: 1.0 - giou(a, b), positive, tf.cast(pred_box, dtype),
                                tf.cast(targets["box"], dtype), box_scale_factors)
    else:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    has_depth = tf.cast(targets["depth_mask"], tf.float32) > 0.5
    depth_err = tf.cast(depth_of_class(outputs["depth"], targets["cls"]), dtype) - tf.cast(targets["depth"], dtype)
    depth_err = tf.where(has_depth, depth_err, tf.zeros_like(depth_err))
    if depth_loss == "huber":
        depth = huber(depth_err, huber_delta)
    elif depth_loss == "squared":
        depth = 0.5 * tf.square(depth_err)
    else:
        raise ValueError(f"depth_loss must be 'huber' or 'squared', got {depth_loss!r}")
    return box, depth


@keras.saving.register_keras_serializable(package="detector")
class MultiTaskRegressionLoss(keras.losses.Loss):
    """Box (Huber or GIoU) + depth regression, masked (see module docstring).

    ``loss(targets, outputs)`` (dicts as in :func:`regression_per_anchor`) returns
    ``sum over anchors of box_weight * box + depth_weight * depth`` with the default
    ``reduction="sum"``; divide by ``max(num_positives, 1)``.  :meth:`task_sums`
    returns the two un-weighted sums separately (what :class:`DetectionLoss` uses,
    so that it can apply the uncertainty weighting).  ``box_loss`` is ``"huber"`` or
    ``"giou"``; ``box_scale_factors`` (the box coder's, ``model.box_scale_factors``) are
    what ``"giou"`` decodes the codes with.
    """

    def __init__(self, box_weight: float = 0.7, depth_weight: float = 0.3, huber_delta: float = 1.0,
                 depth_loss: str = "huber", box_loss: str = "huber",
                 box_scale_factors=DEFAULT_BOX_SCALE_FACTORS, reduction: str | None = "sum",
                 name: str = "multitask_regression_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if depth_loss not in ("huber", "squared"):
            raise ValueError(f"MultiTaskRegressionLoss: depth_loss must be 'huber' or 'squared', got {depth_loss!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"MultiTaskRegressionLoss: box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if huber_delta <= 0:
            raise ValueError(f"MultiTaskRegressionLoss: huber_delta must be positive, got {huber_delta}")
        factors = tuple(float(f) for f in box_scale_factors)
        if len(factors) != 4 or not all(f > 0 for f in factors):
            raise ValueError(f"MultiTaskRegressionLoss: box_scale_factors must be 4 positive numbers, "
                             f"got {box_scale_factors!r}")
        self.box_weight = float(box_weight)
        self.depth_weight = float(depth_weight)
        self.huber_delta = float(huber_delta)
        self.depth_loss = depth_loss
        self.box_loss = box_loss
        self.box_scale_factors = factors

    def _per_anchor(self, y_true, y_pred):
        return regression_per_anchor(y_true, y_pred, self.huber_delta, self.depth_loss, self.box_loss,
                                     self.box_scale_factors)

    def call(self, y_true, y_pred):
        box, depth = self._per_anchor(y_true, y_pred)
        return self.box_weight * box + self.depth_weight * depth

    def task_sums(self, y_true, y_pred) -> tuple[tf.Tensor, tf.Tensor]:
        """Un-weighted, un-normalised ``(box_sum, depth_sum)`` scalars."""
        box, depth = self._per_anchor(y_true, y_pred)
        return tf.reduce_sum(box), tf.reduce_sum(depth)

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight, "depth_weight": self.depth_weight,
                "huber_delta": self.huber_delta, "depth_loss": self.depth_loss, "box_loss": self.box_loss,
                "box_scale_factors": list(self.box_scale_factors)}


@keras.saving.register_keras_serializable(package="detector")
class TaskUncertainty(keras.layers.Layer):
    """Holds the learned log-variances ``s = [s_cls, s_box, s_depth]`` (init 0).

    A layer (not a loss) so that a model owning it tracks, trains and saves ``s``.
    ``layer(losses [3])`` returns ``exp(-s) * losses + s / num_replicas``: the
    regulariser is split across replicas because per-replica losses are summed
    (the optimizer SUM-all-reduces gradients), so it counts once globally.
    """

    def build(self, input_shape=None):
        self.log_variance = self.add_weight(shape=(len(TASKS),), initializer="zeros",
                                            trainable=True, name="log_variance")

    def call(self, weighted_losses):
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        weighted_losses = tf.convert_to_tensor(weighted_losses)
        s = tf.cast(self.log_variance, weighted_losses.dtype)
        return tf.exp(-s) * weighted_losses + s / float(replicas)

    def compute_output_shape(self, input_shape):
        return input_shape


def combine_tasks(cls, box, depth, weights, task_uncertainty: TaskUncertainty | None = None) -> tf.Tensor:
    """Total loss from normalised task losses; ``weights = (w_cls, w_box, w_depth)``."""
    weighted = tf.stack([weights[0] * cls, weights[1] * box, weights[2] * depth])
    if task_uncertainty is None:
        return tf.reduce_sum(weighted)
    return tf.reduce_sum(task_uncertainty(weighted))
