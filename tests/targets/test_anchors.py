"""Anchors: counts, order within a location, sizes and centres (hand-computed)."""

import numpy as np
import pytest

from detector.targets.anchors import generate_anchors


def test_count_and_level_order():
    a = generate_anchors(64, 3, 4, num_scales=2, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=4.0)
    # level 3: 8x8 locations, level 4: 4x4; 6 anchors per location
    assert a.shape == ((64 + 16) * 6, 4)
    assert a.dtype == np.float32
    # the first level-4 anchor is centred at (8, 8) = stride/2
    first4 = a[64 * 6]
    assert np.allclose((first4[:2] + first4[2:]) / 2, [8.0, 8.0])


def test_first_location_hand_computed():
    a = generate_anchors(32, 3, 3, num_scales=2, aspect_ratios=(0.5, 2.0), anchor_size=4.0)
    # location (0, 0) of level 3: centre (4, 4); base sizes 32 and 32*sqrt(2)
    # ratio = width/height: r=0.5 -> h = base/sqrt(.5), w = base*sqrt(.5)
    b0 = 32.0
    h, w = b0 / np.sqrt(0.5), b0 * np.sqrt(0.5)
    np.testing.assert_allclose(a[0], [4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2], rtol=1e-6)
    h, w = b0 / np.sqrt(2.0), b0 * np.sqrt(2.0)
    np.testing.assert_allclose(a[1], [4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2], rtol=1e-6)
    b1 = 32.0 * np.sqrt(2.0)  # scale index 1
    h, w = b1 / np.sqrt(0.5), b1 * np.sqrt(0.5)
    np.testing.assert_allclose(a[2], [4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2], rtol=1e-6)
    # next location is x + stride (row-major: x inner)
    np.testing.assert_allclose(a[4] - a[0], [0, 8, 0, 8], atol=1e-5)
    # the row below starts after 4 locations (32/8)
    np.testing.assert_allclose(a[4 * 4] - a[0], [8, 0, 8, 0], atol=1e-5)


def test_rejects_size_not_multiple_of_stride():
    with pytest.raises(ValueError, match="multiple"):
        generate_anchors(100, 3, 5, 1, (1.0,), 4.0)
