"""TensorBoard summaries written with TensorFlow alone.

``tf.summary.scalar`` / ``histogram`` need the ``tensorboard`` package, which is not a
project dependency (it is only needed to *view* the logs).  These helpers write the
same event-file records through the core op ``tf.summary.write`` with the plugin
metadata the TensorBoard scalar and histogram dashboards expect, so ``tb/`` works
with any TensorBoard installed wherever the logs are viewed.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)
_HISTOGRAM = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="histograms"),
    data_class=summary_pb2.DATA_CLASS_TENSOR)


def scalar(tag: str, value: float, step: int) -> None:
    """One float32 scalar; needs a default writer (``with writer.as_default():``)."""
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR)


def histogram_buckets(values, bucket_count: int = 30) -> np.ndarray:
    """float64 [k, 3] rows (left edge, right edge, count), TensorBoard's histogram format.

    Non-finite values are dropped; constant input gives one unit-wide bucket.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros((0, 3))
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return np.array([[lo - 0.5, hi + 0.5, float(v.size)]])
    counts, edges = np.histogram(v, bins=bucket_count, range=(lo, hi))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def histogram(tag: str, values, step: int, bucket_count: int = 30) -> None:
    tf.summary.write(tag, tf.constant(histogram_buckets(values, bucket_count)), step=step,
                     metadata=_HISTOGRAM)
