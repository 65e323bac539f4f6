"""Multi-level anchor generation (RetinaNet / Model Garden convention).

Anchor boxes are ``[ymin, xmin, ymax, xmax]`` in absolute pixels of the square
network input of side ``image_size``.

Order of the flat ``[N, 4]`` array (the heads flatten their outputs the same way):

1. levels ``min_level .. max_level`` (stride ``2**level``);
2. within a level, locations row-major: ``y`` outer, ``x`` inner;
3. within a location, ``index = scale_idx * len(aspect_ratios) + ratio_idx``.

So a head output ``[B, H_l, W_l, A*K]`` reshaped to ``[B, H_l*W_l*A, K]`` and
concatenated over levels lines up with the anchors.

Sizes follow Model Garden ``ops/anchor.py``: at level ``l`` and scale ``s`` the base
size is ``anchor_size * 2**l * 2**(s / num_scales)``; an aspect ratio ``r`` is
**width / height**, giving ``w = base * sqrt(r)``, ``h = base / sqrt(r)``.  Centres sit
at ``stride/2 + k*stride``.
"""

from __future__ import annotations

import numpy as np


def num_anchors_per_location(model_cfg) -> int:
    """``A = num_scales * len(aspect_ratios)`` for a :class:`~detector.config.ModelConfig`."""
    return model_cfg.anchors.num_scales * len(model_cfg.anchors.aspect_ratios)


def generate_anchors(
    image_size: int,
    min_level: int,
    max_level: int,
    num_scales: int,
    aspect_ratios: tuple[float, ...] | list[float],
    anchor_size: float,
) -> np.ndarray:
    """All anchors of all levels.

    Args:
      image_size: side of the square network input in pixels; a multiple of ``2**max_level``.
      min_level, max_level: pyramid levels (stride ``2**level``).
      num_scales: octave sub-scales per level.
      aspect_ratios: width / height ratios.
      anchor_size: base anchor size in units of the level's stride.

    Returns:
      float32 ``[N, 4]`` ``[ymin, xmin, ymax, xmax]`` absolute pixels, in the order
      described in the module docstring, ``N = sum_l H_l*W_l*A``.
    """
    if image_size % 2**max_level:
        raise ValueError(f"image_size {image_size} is not a multiple of 2**max_level = {2**max_level}")
    per_level = []
    for level in range(min_level, max_level + 1):
        stride = 2**level
        size = image_size // stride
        # [A, 2] half extents (h/2, w/2) in scale-major, ratio-minor order.
        half = []
        for s in range(num_scales):
            base = anchor_size * stride * 2.0 ** (s / num_scales)
            for r in aspect_ratios:
                half.append((base / np.sqrt(r) / 2.0, base * np.sqrt(r) / 2.0))
        half = np.asarray(half, dtype=np.float64)                       # [A, 2]
        centres = stride / 2.0 + stride * np.arange(size, dtype=np.float64)
        cy, cx = np.meshgrid(centres, centres, indexing="ij")            # [H, W]
        ctr = np.stack([cy, cx], axis=-1)[:, :, None, :]                # [H, W, 1, 2]
        boxes = np.concatenate([ctr - half, ctr + half], axis=-1)       # [H, W, A, 4]
        per_level.append(boxes.reshape(-1, 4))
    return np.concatenate(per_level, axis=0).astype(np.float32)


def anchors_for_config(cfg) -> np.ndarray:
    """Anchors ``[N, 4]`` (yxyx pixels) for a full :class:`~detector.config.Config`."""
    m = cfg.model
    return generate_anchors(
        cfg.data.image_size, m.min_level, m.max_level,
        m.anchors.num_scales, m.anchors.aspect_ratios, m.anchors.anchor_size,
    )


def level_sizes(cfg) -> list[int]:
    """Anchors per level, ``min_level`` first: ``H_l * W_l * A`` (the flat array's level blocks)."""
    m = cfg.model
    a = num_anchors_per_location(m)
    return [(cfg.data.image_size // 2**level) ** 2 * a for level in range(m.min_level, m.max_level + 1)]
