"""Box coder: closed-form codes and decode(encode(b)) round trip."""

import numpy as np

from detector.targets import box_coder


def test_encode_hand_computed():
    anchors = np.array([[0, 0, 10, 20]], np.float32)          # yc=5 xc=10 h=10 w=20
    boxes = np.array([[2, 4, 22, 24]], np.float32)            # yc=12 xc=14 h=20 w=20
    codes = box_coder.encode(boxes, anchors, (10, 10, 5, 5)).numpy()
    np.testing.assert_allclose(codes[0], [7 / 10 * 10, 4 / 20 * 10, np.log(2) * 5, 0.0], atol=1e-5)


def test_round_trip_random():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(0, 200, (500, 2)).astype(np.float32)
    anchors = np.concatenate([anchors, anchors + rng.uniform(4, 120, (500, 2))], 1).astype(np.float32)
    yx = rng.uniform(0, 200, (3, 500, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(1, 150, (3, 500, 2))], -1).astype(np.float32)
    for sf in [(1, 1, 1, 1), (10, 10, 5, 5)]:
        codes = box_coder.encode(boxes, anchors, sf)
        assert codes.shape == (3, 500, 4)
        back = box_coder.decode(codes, anchors, sf).numpy()
        np.testing.assert_allclose(back, boxes, atol=2e-3, rtol=1e-5)


def test_decode_clips_huge_sizes():
    anchors = np.array([[0, 0, 10, 10]], np.float32)
    out = box_coder.decode(np.array([[0, 0, 1e4, 1e4]], np.float32), anchors).numpy()
    assert np.all(np.isfinite(out))
    assert out[0, 2] - out[0, 0] <= 10 * 1000 / 16 + 1e-3
