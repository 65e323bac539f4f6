"""TensorBoard image summaries written with TensorFlow alone (no ``tensorboard`` package).

Like :mod:`detector.callbacks.summaries` for scalars: the record ``tf.summary.image``
would write (a string tensor ``[width, height, png_1, ..., png_k]`` with the "images"
plugin metadata) goes through the core op ``tf.summary.write``.
"""

from __future__ import annotations

import struct

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_IMAGES = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def write_png_images(tag: str, pngs: list[bytes], step: int) -> None:
    """One image summary of encoded PNGs (same size); needs a default writer."""
    w, h = png_size(pngs[0])
    tensor = tf.constant([str(w).encode(), str(h).encode(), *pngs], tf.string)
    tf.summary.write(tag, tensor, step=step, metadata=_IMAGES)
