"""Repeat-factor sampling for class-imbalanced training sets (Gupta et al., LVIS 2019).

Each class ``c`` gets ``r_c = max(1, sqrt(t / f_c))`` where ``f_c`` is the share of
training images that contain ``c`` (crowd boxes excluded) and ``t`` is
``data.repeat_factor_threshold``; an image is repeated ``r_i = max_c r_c`` times per
epoch over the classes it contains (1 for images without objects).  Fractional
factors are rounded stochastically, seeded, so the expected count is exact and a
given seed always yields the same counts.

The training pipeline draws the counts in the graph, once per epoch from the epoch's
data seed (:func:`epoch_repeat_counts`), so one ``tf.data`` pipeline serves every epoch
and epoch ``e`` gets the same repeats whichever epoch a run starts at.  The NumPy
functions below give the same expectations with NumPy's generator (not the same draws).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def class_repeat_factors(classes_per_image: list[np.ndarray], num_classes: int, threshold: float) -> np.ndarray:
    """``r_c`` float64 ``[num_classes]`` from the class ids (``0..C-1``) of every image."""
    present = np.zeros(num_classes, np.float64)
    for cls in classes_per_image:
        present[np.unique(cls[(cls >= 0) & (cls < num_classes)])] += 1
    freq = present / max(len(classes_per_image), 1)
    with np.errstate(divide="ignore"):
        factors = np.sqrt(threshold / freq)
    return np.maximum(1.0, np.where(freq > 0, factors, 1.0))


def image_repeat_factors(classes_per_image: list[np.ndarray], num_classes: int, threshold: float) -> np.ndarray:
    """``r_i`` float64 ``[n_images]`` (>= 1): the largest factor of the classes in each image."""
    r_c = class_repeat_factors(classes_per_image, num_classes, threshold)
    return np.array([r_c[np.unique(c[(c >= 0) & (c < num_classes)])].max(initial=1.0)
                     for c in classes_per_image], np.float64).reshape(-1)


def record_repeat_factors(records: list, num_classes: int, threshold: float) -> np.ndarray:
    """``r_i`` of :class:`~detector.data.records.ImageRecord` s (crowd boxes left out)."""
    classes = [np.asarray(r.classes)[~np.asarray(r.is_crowd, bool)] for r in records]
    return image_repeat_factors(classes, num_classes, threshold)


def epoch_repeat_counts(factors: np.ndarray, seed) -> tf.Tensor:
    """int64 ``[n_images]`` repeats (>= 1) with ``E[count_i] = factors[i]``, drawn in the graph
    from ``seed`` (an int or int64 scalar tensor, e.g. the epoch's data seed): the same seed
    gives the same counts, whatever else the pipeline did before."""
    r = tf.constant(factors, tf.float64)
    whole = tf.floor(r)
    u = tf.random.stateless_uniform(tf.shape(r), seed=tf.stack([tf.cast(seed, tf.int64),
                                                                tf.constant(0x5EED, tf.int64)]),
                                    dtype=tf.float64)
    return tf.cast(whole, tf.int64) + tf.cast(u < r - whole, tf.int64)


def image_repeat_counts(classes_per_image: list[np.ndarray], num_classes: int, threshold: float,
                        seed: int | None) -> np.ndarray:
    """Integer repeats ``[n_images]`` (>= 1) with ``E[count_i] = r_i`` (NumPy draws)."""
    r_i = image_repeat_factors(classes_per_image, num_classes, threshold)
    whole = np.floor(r_i)
    rng = np.random.default_rng(seed)
    return (whole + (rng.random(len(r_i)) < r_i - whole)).astype(np.int64)


def repeat_records(records: list, num_classes: int, threshold: float, seed: int | None) -> list:
    """``records`` with each image repeated by its repeat factor (order kept, repeats adjacent)."""
    classes = [np.asarray(r.classes)[~np.asarray(r.is_crowd, bool)] for r in records]
    counts = image_repeat_counts(classes, num_classes, threshold, seed)
    return [r for r, k in zip(records, counts) for _ in range(k)]
