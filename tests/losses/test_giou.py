"""GIoU box loss (loss.box_loss: giou): anchor-free decoding, closed forms, masking, gradients, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from overlap_helpers import np_giou, random_anchors

from detector.config import ConfigError, LossConfig, from_dict
from detector.losses import (
    DetectionLoss,
    MultiTaskRegressionLoss,
    count_positives,
    giou_loss_from_codes,
    regression_per_anchor,
    unit_decode,
)
from detector.targets.box_coder import decode
from detector.testing import check_gradients

FACTORS = (10.0, 10.0, 5.0, 5.0)
CLIP = np.log(1000 / 16)


def _np_decode(codes, anchors, factors=FACTORS):
    """Box coder decode in numpy: codes [..., 4] against yxyx anchors [..., 4]."""
    sy, sx, sh, sw = factors
    ha, wa = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    yca, xca = anchors[..., 0] + 0.5 * ha, anchors[..., 1] + 0.5 * wa
    yc = codes[..., 0] / sy * ha + yca
    xc = codes[..., 1] / sx * wa + xca
    h = np.exp(np.minimum(codes[..., 2] / sh, CLIP)) * ha
    w = np.exp(np.minimum(codes[..., 3] / sw, CLIP)) * wa
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)


def _case(seed=0, b=2, n=30, c=3):
    rng = np.random.default_rng(seed)
    cls = rng.choice([-2, -1, 0, 1, 2], size=(b, n), p=[0.1, 0.4, 0.2, 0.2, 0.1]).astype(np.int32)
    targets = {"cls": cls, "box": rng.normal(0, 2, (b, n, 4)).astype(np.float32),
               "depth": np.zeros((b, n), np.float32), "depth_mask": np.zeros((b, n), np.float32)}
    outputs = {"cls_logits": rng.normal(0, 2, (b, n, c)).astype(np.float32),
               "box": rng.normal(0, 2, (b, n, 4)).astype(np.float32),
               "depth": np.zeros((b, n), np.float32)}
    return targets, outputs


@pytest.mark.parametrize("factors", [FACTORS, (1.0, 2.0, 3.0, 0.5)])
def test_unit_anchor_giou_equals_giou_against_real_anchors(factors):
    """The invariance argument: decoding against the unit anchor gives the GIoU of the
    boxes decoded against the real anchor (random anchors, aspect ratios, codes)."""
    rng = np.random.default_rng(1)
    n = 500
    anchors = random_anchors(rng, n)
    scale = np.array(factors)
    pred = rng.normal(0, 0.5, (n, 4)) * scale     # offsets ~0.5 anchor sides, sizes e^{+-0.5}
    target = rng.normal(0, 0.5, (n, 4)) * scale
    pred[:50, :2] += 3.0 * scale[:2]              # some far away: disjoint, GIoU < 0
    ref = 1.0 - np_giou(_np_decode(pred, anchors, factors), _np_decode(target, anchors, factors))
    assert (ref > 1.0).sum() >= 40 and (ref < 0.5).any()
    got = giou_loss_from_codes(pred.astype(np.float32), target.astype(np.float32), factors).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
    # float64 in, float64 out (and then tighter)
    np.testing.assert_allclose(giou_loss_from_codes(pred, target, factors).numpy(), ref, atol=1e-12)
    # unit_decode is the box coder's decode against the unit anchor
    unit = np.array([-0.5, -0.5, 0.5, 0.5], np.float32)
    np.testing.assert_allclose(unit_decode(pred.astype(np.float32), factors).numpy(),
                               decode(pred.astype(np.float32), unit, factors).numpy(), rtol=1e-5, atol=1e-5)


def test_identical_boxes_zero_and_disjoint_closed_form():
    rng = np.random.default_rng(2)
    codes = rng.normal(0, 3, (64, 4)).astype(np.float32)
    np.testing.assert_allclose(giou_loss_from_codes(codes, codes).numpy(), 0.0, atol=1e-6)
    # Unit anchor: target = the anchor itself [-.5, -.5, .5, .5]; pred = the same box moved
    # down by 2 anchor heights (ty = 2 * sy) -> [1.5, -.5, 2.5, .5]: no overlap, union 2,
    # enclosing box 3 x 1, GIoU = 0 - (3 - 2) / 3, loss 4/3.
    target = np.zeros((1, 4), np.float32)
    pred = np.array([[20.0, 0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(giou_loss_from_codes(pred, target).numpy(), [4.0 / 3.0], rtol=1e-6)
    # The same codes against a real, elongated anchor give the same closed-form value.
    anchor = np.array([[84.0, 46.0, 116.0, 54.0]])    # h 32, w 8, centre (100, 50)
    boxes = _np_decode(pred.astype(np.float64), anchor), _np_decode(target.astype(np.float64), anchor)
    np.testing.assert_allclose(boxes[0], [[148.0, 46.0, 180.0, 54.0]])
    np.testing.assert_allclose(1.0 - np_giou(*boxes), [4.0 / 3.0], rtol=1e-12)
    # Height doubled, same centre (th = sh * log 2): IoU 1/2, enclosing = pred, loss 1/2.
    pred2 = np.array([[0.0, 0.0, 5.0 * np.log(2.0), 0.0]], np.float32)
    np.testing.assert_allclose(giou_loss_from_codes(pred2, target).numpy(), [0.5], rtol=1e-6)


def test_regression_per_anchor_giou_matches_numpy_over_positives():
    t, o = _case(3)
    box, depth = regression_per_anchor(t, o, box_loss="giou", box_scale_factors=FACTORS)
    unit = np.array([-0.5, -0.5, 0.5, 0.5])
    ref = 1.0 - np_giou(_np_decode(o["box"].astype(np.float64), unit), _np_decode(t["box"].astype(np.float64), unit))
    ref = np.where(t["cls"] >= 0, ref, 0.0)
    np.testing.assert_allclose(box.numpy(), ref, atol=1e-5)
    assert np.all(depth.numpy() == 0)


def test_negatives_and_ignored_contribute_nothing():
    t, o = _case(4)
    loss = MultiTaskRegressionLoss(box_loss="giou")
    base = loss.task_sums(t, o)[0].numpy()
    neg = t["cls"] < 0
    assert neg.any() and (t["cls"] == -2).any() and (t["cls"] >= 0).any()
    t2 = {k: v.copy() for k, v in t.items()}
    t2["box"][neg] = np.nan           # garbage targets where nothing is supervised
    o2 = {k: v.copy() for k, v in o.items()}
    o2["box"][neg] = [1e6, -1e6, 1e6, -1e6]
    with tf.GradientTape() as tape:
        pb = tf.constant(o2["box"])
        tape.watch(pb)
        box = loss.task_sums(t2, {**o2, "box": pb})[0]
    np.testing.assert_allclose(box.numpy(), base, rtol=1e-6)
    grad = tape.gradient(box, pb).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad[neg] == 0) and np.any(grad[~neg] != 0)
    # no positives at all: exactly 0
    empty = {**t, "cls": -np.ones_like(t["cls"])}
    assert loss.task_sums(empty, o)[0].numpy() == 0.0


def test_gradients_finite_for_extreme_codes():
    target = np.zeros((6, 4), np.float32)
    target[1] = [3.0, -2.0, 1.0, -1.0]
    pred = np.array([[0.0, 0.0, 100.0, 0.0],       # th = 100: clipped before exp
                     [0.0, 0.0, 0.0, 100.0],
                     [0.0, 0.0, -100.0, -100.0],   # tiny box
                     [1e4, -1e4, 0.0, 0.0],        # far away
                     [0.0, 0.0, 1e4, -1e4],
                     [0.0, 0.0, 0.0, 0.0]], np.float32)
    pred_t = tf.constant(pred)
    with tf.GradientTape() as tape:
        tape.watch(pred_t)
        loss = giou_loss_from_codes(pred_t, target)
        total = tf.reduce_sum(loss)
    assert np.all(np.isfinite(loss.numpy())) and np.all(loss.numpy() >= 0) and np.all(loss.numpy() < 2)
    assert np.all(np.isfinite(tape.gradient(total, pred_t).numpy()))
    # Through DetectionLoss: analytic vs numerical gradients at moderate codes (float64).
    t, o = _case(5, b=1, n=12, c=2)
    det = DetectionLoss(LossConfig(box_loss="giou"))

    def fn(logits, box):
        return det(t, {"cls_logits": logits, "box": box, "depth": o["depth"]}, count_positives(t))["total"]

    check_gradients(fn, (o["cls_logits"], o["box"] * 0.5))


def test_detection_loss_giou_hand_made():
    # 4 anchors, 1 class: two positives, one background, one ignored; all logits 0
    # (p = 1/2): focal per positive 0.25 * 0.25 * ln 2, per negative 0.75 * 0.25 * ln 2.
    t = {"cls": np.array([[0, 0, -1, -2]], np.int32),
         "box": np.zeros((1, 4, 4), np.float32),
         "depth": np.zeros((1, 4), np.float32), "depth_mask": np.zeros((1, 4), np.float32)}
    pred_box = np.zeros((1, 4, 4), np.float32)
    pred_box[0, 0] = [20.0, 0.0, 0.0, 0.0]              # disjoint: 4/3
    pred_box[0, 1] = [0.0, 0.0, 5.0 * np.log(2.0), 0.0]  # height x2: 1/2
    pred_box[0, 2:] = 50.0                              # not supervised
    o = {"cls_logits": np.zeros((1, 4, 1), np.float32), "box": pred_box, "depth": np.zeros((1, 4), np.float32)}
    loss = DetectionLoss(LossConfig(box_loss="giou", box_weight=2.0, cls_weight=1.0))
    out = {k: v.numpy() for k, v in loss(t, o, count_positives(t)).items()}
    box = (4.0 / 3.0 + 0.5) / 2.0
    cls = (2 * 0.0625 + 0.1875) * np.log(2.0) / 2.0
    np.testing.assert_allclose([out["box"], out["cls"], out["depth"]], [box, cls, 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["total"], cls + 2.0 * box, rtol=1e-6)
    # The scale factors are used: with (1, 1, 1, 1) the same boxes are codes (2, 0, 0, 0) and (0, 0, log 2, 0).
    unit = DetectionLoss(LossConfig(box_loss="giou"), box_scale_factors=(1.0, 1.0, 1.0, 1.0))
    o1 = {**o, "box": pred_box / np.array([10.0, 10.0, 5.0, 5.0], np.float32)}
    np.testing.assert_allclose(unit(t, o1, 2.0)["box"].numpy(), box, rtol=1e-6)
    assert abs(unit(t, o, 2.0)["box"].numpy() - box) > 0.1
    # huber (the default) on the same example is a different number
    assert abs(DetectionLoss(LossConfig())(t, o, 2.0)["box"].numpy() - box) > 0.1


def test_giou_serialization_round_trip():
    loss = MultiTaskRegressionLoss(box_loss="giou", box_scale_factors=(8.0, 8.0, 4.0, 4.0))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert clone.get_config() == loss.get_config()
    assert clone.box_loss == "giou" and clone.box_scale_factors == (8.0, 8.0, 4.0, 4.0)
    det = DetectionLoss(LossConfig(box_loss="giou"), box_scale_factors=(8.0, 8.0, 4.0, 4.0))
    back = DetectionLoss.from_config(det.get_config())
    assert back.cfg == det.cfg and back.box_scale_factors == (8.0, 8.0, 4.0, 4.0)
    assert DetectionLoss().box_scale_factors == FACTORS
    with pytest.raises(ValueError, match="box_loss"):
        MultiTaskRegressionLoss(box_loss="iou")
    with pytest.raises(ValueError, match="box_scale_factors"):
        MultiTaskRegressionLoss(box_scale_factors=(10.0, 10.0, 5.0))


def test_config_box_loss_values():
    base = {"data": {"classes": ["a"]}}
    assert from_dict(base).loss.box_loss == "huber"
    assert from_dict(base, ["loss.box_loss=giou"]).loss.box_loss == "giou"
    with pytest.raises(ConfigError, match=r"loss\.box_loss: expected one of 'huber' \| 'giou', got 'iou'"):
        from_dict(base, ["loss.box_loss=iou"])
