"""The detector ``keras.Model``: backbone -> FPN -> shared class / box / depth subnets.

``model(images, training=...)`` with ``images`` float32 ``[B, S, S, 3]`` RGB 0..255
(or a pipeline dict holding ``"images"``) returns::

    {"cls_logits": float32 [B, N, C]   logits, class ids 0..C-1, no background slot,
     "box":        float32 [B, N, 4]   codes [ty, tx, th, tw] (detector.targets.box_coder),
     "depth":      float32 [B, N]      predicted log(depth in metres), or
                   float32 [B, N, C]   one per class with model.depth_per_class: the
                                       anchor's prediction plus a learned offset per class}

with ``N`` anchors in the order of :mod:`detector.targets.anchors`.  The forward pass has
no data-dependent Python control flow (exportable to TFLite).

Training: ``detector train`` (:mod:`detector.training`) is the full path: checkpoints,
resume, evaluation, callbacks, every strategy.  Plain Keras is supported too, on one
device and under ``MirroredStrategy``: ``model.compile(optimizer=...)`` then
``model.fit(ds)`` where ``ds`` yields ``(images, targets)`` tuples or pipeline dicts
``{"images", "targets", ...}``.  :meth:`compute_loss` applies
:class:`~detector.losses.DetectionLoss` with the positive count all-reduced across
replicas (a no-op on one device), and logs the task terms as ``cls_loss``,
``box_loss``, ``depth_loss``; one ``fit`` step equals one engine step (tested).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from detector.config import Config, from_dict, to_dict
from detector.losses import DetectionLoss, TaskUncertainty, all_reduce_sum, count_positives
from detector.model.backbones import build_backbone
from detector.model.fpn import FeaturePyramid
from detector.model.heads import AnchorPredictor, ClassOffset, HeadTower
from detector.model.norm import synchronized_batchnorm
from detector.targets import anchors as anchor_lib

_TERMS = ("cls", "box", "depth")


def _replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


@keras.saving.register_keras_serializable(package="detector")
class Detector(keras.Model):
    """RetinaNet-style detector with a per-anchor depth output.

    Args:
      class_names: class names; index = class id.
      image_size: square input side ``S`` (multiple of ``2**max_level``).
      model_config: dict of :class:`~detector.config.ModelConfig` fields.
      loss_config: dict of :class:`~detector.config.LossConfig` fields.

    Attributes: ``config_tree`` (a validated :class:`Config` holding these
    sections), ``detection_loss``, ``task_uncertainty`` (the learned task
    log-variances when ``loss.weighting == "uncertainty"``, else None).
    """

    def __init__(self, class_names, image_size: int, model_config: dict | None = None,
                 loss_config: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        # A tuple: Keras would wrap a list attribute in a TrackedList (not YAML-able).
        self.class_names = tuple(str(c) for c in class_names)
        self.image_size = int(image_size)
        tree = {"data": {"classes": list(self.class_names), "image_size": self.image_size},
                "model": dict(model_config or {}), "loss": dict(loss_config or {})}
        self.config_tree: Config = from_dict(tree, source=f"{type(self).__name__} config")
        m = self.config_tree.model
        num_levels = m.max_level - m.min_level + 1
        num_anchors = anchor_lib.num_anchors_per_location(m)
        tower = dict(num_levels=num_levels, num_convs=m.head_convs, channels=m.head_channels,
                     separable=m.separable, activation=m.activation, norm=m.head_norm)

        with synchronized_batchnorm(m.sync_batchnorm):   # BN statistics over all replicas
            self.backbone, backbone_levels = build_backbone(m.backbone, self.image_size, m.min_level, m.max_level,
                                                            m.activation)
            self.fpn = FeaturePyramid(m.min_level, m.max_level, backbone_levels, m.fpn_channels, m.separable,
                                      m.activation, name="fpn")
            self.cls_tower = HeadTower(name="cls_tower", **tower)
            self.box_tower = HeadTower(name="box_tower", **tower)
            self.depth_tower = HeadTower(name="depth_tower", **tower) if m.depth_head == "own_tower" else None
            p = m.prior_probability
            self.cls_predictor = AnchorPredictor(num_anchors, len(self.class_names), m.separable,
                                                 bias_init=-math.log((1.0 - p) / p), name="cls_predictor")
            self.box_predictor = AnchorPredictor(num_anchors, 4, m.separable, name="box_predictor")
            self.depth_predictor = AnchorPredictor(num_anchors, 1, m.separable, bias_init=math.log(m.depth_prior),
                                                   name="depth_predictor")
            self.depth_class_offset = (ClassOffset(len(self.class_names), name="depth_class_offset")
                                       if m.depth_per_class else None)

        self.task_uncertainty = None
        if self.config_tree.loss.weighting == "uncertainty":
            self.task_uncertainty = TaskUncertainty(name="task_uncertainty")
            self.task_uncertainty.build()
        self.detection_loss = DetectionLoss(self.config_tree.loss, self.task_uncertainty,
                                            box_scale_factors=m.box_scale_factors)
        self.term_trackers = [keras.metrics.Mean(name=f"{t}_loss") for t in _TERMS]
        self.build((None, self.image_size, self.image_size, 3))

    # ------------------------------------------------------------------ forward

    def build(self, input_shape):
        # Symbolic pass: creates every variable once, before any optimizer or load.
        self.compute_output_spec(keras.KerasTensor(tuple(input_shape)))

    def call(self, inputs, training=None):
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        feats = self.backbone(images, training=training)
        feats = list(feats) if isinstance(feats, (list, tuple)) else [feats]
        pyramid = self.fpn(feats, training=training)
        cls_feats = self.cls_tower(pyramid, training=training)
        box_feats = self.box_tower(pyramid, training=training)
        depth_feats = box_feats if self.depth_tower is None else self.depth_tower(pyramid, training=training)
        return {
            "cls_logits": keras.ops.cast(self.cls_predictor(cls_feats), "float32"),
            "box": keras.ops.cast(self.box_predictor(box_feats), "float32"),
            "depth": keras.ops.cast(self._depth(depth_feats), "float32"),
        }

    def _depth(self, depth_feats):
        depth = keras.ops.squeeze(self.depth_predictor(depth_feats), -1)     # [B, N]
        return depth if self.depth_class_offset is None else self.depth_class_offset(depth)   # [B, N, C]

    # ------------------------------------------------------------------ training

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Total detection loss for one replica's batch (see module docstring).

        ``y`` is the targets dict (``cls``, ``box``, ``depth``, ``depth_mask``); when
        the dataset yields pipeline dicts it is taken from ``x["targets"]``.
        ``sample_weight`` is not supported (anchors carry their own masks).
        """
        targets = y if y is not None else (x.get("targets") if isinstance(x, dict) else None)
        if targets is None:
            raise ValueError("Detector.compute_loss: no targets; feed (images, targets) tuples or "
                             "dicts with 'images' and 'targets'")
        num_positives = all_reduce_sum(count_positives(targets))
        terms = self.detection_loss(targets, y_pred, num_positives)
        replicas = _replicas()
        for name, tracker in zip(_TERMS, self.term_trackers):
            # Per-replica terms are partial sums of the global loss; scaling by the
            # replica count makes the mean over replicas (what Keras logs) the global value.
            tracker.update_state(terms[name] * replicas)
        total = terms["total"]
        if self.losses:  # layer regularisers; counted once globally
            total = total + keras.ops.sum(self.losses) / replicas
        return total

    # ------------------------------------------------------------------ helpers

    def anchors(self):
        """float32 ``[N, 4]`` yxyx anchors matching the outputs (numpy)."""
        return anchor_lib.anchors_for_config(self.config_tree)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "class_names": list(self.class_names),
                "image_size": self.image_size, "model_config": to_dict(self.config_tree.model),
                "loss_config": to_dict(self.config_tree.loss)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = dict(config.get("model_config") or {})
        # Rebuilding never downloads: saved weights are loaded right after from_config.
        model_config["backbone"] = {**dict(model_config.get("backbone") or {}), "weights": None}
        config["model_config"] = model_config
        return cls(**config)


def build_detector(cfg: Config) -> Detector:
    """The detector for ``cfg`` (``data.classes``, ``data.image_size``, ``model``, ``loss``)."""
    return Detector(class_names=cfg.data.classes, image_size=cfg.data.image_size,
                    model_config=to_dict(cfg.model), loss_config=to_dict(cfg.loss), name="detector")
