"""Horizontal-flip test-time augmentation, averaged per anchor before decoding.

The anchor grid is symmetric under a horizontal mirror of the square input: centres sit
at ``stride/2 + k*stride`` and the side ``S`` is a multiple of every stride, so the
mirror of every anchor ``[y1, x1, y2, x2]`` is exactly another anchor
``[y1, S - x2, y2, S - x1]`` (same level, same size and aspect ratio).  The model's
outputs on the mirrored image, read at each anchor's mirror, are therefore predictions
for the same anchor of the original image:

* class logits ``[B, N, C]`` and log-depth ``[B, N]`` / ``[B, N, C]``: unchanged;
* box codes ``[ty, tx, th, tw]`` (:mod:`detector.targets.box_coder`): ``tx`` changes
  sign (the offset from the anchor centre mirrors), the others are unchanged.

:func:`flip_averaged_outputs` averages the two sets of raw outputs (logits, codes and
log-depth are averaged as they are), so the decode, NMS and every consumer of raw
outputs stay the same.  It costs a second forward pass.  ``eval.flip_test: true``
turns it on for evaluation (in training and ``detector eval``) and ``detector predict``;
exported TFLite models never include it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def mirror_permutation(anchors, image_size: float) -> np.ndarray:
    """int32 ``[N]``: index of each anchor's horizontal mirror (an involution).

    Args:
      anchors: float ``[N, 4]`` yxyx anchors in input pixels.
      image_size: the square input side ``S``.

    Raises ValueError when some anchor has no mirror (a grid that is not symmetric).
    """
    a = np.asarray(anchors, np.float64)
    mirrored = np.stack([a[:, 0], image_size - a[:, 3], a[:, 2], image_size - a[:, 1]], axis=1)
    # Coordinates are float32 multiples of small fractions: a 1e-3 px grid identifies them.
    index = {tuple(k): i for i, k in enumerate(np.round(a * 1000).astype(np.int64).tolist())}
    perm = [index.get(tuple(k), -1) for k in np.round(mirrored * 1000).astype(np.int64).tolist()]
    missing = [i for i, j in enumerate(perm) if j < 0]
    if missing:
        raise ValueError(f"flip test: {len(missing)} of {len(a)} anchors have no horizontal mirror in the "
                         f"grid (first: anchor {missing[0]}, {a[missing[0]].tolist()}); the input side "
                         f"{image_size} must be a multiple of every level's stride")
    return np.asarray(perm, np.int32)


def flip_averaged_outputs(model, images, mirror, outputs=None) -> dict[str, tf.Tensor]:
    """Raw outputs averaged over ``images`` and their horizontal mirror.

    Args:
      model: a :class:`~detector.model.Detector` (or any callable returning its output dict).
      images: float32 ``[B, S, S, 3]`` network input.
      mirror: int32 ``[N]`` from :func:`mirror_permutation` of the model's anchors.
      outputs: the model's outputs on ``images`` when already computed.

    Returns the model's output dict (``cls_logits`` ``[B, N, C]``, ``box`` ``[B, N, 4]``,
    ``depth`` ``[B, N]`` or ``[B, N, C]``) for the original anchors.
    """
    out = model(images, training=False) if outputs is None else outputs
    flipped = model(tf.reverse(images, axis=[2]), training=False)
    back = {k: tf.gather(v, mirror, axis=1) for k, v in flipped.items()}
    back["box"] = back["box"] * tf.constant([1.0, -1.0, 1.0, 1.0], back["box"].dtype)
    return {k: 0.5 * (out[k] + back[k]) for k in out}
