"""Streaming exact COCO box mAP as a Keras metric (pycocotools COCOeval iouType='bbox').

``update_state`` runs pycocotools' matching in-graph on each padded batch
(:func:`detector.evaluation.tf_matching.match_batch`; float64 IoU, static shapes,
XLA-compilable) and appends one compact record per kept detection to fixed-capacity
buffers; ``result()`` runs the shared numpy ``accumulate``/``summarize``
(:mod:`detector.evaluation.accumulate`), the same code as ``tools/eval.py``.

State cost: **32 bytes per detection record** (float32 score, int32 class*128+rank,
int64 image id, int64 TP bits, int64 FP bits; bit ``t*4+a`` = IoU threshold t, area
range a), plus ``npig`` int64 [K, 4] and a few counters.  Only detections ranked
< 100 within their (image, class) are recorded.  ``capacity`` records are
preallocated (default 2**18 = 8 MiB); a COCO-val-sized run needs
``num_images * max_detections_per_image`` (5000 * 100 -> 16 MB).

Distribution: Keras metric variables are ON_READ / SUM ``SyncOnReadVariable``s under a
``tf.distribute`` strategy; each replica holds a full copy.  Replica r writes only its
disjoint slice ``[r*S, (r+1)*S)`` (S = capacity // replicas) of zero-initialised
buffers, so the cross-replica SUM read is the concatenation (x + 0 is exact for
float32 and int64); counters are per-replica vectors or plain sums.  Records carry
(image id, rank), so the merged result is order-independent and equals the
single-device one exactly.  Overflow is counted and ``result()`` raises
:class:`CapacityExceededError`.  Under a strategy, values read *inside* a replica
(Keras' per-batch logs) cover that replica's images only; epoch-end logs and
``evaluate()`` are global.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from detector.evaluation.accumulate import CocoEvalResult, MatchRecords, accumulate, summarize
from detector.evaluation.params import NUM_AREA, NUM_IOU, STAT_NAMES
from detector.evaluation.tf_matching import NUM_BITS, match_batch

_RANK_BITS = 7                      # rank < 100 < 2**7, packed below the class index
_GT_KEYS = ("boxes_xywh", "classes", "is_crowd", "area", "num_boxes")
_DET_KEYS = ("boxes_xywh", "scores", "classes")
# variable-free, so it can be XLA-compiled on its own inside a non-XLA step (and on
# any replica's device); num_classes is a Python int, one trace per value and shape
_match_jit = tf.function(match_batch, jit_compile=True)


class CapacityExceededError(RuntimeError):
    """More detection records than the metric's preallocated ``capacity``."""


class MeanAveragePrecision(keras.metrics.Metric):
    """Exact COCO box AP/AR (the 12 pycocotools stats) accumulated over an evaluation.

    Args:
      num_classes: K; class indices 0..K-1 (no background slot), -1 = padding.
        Every class is a category; one without GT gives -1 and is left out of means.
      max_detections_per_image: D, the number of detection slots per image.
      capacity: total detection records preallocated (32 bytes each, per replica copy).
      jit_matching: compile the (pure, variable-free) matching with XLA even when the
        calling step is not jit-compiled (~5x faster on CPU; same bits, see
        tf_matching.bbox_iou on FMA contraction).
      name: metric name.

    ``update_state(gt, detections, valid=None)``, per batch of B images (M GT slots):
      gt: ``boxes_xywh`` float64 [B,M,4] original-image pixels [x,y,w,h] as in the
        annotation file; ``classes`` int32 [B,M]; ``is_crowd`` bool [B,M]; ``area``
        float64 [B,M] (annotation 'area'); ``image_id`` int64 [B]; ``num_boxes`` int32 [B].
        GT slot order within an image = file order (IoU ties go to the later GT).
      detections: ``boxes_xywh`` float32 [B,D,4] original-image pixels; ``scores``
        float32 [B,D]; ``classes`` int32 [B,D] (-1 = padding).  Slot order = submission
        order (score ties).
      valid: optional bool [B]; False marks padding images (e.g. from sharding).

      sample_weight: accepted as ``valid`` when ``valid`` is not given (Keras calling
        convention); it is an image mask, not a weight.
    Each image must be seen exactly once per evaluation.

    ``result()`` -> dict of the 12 stats (AP, AP50, AP75, APs, APm, APl, AR1, AR10,
    AR100, ARs, ARm, ARl) as float64 scalars, -1 where pycocotools gives -1.  Eagerly
    it runs numpy directly; inside a ``tf.function`` it is a ``tf.numpy_function`` over
    all records so far (~1 s at 500k records), which XLA cannot compile: a
    ``jit_compile=True`` step should call ``update_state`` only and leave ``result()``
    to the epoch end (Keras' default ``test_step`` calls ``result()`` every batch).
    """

    def __init__(self, num_classes: int, max_detections_per_image: int = 100,
                 capacity: int = 2 ** 18, jit_matching: bool = True, name: str = "coco_map",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if num_classes <= 0 or num_classes >= 2 ** (31 - _RANK_BITS):
            raise ValueError(f"MeanAveragePrecision: num_classes must be in 1..{2 ** 24 - 1}, got {num_classes}")
        self.num_classes = int(num_classes)
        self.max_detections_per_image = int(max_detections_per_image)
        self.capacity = int(capacity)
        self.jit_matching = bool(jit_matching)
        self.num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.slice_size = self.capacity // self.num_replicas
        if self.slice_size <= 0:
            raise ValueError(f"MeanAveragePrecision: capacity {capacity} < {self.num_replicas} replicas")
        size = (self.slice_size * self.num_replicas + 1,)        # + 1 trash slot for skipped writes
        self._trash = size[0] - 1
        add = self.add_variable
        self.rec_score = add(size, "zeros", dtype="float32", name="rec_score")
        self.rec_key = add(size, "zeros", dtype="int32", name="rec_class_rank")
        self.rec_image = add(size, "zeros", dtype="int64", name="rec_image_id")
        self.rec_tp = add(size, "zeros", dtype="int64", name="rec_tp_bits")
        self.rec_fp = add(size, "zeros", dtype="int64", name="rec_fp_bits")
        self.npig = add((self.num_classes, NUM_AREA), "zeros", dtype="int64", name="npig")
        self.count = add((self.num_replicas,), "zeros", dtype="int64", name="count")
        self.dropped = add((self.num_replicas,), "zeros", dtype="int64", name="dropped")
        self.num_images = add((), "zeros", dtype="int64", name="num_images")

    # ------------------------------------------------------------------ update

    def update_state(self, gt: dict, detections: dict, valid=None, sample_weight=None):
        d_static = detections["scores"].shape[-1]
        if d_static is not None and d_static != self.max_detections_per_image:
            raise ValueError(f"MeanAveragePrecision: detections have {d_static} slots per image, "
                             f"but max_detections_per_image={self.max_detections_per_image}")
        batch = tf.shape(detections["scores"])[0]
        if valid is None:
            valid = sample_weight if sample_weight is not None else tf.ones([batch], tf.bool)
        valid = tf.reshape(tf.cast(valid, tf.bool), [batch])
        match = _match_jit if self.jit_matching else match_batch
        out = match({k: gt[k] for k in _GT_KEYS}, {k: detections[k] for k in _DET_KEYS}, valid,
                    self.num_classes)

        keep = tf.reshape(out["keep"], [-1])
        pos = tf.cumsum(tf.cast(keep, tf.int64), exclusive=True)
        n_new = tf.reduce_sum(tf.cast(keep, tf.int64))
        rid = _replica_id()
        start = tf.gather(tf.convert_to_tensor(self.count.value), rid)
        slot = start + pos
        fits = keep & (slot < self.slice_size)
        index = tf.where(fits, rid * self.slice_size + slot, self._trash)[:, None]

        classes = tf.cast(detections["classes"], tf.int32)
        key = tf.bitwise.left_shift(tf.maximum(classes, 0), _RANK_BITS) + out["rank"]
        image_id = tf.broadcast_to(tf.cast(gt["image_id"], tf.int64)[:, None], tf.shape(out["rank"]))
        _scatter(self.rec_score, index, tf.reshape(tf.cast(detections["scores"], tf.float32), [-1]))
        _scatter(self.rec_key, index, tf.reshape(key, [-1]))
        _scatter(self.rec_image, index, tf.reshape(image_id, [-1]))
        _scatter(self.rec_tp, index, tf.reshape(out["tp_bits"], [-1]))
        _scatter(self.rec_fp, index, tf.reshape(out["fp_bits"], [-1]))

        stored = tf.minimum(start + n_new, self.slice_size)
        mine = tf.one_hot(rid, self.num_replicas, dtype=tf.int64)
        self.count.assign_add(mine * (stored - start))
        self.dropped.assign_add(mine * (start + n_new - stored))
        self.npig.assign_add(out["npig"])
        self.num_images.assign_add(tf.reduce_sum(tf.cast(valid, tf.int64)))

    # ------------------------------------------------------------------ results

    def result(self):
        """The 12 stats as a dict of float64 scalars (works eagerly and inside tf.function)."""
        if tf.executing_eagerly():
            return {k: tf.constant(v, tf.float64) for k, v in self.coco_result().stats().items()}
        state = [tf.convert_to_tensor(v.value) for v in self._state_vars()]
        values = tf.numpy_function(lambda *s: np.array(list(summarize(self._evaluate(*s)).values())),
                                   state, tf.float64, stateful=False)
        values.set_shape([len(STAT_NAMES)])
        return {k: values[i] for i, k in enumerate(STAT_NAMES)}

    def coco_result(self) -> CocoEvalResult:
        """Full pycocotools-equivalent arrays (precision, recall, npig); call eagerly."""
        return self._evaluate(*(v.numpy() for v in self._state_vars()))

    def per_class_ap(self) -> np.ndarray:
        """float64 [K]: AP@[.5:.95] per class (area all, maxDets 100); -1 for classes without GT."""
        return self.coco_result().per_class_ap()

    def pr_curves(self) -> dict[str, np.ndarray]:
        """Precision at the 101 recall thresholds per class: see :meth:`CocoEvalResult.pr_curves`."""
        return self.coco_result().pr_curves()

    def records(self) -> tuple[MatchRecords, np.ndarray]:
        """The stored per-detection records and ``npig`` [K, A] (numpy; call eagerly)."""
        return self._records(*(v.numpy() for v in self._state_vars()))

    def _state_vars(self):
        return (self.rec_score, self.rec_key, self.rec_image, self.rec_tp, self.rec_fp,
                self.npig, self.count, self.dropped)

    def _evaluate(self, *state) -> CocoEvalResult:
        records, npig = self._records(*state)
        return accumulate(records, npig)

    def _records(self, score, key, image, tp, fp, npig, count, dropped):
        if np.sum(dropped) > 0:
            raise CapacityExceededError(
                f"MeanAveragePrecision(capacity={self.capacity}): {int(np.sum(dropped))} detection "
                f"records did not fit ({self.num_replicas} replica slice(s) of {self.slice_size}; "
                f"{int(np.sum(count))} stored). Construct the metric with capacity >= "
                f"num_eval_images * max_detections_per_image.")
        rows = np.concatenate([np.arange(r * self.slice_size, r * self.slice_size + int(c))
                               for r, c in enumerate(count)])

        def unpack(x):   # int64 bit t*A + a -> bool [N, T, A]
            as_bytes = np.ascontiguousarray(x[rows].astype("<i8")).view(np.uint8).reshape(len(rows), 8)
            bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :NUM_BITS]
            return bits.astype(bool).reshape(len(rows), NUM_IOU, NUM_AREA)

        key = key[rows]
        records = MatchRecords(score=score[rows].astype(np.float64), category=key >> _RANK_BITS,
                               image_id=image[rows], rank=key & (2 ** _RANK_BITS - 1),
                               tp=unpack(tp), fp=unpack(fp))
        return records, npig

    def get_config(self):
        return {"name": self.name, "num_classes": self.num_classes,
                "max_detections_per_image": self.max_detections_per_image, "capacity": self.capacity,
                "jit_matching": self.jit_matching}


def _replica_id() -> tf.Tensor:
    ctx = tf.distribute.get_replica_context()
    rid = ctx.replica_id_in_sync_group if ctx is not None else 0
    return tf.cast(rid, tf.int64)


def _scatter(variable, index: tf.Tensor, values: tf.Tensor) -> None:
    """In-place ``variable[index] = values`` on this replica's copy.

    ``SyncOnReadVariable`` has no scatter methods, but its ``handle`` in a replica
    context is the local component's, which the raw op updates in place (no copy of
    the whole buffer per batch).
    """
    tf.raw_ops.ResourceScatterNdUpdate(ref=variable._value.handle, indices=index, updates=values)
