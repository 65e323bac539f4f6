"""Repeat-factor sampling for class-imbalanced training sets (Gupta et al., LVIS 2019).

Each class ``c`` gets ``r_c = max(1, sqrt(t / f_c))`` where ``f_c`` is the share of
training images that contain ``c`` (crowd boxes excluded) and ``t`` is
``data.repeat_factor_threshold``; an image is repeated ``r_i = max_c r_c`` times per
epoch over the classes it contains (1 for images without objects).  Fractional
factors are rounded stochastically, seeded, so the expected count is exact and a
given ``(seed, epoch)`` always yields the same list.
"""

from __future__ import annotations

import numpy as np


def class_repeat_factors(classes_per_image: list[np.ndarray], num_classes: int, threshold: float) -> np.ndarray:
    """``r_c`` float64 ``[num_classes]`` from the class ids (``0..C-1``) of every image."""
    present = np.zeros(num_classes, np.float64)
    for cls in classes_per_image:
        present[np.unique(cls[(cls >= 0) & (cls < num_classes)])] += 1
    freq = present / max(len(classes_per_image), 1)
    with np.errstate(divide="ignore"):
        factors = np.sqrt(threshold / freq)
    return np.maximum(1.0, np.where(freq > 0, factors, 1.0))


def image_repeat_counts(classes_per_image: list[np.ndarray], num_classes: int, threshold: float,
                        seed: int | None) -> np.ndarray:
    """Integer repeats ``[n_images]`` (>= 1) with ``E[count_i] = r_i``."""
    r_c = class_repeat_factors(classes_per_image, num_classes, threshold)
    r_i = np.array([r_c[np.unique(c[(c >= 0) & (c < num_classes)])].max(initial=1.0)
                    for c in classes_per_image])
    whole = np.floor(r_i)
    rng = np.random.default_rng(seed)
    return (whole + (rng.random(len(r_i)) < r_i - whole)).astype(np.int64)


def repeat_records(records: list, num_classes: int, threshold: float, seed: int | None) -> list:
    """``records`` with each image repeated by its repeat factor (order kept, repeats adjacent)."""
    classes = [np.asarray(r.classes)[~np.asarray(r.is_crowd, bool)] for r in records]
    counts = image_repeat_counts(classes, num_classes, threshold, seed)
    return [r for r, k in zip(records, counts) for _ in range(k)]
