"""The exported function, written as a SavedModel for the TFLite converter.

``write_saved_model(model, cfg, directory, postprocess)`` tracks the Keras model in a
``keras.export.ExportArchive`` and adds one endpoint, ``serving_default``, with a
fixed batch-1 input signature (a dynamic batch would add SHAPE / STRIDED_SLICE /
PACK ops to every reshape).  The archive freezes the weights into the graph when the
converter reads it (a plain ``tf.Module`` + ``tf.saved_model.save`` leaves
``VAR_HANDLE`` / ``READ_VARIABLE`` ops behind, which break INT8 calibration).

Input: ``images`` float32 ``[1, S, S, 3]``, RGB ``0..255``, letterboxed like the
evaluation pipeline (image scaled by ``S / max(h, w)`` at the top-left, zero padding
bottom/right); the normalisation is inside the network.

Outputs, by name (signature output names survive conversion; positional order does not):

- ``postprocess="inside"``: see :mod:`detector.export.postprocess`
  (``boxes``, ``classes``, ``scores``, ``depth``, ``num_detections``);
- ``postprocess="none"``: the raw head, ``cls_logits`` float32 ``[1, N, C]``,
  ``box`` ``[1, N, 4]`` codes ``[ty, tx, th, tw]``, ``depth`` ``[1, N]`` log-metres,
  with ``N`` anchors in :mod:`detector.targets.anchors` order.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from detector.export.postprocess import AnchorGrid, postprocess_single

SIGNATURE = "serving_default"
INPUT_NAME = "images"
RAW_OUTPUT_NAMES = ("cls_logits", "box", "depth")
POSTPROCESS_SCOPE = "postprocess"   # name prefix of the post-processing tensors (selective quantization)


def serving_function(model, cfg, postprocess: str):
    """``fn(images [1,S,S,3] float32) -> dict`` of the outputs in the module docstring."""
    if postprocess not in ("inside", "none"):
        raise ValueError(f"postprocess must be 'inside' or 'none', got {postprocess!r}")
    anchors = model.anchors()
    size = int(model.image_size)
    m = model.config_tree.model
    scale_factors = tuple(m.box_scale_factors)
    per_location = m.anchors.num_scales * len(m.anchors.aspect_ratios)
    grid = AnchorGrid.fit(anchors, size, m.min_level, m.max_level, per_location)

    def serve(images):
        outputs = model(images, training=False)
        if postprocess == "none":
            return {k: outputs[k] for k in RAW_OUTPUT_NAMES}
        with tf.name_scope(POSTPROCESS_SCOPE):
            return postprocess_single(outputs, anchors, cfg.eval, scale_factors, size, grid)

    return serve


def write_saved_model(model, cfg, directory: str | Path, postprocess: str = "inside") -> Path:
    """Write the SavedModel of :func:`serving_function` to ``directory``; returns it."""
    size = int(model.image_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([1, size, size, 3], tf.float32, name=INPUT_NAME)
    fn = serving_function(model, cfg, postprocess)
    archive.add_endpoint(SIGNATURE, lambda images: fn(images), input_signature=[spec])
    directory = Path(directory)
    archive.write_out(str(directory), verbose=False)
    return directory
