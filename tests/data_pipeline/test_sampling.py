"""Repeat-factor sampling: closed-form factors, unbiased stochastic rounding, determinism."""

import numpy as np
import pytest

from detector.data.records import ImageRecord
from detector.data.sampling import (
    class_repeat_factors,
    epoch_repeat_counts,
    image_repeat_counts,
    image_repeat_factors,
    repeat_records,
)


def _images():
    # class 0 in 8 of 10 images, class 1 in 2, class 2 in 1, class 3 never; one empty image
    return [np.array([0, 0]), np.array([0]), np.array([0, 1]), np.array([0]), np.array([0, 2]),
            np.array([0]), np.array([1]), np.array([0]), np.array([0]), np.array([], np.int32)]


def test_class_factors_closed_form():
    r = class_repeat_factors(_images(), num_classes=4, threshold=0.5)
    np.testing.assert_allclose(r, [1.0, np.sqrt(0.5 / 0.2), np.sqrt(0.5 / 0.1), 1.0])


def test_image_counts_are_unbiased_and_deterministic():
    imgs = _images()
    r_c = class_repeat_factors(imgs, 4, 0.5)
    expected = np.array([max([r_c[c] for c in set(i.tolist())], default=1.0) for i in imgs])
    draws = np.stack([image_repeat_counts(imgs, 4, 0.5, seed) for seed in range(4000)])
    assert draws.min() >= 1
    np.testing.assert_allclose(draws.mean(0), expected, atol=0.03)
    np.testing.assert_array_equal(image_repeat_counts(imgs, 4, 0.5, 7), image_repeat_counts(imgs, 4, 0.5, 7))
    assert np.all(image_repeat_counts(imgs, 4, 0.5, 7)[[0, 1, 3, 9]] == 1)   # common-only and empty


def test_repeat_records_ignores_crowd_boxes():
    def rec(i, classes, crowd):
        n = len(classes)
        return ImageRecord(image=f"{i}.jpg", image_id=i, height=8, width=8, boxes=np.zeros((n, 4)),
                           classes=np.array(classes, np.int32), is_crowd=np.array(crowd, bool),
                           area=np.zeros(n), depth=-np.ones(n, np.float32))

    records = [rec(i, [0], [False]) for i in range(9)] + [rec(9, [1], [True])]
    # class 1 only appears as a crowd box: no class is rare, nothing is repeated
    assert len(repeat_records(records, 2, 0.5, seed=0)) == 10     # sqrt(0.5 / 0.9) < 1
    records[9] = rec(9, [1], [False])
    out = repeat_records(records, 2, 0.5, seed=0)
    assert [r.image_id for r in out].count(9) in (2, 3)        # sqrt(0.5 / 0.1) = 2.24
    assert len(out) == 9 + [r.image_id for r in out].count(9)
    with pytest.raises(TypeError):
        repeat_records(records, 2, 0.5)                        # the seed is explicit


def test_epoch_counts_in_the_graph_are_unbiased_and_a_function_of_the_seed():
    factors = image_repeat_factors(_images(), 4, 0.5)
    draws = np.stack([epoch_repeat_counts(factors, seed).numpy() for seed in range(3000)])
    assert draws.min() >= 1 and np.all(draws >= np.floor(factors)) and np.all(draws <= np.ceil(factors))
    np.testing.assert_allclose(draws.mean(0), factors, atol=0.03)
    np.testing.assert_array_equal(epoch_repeat_counts(factors, 7), epoch_repeat_counts(factors, 7))
    assert not all(np.array_equal(draws[0], d) for d in draws[1:10])   # the seed matters
