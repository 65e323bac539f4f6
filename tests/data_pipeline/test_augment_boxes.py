"""Augmented boxes must cover exactly the pixels of their object (both backends)."""

import cv2
import numpy as np
import pytest
from datapipe_helpers import colour_extent

from detector.data import augment_tf
from detector.data.augment import Processor
from detector.data.records import PipelineStats

H, W = 120, 200
# Two solid rectangles in unique colours on black: red [x, y, w, h], blue.
BOXES = np.array([[50, 30, 40, 40], [150, 80, 30, 25]], np.float64)
COLOURS = [(255, 0, 0), (0, 0, 255)]  # RGB


def _png() -> bytes:
    img = np.zeros((H, W, 3), np.uint8)
    for (x, y, w, h), c in zip(BOXES.astype(int), COLOURS):
        img[y:y + h, x:x + w] = c
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def _fields():
    return (BOXES, np.array([0, 1], np.int32), np.zeros(2, bool), np.array([1600.0, 750.0]),
            np.array([10.0, -1.0], np.float32))


def _cfg(smoke_cfg, backend):
    return smoke_cfg(f"data.augment.backend={backend}", "data.augment.scale=[0.6, 1.6]",
                     "data.augment.crop_prob=0.5", "data.augment.brightness=0", "data.augment.contrast=0",
                     "data.augment.hue_saturation=0").data


def _run(data_cfg, backend, seed):
    """(image uint8 [S,S,3], boxes yxyx [n,4], classes [n], depth [n], scale) of one sample."""
    if backend == "albumentations":
        out = Processor(data_cfg, training=True)(_png(), b"rects.png", *_fields(), seed)
        ok, image, boxes, _, classes, _, _, depth, n, scale, _ = out
    else:
        out = augment_tf.tf_train(_png(), *_fields(), np.array([0, seed], np.int64), data_cfg)
        out = {k: v.numpy() for k, v in out.items()}
        image, boxes, classes, depth, n, scale = (out[k] for k in ("image", "boxes", "classes", "depth",
                                                                   "num_boxes", "scale"))
    return image, boxes[:n], classes[:n], depth[:n], float(scale)


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_boxes_match_pixels_after_flip_zoom_crop(smoke_cfg, backend):
    data_cfg = _cfg(smoke_cfg, backend)
    red_x, scales, kept = set(), [], 0
    for seed in range(24):
        image, boxes, classes, depth, scale = _run(data_cfg, backend, seed)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        scales.append(scale)
        for k, colour in enumerate(COLOURS):
            extent, count = colour_extent(image, colour)
            rows = np.flatnonzero(classes == k)
            if len(rows) == 0:   # dropped: at most min_visibility (0.3) of it was left
                assert count <= 0.3 * BOXES[k, 2] * BOXES[k, 3] * scale**2 + 4 * 128, (seed, k)
                continue
            kept += 1
            np.testing.assert_allclose(boxes[rows[0]], extent, atol=1.5, err_msg=f"seed {seed} class {k}")
            if k == 0:
                red_x.add(round(float(boxes[rows[0], 1])))
                # Pinhole-consistent depth: shown `zoom` times larger -> `zoom` times nearer.
                zoom = scale * W / 128
                np.testing.assert_allclose(depth[rows[0]] * zoom, 10.0, rtol=1e-4)
            else:
                assert depth[rows[0]] == -1.0
    assert kept >= 30
    assert max(scales) / min(scales) > 1.5       # zoom varied
    assert len(red_x) > 5                         # positions varied (flip, crop, zoom)


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_eval_letterbox(smoke_cfg, backend):
    data_cfg = smoke_cfg(f"data.augment.backend={backend}").data
    fields = _fields()
    if backend == "albumentations":
        ok, image, boxes, xywh, classes, crowd, area, depth, n, scale, hw = Processor(data_cfg, False)(
            _png(), b"rects.png", *fields, 0)
    else:
        o = {k: v.numpy() for k, v in augment_tf.tf_eval(_png(), *fields, data_cfg).items()}
        image, boxes, xywh, classes, area, n, scale, hw = (o[k] for k in (
            "image", "boxes", "boxes_xywh", "classes", "area", "num_boxes", "scale", "original_size"))
    s = 128 / 200
    assert n == 2 and scale == pytest.approx(s) and list(hw) == [H, W]
    np.testing.assert_array_equal(xywh[:2], BOXES)             # untouched annotation values
    assert xywh.dtype == np.float64 and list(area[:2]) == [1600.0, 750.0]
    np.testing.assert_allclose(boxes[0], [30 * s, 50 * s, 70 * s, 90 * s], rtol=1e-6)
    np.testing.assert_array_equal(classes[2:], -1)
    assert not image[round(H * s):].any()                       # padding rows are 0
    extent, _ = colour_extent(image, COLOURS[0])
    np.testing.assert_allclose(boxes[0], extent, atol=1.0)


def test_degenerate_outside_and_corrupt_are_counted(smoke_cfg):
    data_cfg = smoke_cfg("data.augment.crop_prob=0").data
    boxes = np.array([[10, 10, 0, 5], [250, 10, 20, 20], [-30, -30, 20, 20], [50, 30, 40, 40]], np.float64)
    fields = (boxes, np.array([0, 1, 0, 0], np.int32), np.zeros(4, bool), np.full(4, 9.0), np.full(4, -1, np.float32))
    stats = PipelineStats()
    out = Processor(data_cfg, True, stats)(_png(), b"rects.png", *fields, 3)
    assert out[0] and out[8] == 1 and stats.boxes_degenerate == 3
    # Evaluation keeps every annotation (the COCO GT has them too); they cannot match.
    out = Processor(data_cfg, False, stats)(_png(), b"rects.png", *fields, 3)
    assert out[8] == 4
    np.testing.assert_array_equal(out[3][:4], boxes)
    assert out[2][1, 1] == out[2][1, 3] == 128.0               # clipped to zero width
    bad = Processor(data_cfg, True, stats)(b"\xff\xd8 not a jpeg", b"broken.jpg", *fields, 3)
    assert not bad[0] and stats.images_skipped == 1 and stats.skipped_files == ["broken.jpg"]


def test_hue_saturation_matrix_closed_forms():
    import tensorflow as tf

    identity = augment_tf.hue_saturation_matrix(tf.constant(1.0), tf.constant(0.0)).numpy()
    np.testing.assert_allclose(identity, np.eye(3), atol=1e-5)
    grey = np.array([0.3, 0.3, 0.3], np.float32)
    rgb = np.array([0.8, 0.2, 0.1], np.float32)
    for sat, hue in [(0.7, 0.05), (1.3, -0.2), (0.0, 0.4)]:
        t = augment_tf.hue_saturation_matrix(tf.constant(sat), tf.constant(hue)).numpy()
        np.testing.assert_allclose(t @ grey, grey, atol=1e-5)          # grey stays grey
        luma = np.array([0.299, 0.587, 0.114]) @ rgb
        np.testing.assert_allclose(np.array([0.299, 0.587, 0.114]) @ (t @ rgb), luma, atol=1e-5)
    desaturated = augment_tf.hue_saturation_matrix(tf.constant(0.0), tf.constant(0.1)).numpy() @ rgb
    np.testing.assert_allclose(desaturated, np.full(3, np.array([0.299, 0.587, 0.114]) @ rgb), atol=1e-5)
    # A third of a turn takes a pure red towards green: green becomes the largest channel.
    red = augment_tf.hue_saturation_matrix(tf.constant(1.0), tf.constant(1 / 3)).numpy() @ np.array([1.0, 0, 0])
    assert np.argmax(red) == 1


def test_tf_colour_jitter_keeps_padding_black_and_varies_colour(smoke_cfg):
    data_cfg = smoke_cfg("data.augment.backend=tf", "data.augment.scale=[0.5, 0.6]", "data.augment.crop_prob=0",
                         "data.augment.brightness=0.2", "data.augment.contrast=0.2",
                         "data.augment.hue_saturation=0.1").data
    reds = []
    for seed in range(8):
        out = augment_tf.tf_train(_png(), *_fields(), np.array([0, seed], np.int64), data_cfg)
        image, scale = out["image"].numpy(), float(out["scale"])
        h, w = round(H * scale), round(W * scale)
        assert not image[h + 1:].any() and not image[:, w + 1:].any()   # padding untouched by colour
        y0, x0, y1, x1 = out["boxes"].numpy()[0]
        reds.append(image[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2].reshape(-1, 3).mean(0))
    reds = np.array(reds)
    assert (reds[:, 0] > reds[:, 1:].max(1)).all()     # still red
    assert np.ptp(reds[:, 0]) > 10                      # but jittered
