"""Evaluation of a detector model over a val split: COCO mAP, val loss, depth error.

Used by training (every ``eval.every_n_epochs``) and by ``detector eval`` model mode.

The val dataset is iterated on the host; each global batch is split over the
replicas (``experimental_distribute_values_from_function``), the model and the
post-processing run under ``strategy.run``, and the detections are gathered back
(``strategy.gather``, which also collects across workers under
MultiWorkerMirroredStrategy, so every worker computes the same full metric).  The
ground truth never leaves the host (float64 / bool tensors do not go to a TPU).
Every val image is evaluated exactly once under any replica count: the dataset is
finite and its last batch is completed with ``valid=False`` padding images, which the
metric skips.  ``jit_compile=True`` compiles each replica's forward pass and decode
(top-k, box decoding, padded NMS) with XLA.

Reported names (the engine prefixes ``val_``): the 12 COCO stats ``AP AP50 AP75
APs APm APl AR1 AR10 AR100 ARs ARm ARl`` (-1 where COCO gives -1, e.g. no small
objects), ``loss`` (mean over batches of the detection loss), and
``depth_abs_rel``: mean ``|d_pred - d_true| / d_true`` over positive anchors with
known depth (absent when the val set has no depth), and ``depth_error``: the same
relative error on DETECTIONS greedily matched to GT (IoU >= 0.5, same class; see
:mod:`detector.evaluation.depth`), absent when no detection matched a GT with depth.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from detector.config import Config
from detector.evaluation.depth import DepthError
from detector.evaluation.params import STAT_NAMES

if TYPE_CHECKING:
    from detector.metrics.coco_map import MeanAveragePrecision

__all__ = ["DetectionEvaluator", "EXTRA_STATS", "STAT_NAMES", "network_to_original_xywh"]
EXTRA_STATS = ("loss", "depth_abs_rel", "depth_error")
SUM = tf.distribute.ReduceOp.SUM


def network_to_original_xywh(boxes_yxyx: np.ndarray, scale: np.ndarray,
                             original_size: np.ndarray) -> np.ndarray:
    """Network-input yxyx pixels -> original-image ``[x, y, w, h]`` (COCO bbox).

    Args:
      boxes_yxyx: ``[B, D, 4]`` in the letterboxed network input (image at the
        top-left, scaled by ``scale`` network px per original px, padded bottom/right).
      scale: ``[B]``; original_size: ``[B, 2]`` (h, w) of the original images.
    Returns float32 ``[B, D, 4]``, clipped to the original image.  Padding images
    (``scale`` 0, original size 0) give all-zero boxes.
    """
    scale = np.asarray(scale, np.float64)
    scale = np.where(scale > 0, scale, 1.0)   # padded images: avoid 0/0, their size clips to 0
    b = np.asarray(boxes_yxyx, np.float64) / scale[:, None, None]
    hw = np.asarray(original_size, np.float64)
    h, w = hw[:, 0][:, None], hw[:, 1][:, None]
    y1, x1 = np.clip(b[..., 0], 0, h), np.clip(b[..., 1], 0, w)
    y2, x2 = np.clip(b[..., 2], 0, h), np.clip(b[..., 3], 0, w)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=-1).astype(np.float32)


class DetectionEvaluator:
    """``evaluator(model) -> {name: float}`` over the whole val split (or ``eval.steps`` batches).

    Args:
      cfg: the run config (``eval``, ``model.box_scale_factors``, ``data``).
      strategy: the training strategy (the model's variables live under it).
      val_dataset: finite dataset of pipeline dicts (``images``, ``targets``, ``gt``)
        with global batch ``eval.batch_size``, a multiple of the replica count.
      num_val: number of val images (sizes the metric's detection store).
      jit_compile: compile the forward pass + decode with XLA.

    The detections are the model's under ``cfg.eval`` (NMS, box voting and the test-time
    augmentation of :mod:`detector.model.tta`); the loss is that of the plain forward pass.
    """

    def __init__(self, cfg: Config, strategy: tf.distribute.Strategy, val_dataset: tf.data.Dataset,
                 num_val: int | None = None, progress: bool = True,
                 jit_compile: bool = False):
        self.cfg, self.strategy, self.dataset = cfg, strategy, val_dataset
        self._tta = None
        self.progress = progress
        self.jit_compile = bool(jit_compile)
        # one record per detection slot of every val image (+ one padded batch)
        slots = ((num_val or 0) + cfg.eval.batch_size) * cfg.eval.max_detections
        self.capacity = max(2 ** 18, slots)
        self._step = None
        self._metric = None
        self.depth_pairs = 0   # matched (detection, GT with depth) pairs of the last evaluation

    @property
    def metric(self) -> MeanAveragePrecision | None:
        """The :class:`MeanAveragePrecision` of the last evaluation (None before the first)."""
        return self._metric

    def _forward_decode(self, model, images):
        outputs = model(images, training=False)
        # test-time augmentation (eval.flip_test, eval.test_scales) changes the detections;
        # the loss stays that of the plain pass
        return outputs, self._tta.decode(self._tta.outputs(images, plain=outputs))

    def _replica(self, model, images, targets, forward_decode):
        from detector.losses import count_positives, depth_of_class

        outputs, dets = forward_decode(images)
        ctx = tf.distribute.get_replica_context()
        positives = ctx.all_reduce(SUM, count_positives(targets))
        loss = model.detection_loss(targets, outputs, positives)["total"]
        mask = tf.cast(targets["depth_mask"], tf.float32)
        # depth head predicts log(metres) (per class: the target class's); targets["depth"] too
        rel = tf.abs(tf.exp(depth_of_class(outputs["depth"], targets["cls"]) - targets["depth"]) - 1.0)
        depth_sum = tf.reduce_sum(tf.where(mask > 0, rel, 0.0))
        return ({k: dets[k] for k in ("boxes", "scores", "classes", "depth")},
                loss, depth_sum, tf.reduce_sum(mask))

    def _make_step(self, model):
        from detector.model.tta import TestTimeAugmentation

        with self.strategy.scope():   # twins for extra test scales hold variables
            self._tta = TestTimeAugmentation(model, self.cfg.eval)

        def forward_decode(images):
            return self._forward_decode(model, images)

        if self.jit_compile:
            forward_decode = tf.function(forward_decode, jit_compile=True)

        def replica(images, targets):
            return self._replica(model, images, targets, forward_decode)

        def step(images, targets):
            dets, loss, depth_sum, depth_n = self.strategy.run(replica, args=(images, targets))
            dets = {k: self.strategy.gather(v, axis=0) for k, v in dets.items()}
            return (dets, self.strategy.reduce(SUM, loss, axis=None),
                    self.strategy.reduce(SUM, depth_sum, axis=None),
                    self.strategy.reduce(SUM, depth_n, axis=None))

        return tf.function(step, reduce_retracing=True)

    def _split(self, batch):
        n = self.strategy.num_replicas_in_sync
        if n == 1:
            return batch["images"], batch["targets"]

        def per_replica(ctx):
            size = int(batch["images"].shape[0]) // n
            lo = ctx.replica_id_in_sync_group * size
            take = lambda t: t[lo:lo + size]  # noqa: E731
            return take(batch["images"]), tf.nest.map_structure(take, batch["targets"])

        return self.strategy.experimental_distribute_values_from_function(per_replica)

    def __call__(self, model, sink: Callable[[dict, dict], None] | None = None) -> dict:
        """Evaluate ``model``; returns ``{name: float}`` (names in the module docstring).

        ``sink(gt, detections)``, if given, receives every batch on the host as numpy:
        the pipeline ``gt`` dict and ``{"boxes_xywh" float32 [B,D,4] original-image
        pixels (exactly what the metric saw), "scores" float32 [B,D], "classes" int32
        [B,D] (-1 pad), "depth" float32 [B,D] metres}`` (e.g. to write COCO results).
        """
        from detector.metrics.coco_map import MeanAveragePrecision

        if self._step is None:
            self._step = self._make_step(model)
        self._tta.sync()   # the twins of eval.test_scales take the weights being evaluated
        if self._metric is None:  # outside any strategy scope: the records live on the host
            self._metric = MeanAveragePrecision(self.cfg.num_classes,
                                                max_detections_per_image=self.cfg.eval.max_detections,
                                                capacity=self.capacity)
            # traced once (static shapes): eager op-by-op updates cost ~1 s per batch
            self._update = tf.function(lambda gt, dets, valid: self._metric.update_state(
                gt, dets, valid=valid))
        metric = self._metric
        metric.reset_state()
        depth_error = DepthError()
        losses, depth_sum, depth_n, batches = [], 0.0, 0.0, 0
        t0 = time.perf_counter()
        t_metric = 0.0   # time in the streaming mAP (update_state + result), reported below
        for batch in self.dataset:
            if self.cfg.eval.steps is not None and batches >= self.cfg.eval.steps:
                break
            images, targets = self._split(batch)
            dets, loss, d_sum, d_n = self._step(images, targets)
            gt = batch["gt"]
            gt_np = {k: v.numpy() for k, v in gt.items()}
            dets_np = {"boxes_xywh": network_to_original_xywh(dets["boxes"].numpy(), gt_np["scale"],
                                                              gt_np["original_size"]),
                       **{k: dets[k].numpy() for k in ("scores", "classes", "depth")}}
            t1 = time.perf_counter()
            self._update(gt, {k: dets_np[k] for k in ("boxes_xywh", "scores", "classes")}, gt["valid"])
            t_metric += time.perf_counter() - t1
            depth_error.update(gt_np, dets_np, gt_np["valid"])
            if sink is not None:
                sink(gt_np, dets_np)
            losses.append(float(loss))
            depth_sum, depth_n = depth_sum + float(d_sum), depth_n + float(d_n)
            batches += 1
        pipeline = getattr(self.dataset, "stats", None)   # PipelineStats of make_dataset
        if batches == 0:
            from detector.errors import UserError

            skipped = (f": all {pipeline.images_skipped} images were unreadable ({pipeline.skipped_names()})"
                       if pipeline is not None and pipeline.images_skipped else "")
            raise UserError(f"the validation split gave no image to evaluate{skipped}")
        if pipeline is not None and pipeline.notable:
            # never silently: these metrics leave the skipped images' annotations out
            print(f"warning: val input: {pipeline.summary()}", file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        stats = {k: float(v) for k, v in metric.result().items()}
        t_metric += time.perf_counter() - t1
        total = time.perf_counter() - t0
        self.timing = {"seconds": total, "metric_seconds": t_metric, "batches": batches}
        stats["loss"] = float(np.mean(losses))
        if depth_n > 0:
            stats["depth_abs_rel"] = depth_sum / depth_n
        if depth_error.count > 0:
            stats["depth_error"] = depth_error.result()
        self.depth_pairs = depth_error.count
        if self.progress:
            print(f"evaluated {batches} val batches in {total:.1f} s "
                  f"(streaming mAP: {t_metric:.2f} s, {100 * t_metric / total:.1f}%)",
                  file=sys.stderr, flush=True)
        return stats
