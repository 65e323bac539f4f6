"""``data.cache_images: decoded``: decode each training image once, keep the pixels in memory.

:func:`decode_for_cache` maps canonical elements (encoded ``image`` bytes, see
:mod:`detector.data.sources`) to the same element with ``image`` replaced by the
decoded pixels, uint8 ``[h, w, 3]`` RGB, EXIF orientation applied (the OpenCV decoder
of :func:`detector.data.augment.decode_checked`: the project's convention, also when
the training backend is the pure-TF one, which cannot apply EXIF itself), downscaled
with area averaging so that the longer side is at most ``max_side`` (never upscaled).
The annotations follow the pixels: ``boxes`` (xywh) and ``size`` (h, w) in the pixels
of the CACHED image, ``area`` scaled by the same factors.  Undecodable images are left
out (named and counted in :class:`PipelineStats`).

Both augmentation backends take such an element as they take encoded bytes (the
image is recognised by its dtype), so a training step no longer decodes a JPEG.
Training outputs then report ``boxes_xywh`` / ``area`` / ``original_size`` / ``scale``
relative to the cached image (the trainer uses none of them); evaluation never reads
the cache.

Memory: ``h * w * 3`` bytes per image, e.g. 160 photos at ``max_side`` 288: ~30 MB.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import tensorflow as tf

from detector.data.augment import NO_READABLE_IMAGES, NoReadableImages, decode_checked
from detector.data.records import PipelineStats


def cache_max_side(data_cfg) -> int:
    """Longer side of a cached image: ``data.cache_max_side`` or, when null, the largest
    side the training zoom shows (``image_size * max(1, augment.scale[1])``, rounded up)."""
    if data_cfg.cache_max_side is not None:
        return int(data_cfg.cache_max_side)
    return int(np.ceil(data_cfg.image_size * max(1.0, data_cfg.augment.scale[1])))


def shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """``(image, fy, fx)``: uint8 ``[h, w, 3]`` resized (area averaging) so that its longer
    side is at most ``max_side``; ``fy = new h / h``, ``fx = new w / w`` (1, 1 when kept)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0, 1.0
    s = max_side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), nh / h, nw / w


class _Decoder:
    """The ``tf.numpy_function`` body: one element's bytes -> cached pixels and scaled fields."""

    def __init__(self, max_side: int, stats: PipelineStats, num_images: int | None):
        self.max_side, self.stats, self.num_images = max_side, stats, num_images
        self._lock = threading.Lock()
        self._failed = self._decoded = 0

    def __call__(self, encoded, name, boxes, area, size):
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        hw = tuple(int(v) for v in np.asarray(size).reshape(-1)[:2])
        image, note = decode_checked(bytes(encoded), hw if all(hw) else None)
        if image is None:
            self.stats.skip(name, note)
            with self._lock:
                self._failed += 1
                none_left = self._decoded == 0 and self.num_images and self._failed >= self.num_images
            if none_left:
                raise NoReadableImages(f"{NO_READABLE_IMAGES}: none of the {self.num_images} images of the "
                                       f"split could be decoded ({self.stats.skipped_names()})")
            return (False, np.zeros((1, 1, 3), np.uint8), np.zeros((0, 4)), np.zeros(0), np.zeros(2, np.int32))
        for flag in filter(None, note.split(",")):
            self.stats.repaired(name, flag)
        with self._lock:
            self._decoded += 1
        image, fy, fx = shrink(image, self.max_side)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([fx, fy, fx, fy])
        area = np.asarray(area, np.float64) * (fx * fy)
        return True, image, boxes, area, np.array(image.shape[:2], np.int32)


def decode_for_cache(ds: tf.data.Dataset, max_side: int, stats: PipelineStats | None = None,
                     num_images: int | None = None) -> tf.data.Dataset:
    """Canonical elements with encoded ``image`` -> the same with decoded, shrunk pixels
    (see the module docstring); file order kept, undecodable images left out.

    Raises :class:`NoReadableImages` (inside the pipeline) when all ``num_images`` fail."""
    decoder = _Decoder(max_side, stats if stats is not None else PipelineStats(), num_images)

    def one(e):
        size = e.get("size", tf.zeros([2], tf.int32))
        ok, image, boxes, area, hw = tf.numpy_function(
            decoder, [e["image"], e["name"], e["boxes"], e["area"], size],
            (tf.bool, tf.uint8, tf.float64, tf.float64, tf.int32), stateful=True)
        out = dict(e, image=tf.ensure_shape(image, [None, None, 3]), boxes=tf.ensure_shape(boxes, [None, 4]),
                   area=tf.ensure_shape(area, [None]), size=tf.ensure_shape(hw, [2]))
        return tf.ensure_shape(ok, []), out

    def decoded(ok, e):
        return ok

    def element(ok, e):
        return e

    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.filter(decoded).map(element)
