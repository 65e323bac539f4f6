"""Flip test-time augmentation: the mirror permutation against the grid's structure, and the
averaging against a model that is mirror-equivariant by construction."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from detector.config import EvalConfig, load_config
from detector.model import build_detector, decode_detections
from detector.model.flip_test import flip_averaged_outputs, mirror_permutation
from detector.targets.anchors import generate_anchors

GRID = dict(image_size=256, min_level=3, max_level=6, num_scales=3, aspect_ratios=(0.7, 1.0, 1.4), anchor_size=4.0)


def _structural_mirror(image_size, min_level, max_level, num_scales, aspect_ratios, **_):
    """Reference: per level, the [H, W, A] index block reversed along W."""
    a, out, offset = num_scales * len(aspect_ratios), [], 0
    for level in range(min_level, max_level + 1):
        side = image_size // 2 ** level
        block = np.arange(side * side * a).reshape(side, side, a)[:, ::-1, :]
        out.append(block.reshape(-1) + offset)
        offset += side * side * a
    return np.concatenate(out)


@pytest.mark.parametrize("grid", [GRID, dict(GRID, image_size=128, min_level=3, max_level=5, num_scales=2,
                                              aspect_ratios=(0.5, 1.0, 2.0))])
def test_mirror_permutation_is_the_grid_reversed_along_x(grid):
    anchors = generate_anchors(**grid)
    perm = mirror_permutation(anchors, grid["image_size"])
    np.testing.assert_array_equal(perm, _structural_mirror(**grid))
    np.testing.assert_array_equal(perm[perm], np.arange(len(anchors)))      # an involution
    s = grid["image_size"]
    np.testing.assert_allclose(anchors[perm][:, [1, 3]], s - anchors[:, [3, 1]], atol=1e-4)
    np.testing.assert_allclose(anchors[perm][:, [0, 2]], anchors[:, [0, 2]], atol=1e-4)


def test_mirror_permutation_rejects_an_asymmetric_grid():
    anchors = generate_anchors(**GRID)
    with pytest.raises(ValueError, match=r"no horizontal mirror.*multiple of every level's stride"):
        mirror_permutation(anchors + np.array([0, 3, 0, 3], np.float32), GRID["image_size"])


def _equivariant_model(anchors):
    """Outputs read from the pixels around each anchor centre, exactly mirror-equivariant:
    sums over the two pixels either side of the centre line are symmetric (logits, ty, th,
    tw, depth), their difference (tx) is antisymmetric; anchor w/h make the anchors of one
    location differ."""
    cy = ((anchors[:, 0] + anchors[:, 2]) / 2).round().astype(np.int32)
    cx = ((anchors[:, 1] + anchors[:, 3]) / 2).round().astype(np.int32)
    h = tf.constant(anchors[:, 2] - anchors[:, 0])[None]
    w = tf.constant(anchors[:, 3] - anchors[:, 1])[None]

    def model(images, training=False):
        flat = tf.reshape(images, [tf.shape(images)[0], -1, 3])

        def px(y, x):                                   # [B, N, 3]: the pixel (y, x) of every anchor
            return tf.gather(flat, y * images.shape[2] + x, axis=1)

        p, q = px(cy, cx), px(cy, cx - 1)
        r, t = px(cy - 1, cx), px(cy - 1, cx - 1)
        s = p + q
        box = tf.stack([(s - r - t)[..., 1] * h / 100, (p - q)[..., 2] * w / 100, s[..., 1] * w / 100,
                        s[..., 2] / h], -1)
        return {"cls_logits": (s[..., 0] * w / h)[..., None], "box": box, "depth": s[..., 0] * h / 1000}

    return model


def test_flip_average_leaves_an_equivariant_model_unchanged():
    anchors = generate_anchors(**GRID)
    model = _equivariant_model(anchors)
    images = tf.random.stateless_uniform([2, 256, 256, 3], [1, 2], 0, 255)
    plain = model(images)
    averaged = flip_averaged_outputs(model, images, mirror_permutation(anchors, 256))
    for key in plain:
        np.testing.assert_allclose(averaged[key].numpy(), plain[key].numpy(), rtol=1e-5, atol=1e-4, err_msg=key)
    # the check is sensitive: the identity in place of the mirror changes the outputs
    wrong = flip_averaged_outputs(model, images, np.arange(len(anchors), dtype=np.int32))
    assert np.abs(wrong["box"].numpy() - plain["box"].numpy()).max() > 1.0


def test_keras_runner_flip_test_decodes_the_averaged_outputs(tmp_path):
    from detector.inference.runner import KerasRunner

    cfg = load_config("smoke", [f"data.synthetic.cache_dir={tmp_path}"])
    tf.keras.utils.set_random_seed(3)
    model = build_detector(cfg)
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    eval_cfg = dataclasses.replace(EvalConfig(), flip_test=True, score_threshold=0.0)
    got = KerasRunner(model, eval_cfg)(images)

    # numpy reference of the averaging: the structural mirror, tx negated
    anchors = model.anchors()
    m = cfg.model
    mirror = _structural_mirror(128, m.min_level, m.max_level, m.anchors.num_scales, m.anchors.aspect_ratios)
    plain = {k: v.numpy() for k, v in model(images, training=False).items()}
    flipped = {k: v.numpy()[:, mirror] for k, v in model(images[:, :, ::-1], training=False).items()}
    flipped["box"][..., 1] *= -1
    averaged = {k: (plain[k] + flipped[k]) / 2 for k in plain}
    want = {k: v.numpy() for k, v in decode_detections(averaged, anchors, eval_cfg, m.box_scale_factors).items()}
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
    assert not np.allclose(got["scores"], KerasRunner(model, EvalConfig())(images)["scores"], atol=1e-4)
