"""Model runners: one call turns a batch of letterboxed images into final detections.

The interface every runner implements (a Keras model here; a TFLite interpreter can
implement the same and be used by ``detector predict`` and the evaluation plots)::

    runner(images) -> {"boxes": float32 [B, D, 4]  [ymin, xmin, ymax, xmax] network-input px,
                       "classes": int32 [B, D]     0..C-1, -1 = padding slot,
                       "scores": float32 [B, D]    descending per image, 0 on padding,
                       "depth": float32 [B, D]     metres, 0 on padding,
                       "num_detections": int32 [B]}

    images: uint8 [B, S, S, 3] RGB, letterboxed like the val pipeline (image at the
            top-left scaled by S / max(h, w), padded bottom/right with 0;
            :func:`detector.inference.preprocess.letterbox_image`).

Attributes: ``image_size`` (S), ``class_names`` (C names), ``max_batch`` (largest B a
call accepts, None = any), and ``timings``: seconds of the last call split into
``{"inference": model forward, "postprocess": decode + NMS}`` (a runner that cannot
split them puts everything under "inference").
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np


class ModelRunner(Protocol):
    image_size: int
    class_names: tuple[str, ...]
    max_batch: int | None
    timings: dict

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


class KerasRunner:
    """:class:`ModelRunner` for a :class:`detector.model.Detector` (``model(images)`` +
    :func:`detector.model.decode_detections` with ``eval_cfg``: score threshold, top-k,
    NMS IoU, max detections, box voting; ``eval_cfg.flip_test`` and ``eval_cfg.test_scales``
    add test-time augmentation, :mod:`detector.model.tta`).  ``timings``: seconds of the
    last call's forward passes (``inference``) and decode + NMS (``postprocess``)."""

    max_batch = None

    def __init__(self, model, eval_cfg):
        import tensorflow as tf

        from detector.model.tta import TestTimeAugmentation

        self.model = model
        self.image_size = int(model.image_size)
        self.class_names = tuple(model.class_names)
        self.eval_cfg = eval_cfg
        self.tta = TestTimeAugmentation(model, eval_cfg)
        self._forward = tf.function(lambda x: self.tta.outputs(tf.cast(x, tf.float32)), reduce_retracing=True)
        self._decode = tf.function(self.tta.decode, reduce_retracing=True)
        self.timings = {"inference": 0.0, "postprocess": 0.0}

    def __call__(self, images) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"KerasRunner: expected images [B, {self.image_size}, {self.image_size}, 3], "
                             f"got {list(images.shape)}")
        t0 = time.perf_counter()
        out = self._forward(images)
        out = [{k: v.numpy() for k, v in o.items()} for o in out]   # waits for the forward pass
        t1 = time.perf_counter()
        dets = {k: v.numpy() for k, v in self._decode(out).items()}
        self.timings = {"inference": t1 - t0, "postprocess": time.perf_counter() - t1}
        return dets
