"""Streaming binary classification metrics: recall, precision/recall/F1, optimal F1.

Conventions shared by every metric here:

* ``y_true`` and ``y_pred`` have the same number of elements (any shapes, e.g.
  ``[B]``, ``[B, 1]``, ``[B, N]``); every element is one binary decision
  (micro-averaging).  ``y_true`` may be bool, int or float: an element is
  positive when ``y_true > 0.5`` and **ignored** when ``y_true < 0`` (the
  project's ``-1`` padding / ``-2`` ignore labels).
* ``y_pred`` are probabilities, or logits with ``from_logits=True`` (sigmoid).
  An element is predicted positive when ``probability >= threshold``.
* ``sample_weight`` broadcasts against ``y_pred`` after trailing axes are added
  (``[B]`` weights every element of sample ``b``).
* Counts are ``add_variable`` state: float64, ``synchronization=ON_READ``,
  ``aggregation=SUM``.  Under ``tf.distribute`` each replica accumulates its own
  shard and reading the result in cross-replica context (epoch-end logs,
  ``evaluate()``) sums the replicas, so results equal the single-device result
  on the global data (integer counts exactly, up to 2**53).  Per-batch
  progress-bar values under a strategy are Keras' mean of per-replica local
  results (docs/conventions.md §10); epoch-end logs are global.
* Ratios with a zero denominator are 0 (e.g. recall with no positives).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

_COUNT = "float64"


def _flatten_inputs(y_true, y_pred, sample_weight, from_logits):
    """Returns flat ``(positive bool [M], prob float32 [M], weight float64 [M])``."""
    y_pred = tf.convert_to_tensor(y_pred)
    y_pred = tf.cast(y_pred, tf.float32) if y_pred.dtype != tf.float32 else y_pred
    if from_logits:
        y_pred = tf.sigmoid(y_pred)
    y_true = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(y_pred))
    weight = tf.cast(y_true >= 0, _COUNT)  # -1 / -2 labels are ignored
    if sample_weight is not None:
        sw = tf.cast(sample_weight, _COUNT)
        while sw.shape.rank < y_pred.shape.rank:
            sw = sw[..., None]
        weight *= tf.broadcast_to(sw, tf.shape(y_pred))
    return (
        tf.reshape(y_true > 0.5, [-1]),
        tf.reshape(y_pred, [-1]),
        tf.reshape(weight, [-1]),
    )


def _safe_div(num, den):
    return tf.math.divide_no_nan(num, den)


class _CountingMetric(keras.metrics.Metric):
    """Base: threshold/from_logits handling and scalar tp/fp/fn counts."""

    def __init__(self, threshold=0.5, from_logits=False, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{type(self).__name__}: threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.true_positives = self.add_variable((), "zeros", dtype=_COUNT, name="true_positives")
        self.false_positives = self.add_variable((), "zeros", dtype=_COUNT, name="false_positives")
        self.false_negatives = self.add_variable((), "zeros", dtype=_COUNT, name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates weighted TP/FP/FN; ``y_true``/``y_pred`` as in the module docstring."""
        positive, prob, weight = _flatten_inputs(y_true, y_pred, sample_weight, self.from_logits)
        predicted = tf.cast(prob >= self.threshold, _COUNT)
        actual = tf.cast(positive, _COUNT)
        self.true_positives.assign_add(tf.reduce_sum(weight * predicted * actual))
        self.false_positives.assign_add(tf.reduce_sum(weight * predicted * (1.0 - actual)))
        self.false_negatives.assign_add(tf.reduce_sum(weight * (1.0 - predicted) * actual))

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold, from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="detector")
class BinaryRecall(_CountingMetric):
    """Recall = TP / (TP + FN) accumulated over all updates (an epoch in ``fit``).

    Args:
      threshold: predicted positive when ``probability >= threshold``.
      from_logits: apply a sigmoid to ``y_pred`` first.

    ``result()``: scalar, 0 when there are no positives.  (FP is tracked too,
    for symmetry with :class:`PrecisionRecallF1`, but unused.)
    """

    def __init__(self, threshold=0.5, from_logits=False, name="binary_recall", dtype=None):
        super().__init__(threshold=threshold, from_logits=from_logits, name=name, dtype=dtype)

    def result(self):
        tp = self.true_positives
        return tf.cast(_safe_div(tp, tp + self.false_negatives), self.dtype)


@keras.saving.register_keras_serializable(package="detector")
class PrecisionRecallF1(_CountingMetric):
    """Precision, recall and F1 from one shared set of TP/FP/FN counts.

    ``result()`` is a dict ``{"precision", "recall", "f1"}`` of scalars; Keras
    flattens it into the logs under exactly these keys (``val_`` prefixed for
    validation), so do not combine it with other metrics named ``precision``,
    ``recall`` or ``f1``.  ``F1 = 2 TP / (2 TP + FP + FN)`` (0 when undefined).
    """

    def __init__(self, threshold=0.5, from_logits=False, name="precision_recall_f1", dtype=None):
        super().__init__(threshold=threshold, from_logits=from_logits, name=name, dtype=dtype)

    def result(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        values = {
            "precision": _safe_div(tp, tp + fp),
            "recall": _safe_div(tp, tp + fn),
            "f1": _safe_div(2.0 * tp, 2.0 * tp + fp + fn),
        }
        return {k: tf.cast(v, self.dtype) for k, v in values.items()}


@keras.saving.register_keras_serializable(package="detector")
class OptimalF1(keras.metrics.Metric):
    """Best F1 over ``num_thresholds`` evenly spaced thresholds in ``[0, 1]``.

    State: per-threshold TP/FP/FN counts, float64 ``[num_thresholds]``.  One
    update is vectorised and O(M log T + T) for M elements: each probability is
    placed by ``searchsorted`` into the bucket of thresholds it reaches
    (``probability >= thresholds[k]``), buckets are histogrammed with
    ``unsorted_segment_sum`` and a reversed cumulative sum turns them into
    per-threshold counts (no Python loop, no ``[M, T]`` matrix).

    ``result()``: scalar best F1 (logged as ``optimal_f1`` by default).
    ``best_threshold()``: the threshold achieving it (the lowest one on ties;
    ``thresholds[0] == 0`` when every F1 is 0).  ``f1_curve()``: F1 ``[T]``.
    ``thresholds``: the float32 numpy array of thresholds.
    """

    def __init__(self, num_thresholds=101, from_logits=False, name="optimal_f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if num_thresholds < 2:
            raise ValueError(f"OptimalF1: num_thresholds must be >= 2, got {num_thresholds}")
        self.num_thresholds = int(num_thresholds)
        self.from_logits = bool(from_logits)
        self.thresholds = np.linspace(0.0, 1.0, self.num_thresholds).astype(np.float32)
        shape = (self.num_thresholds,)
        self.true_positives = self.add_variable(shape, "zeros", dtype=_COUNT, name="true_positives")
        self.false_positives = self.add_variable(shape, "zeros", dtype=_COUNT, name="false_positives")
        self.false_negatives = self.add_variable(shape, "zeros", dtype=_COUNT, name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates per-threshold weighted TP/FP/FN in one vectorised pass."""
        positive, prob, weight = _flatten_inputs(y_true, y_pred, sample_weight, self.from_logits)
        t = self.num_thresholds
        # bucket b in [0, T] = number of thresholds <= prob; predicted positive at
        # threshold k  <=>  b >= k + 1.
        bucket = tf.searchsorted(tf.constant(self.thresholds), prob, side="right")
        actual = tf.cast(positive, _COUNT)
        pos_hist = tf.math.unsorted_segment_sum(weight * actual, bucket, t + 1)
        neg_hist = tf.math.unsorted_segment_sum(weight * (1.0 - actual), bucket, t + 1)
        tp = tf.cumsum(pos_hist[1:], reverse=True)
        fp = tf.cumsum(neg_hist[1:], reverse=True)
        self.true_positives.assign_add(tp)
        self.false_positives.assign_add(fp)
        self.false_negatives.assign_add(tf.reduce_sum(pos_hist) - tp)

    def f1_curve(self):
        """F1 per threshold, float64 ``[num_thresholds]``."""
        tp = self.true_positives
        return _safe_div(2.0 * tp, 2.0 * tp + self.false_positives + self.false_negatives)

    def result(self):
        return tf.cast(tf.reduce_max(self.f1_curve()), self.dtype)

    def best_threshold(self):
        """Threshold of the best F1 (lowest on ties), scalar float32."""
        f1 = self.f1_curve()
        index = tf.range(self.num_thresholds)
        # tf.argmax does not promise the first index on ties; take it explicitly.
        first = tf.reduce_min(tf.where(f1 >= tf.reduce_max(f1), index, self.num_thresholds))
        return tf.gather(tf.constant(self.thresholds), first)

    def get_config(self):
        config = super().get_config()
        config.update(num_thresholds=self.num_thresholds, from_logits=self.from_logits)
        return config
