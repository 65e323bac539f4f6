"""Quality focal loss (loss.cls_loss: quality_focal): closed forms, relation to focal, masking,
gradients, the IoU quality fed by DetectionLoss, no gradient into the boxes, config."""

import numpy as np
import pytest
import tensorflow as tf
from overlap_helpers import np_iou, random_anchors

from detector.config import ConfigError, LossConfig, from_dict
from detector.losses import (
    DetectionLoss,
    count_positives,
    focal_loss_per_anchor,
    iou,
    positive_iou_from_codes,
    quality_focal_loss_per_anchor,
)
from detector.targets.box_coder import decode
from detector.testing import check_gradients

FACTORS = (10.0, 10.0, 5.0, 5.0)


def _np_qfl(ids, logits, quality, beta=2.0):
    """Textbook form: BCE(x, y) |y - sigmoid(x)|^beta, y = q on the positive's class, else 0."""
    x = logits.astype(np.float64)
    q = np.where(ids >= 0, np.clip(np.nan_to_num(quality.astype(np.float64)), 0.0, 1.0), 0.0)
    y = (ids[..., None] == np.arange(x.shape[-1])) * q[..., None]
    p = 1.0 / (1.0 + np.exp(-x))
    bce = np.logaddexp(0.0, x) - y * x  # = -(y log p + (1 - y) log(1 - p)), finite for any x
    per_anchor = (bce * np.abs(y - p) ** beta).sum(-1)
    return np.where(ids == -2, 0.0, per_anchor)


def _case(seed=0, b=2, n=30, c=3, code_scale=0.5):
    rng = np.random.default_rng(seed)
    cls = rng.choice([-2, -1, 0, 1, 2], size=(b, n), p=[0.1, 0.4, 0.2, 0.2, 0.1]).astype(np.int32)
    scale = np.array(FACTORS, np.float32) * code_scale
    targets = {"cls": cls, "box": (rng.normal(0, 1, (b, n, 4)) * scale).astype(np.float32),
               "depth": np.zeros((b, n), np.float32), "depth_mask": np.zeros((b, n), np.float32)}
    outputs = {"cls_logits": rng.normal(0, 2, (b, n, c)).astype(np.float32),
               "box": (rng.normal(0, 1, (b, n, 4)) * scale).astype(np.float32),
               "depth": np.zeros((b, n), np.float32)}
    return targets, outputs


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0])
def test_per_anchor_matches_numpy_hand_made(beta):
    # 6 anchors, 3 classes: positives of known quality (0.6, 1, 0, and 1.3 / -0.2 which are
    # clipped to 1 / 0), background (its quality is garbage: NaN), ignored (NaN too).
    ids = np.array([[0, 2, 1, -1, -2, 0, 1]], np.int32)
    quality = np.array([[0.6, 1.0, 0.0, np.nan, np.nan, 1.3, -0.2]], np.float32)
    logits = np.array([[[0.4, -1.0, 2.0], [-3.0, 0.5, 1.5], [1.0, -2.0, 0.0], [0.3, -0.7, 2.5],
                        [9.0, -9.0, 0.0], [2.0, 0.0, -1.0], [-1.0, 0.5, 0.5]]], np.float32)
    got = quality_focal_loss_per_anchor(ids, logits, quality, beta).numpy()
    ref = _np_qfl(ids, logits, quality, beta)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert got[0, 4] == 0.0 and np.all(np.isfinite(got))
    # One entry by hand: anchor 0, class 0, y = 0.6, x = 0.4.
    p = 1.0 / (1.0 + np.exp(-0.4))
    by_hand = -(0.6 * np.log(p) + 0.4 * np.log(1 - p)) * abs(0.6 - p) ** beta
    negatives = _np_qfl(np.array([[-1]]), logits[:, :1, 1:], np.zeros((1, 1)), beta)[0, 0]
    np.testing.assert_allclose(got[0, 0], by_hand + negatives, rtol=1e-5)
    # Float class ids (as Keras casts y_true) give the same.
    np.testing.assert_allclose(quality_focal_loss_per_anchor(ids.astype(np.float32), logits, quality, beta).numpy(),
                               got)


def test_random_case_matches_numpy():
    rng = np.random.default_rng(1)
    ids = rng.choice([-2, -1, 0, 1, 2, 3], size=(2, 50)).astype(np.int32)
    logits = (rng.normal(size=(2, 50, 4)) * 4).astype(np.float32)
    quality = rng.uniform(0, 1, (2, 50)).astype(np.float32)
    np.testing.assert_allclose(quality_focal_loss_per_anchor(ids, logits, quality).numpy(),
                               _np_qfl(ids, logits, quality), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [2.0, 1.5, 0.5, 0.0])
def test_quality_one_is_focal_without_alpha(gamma):
    """y = 1 on positives: QFL = BCE * (1 - p_t)^gamma = focal with alpha_t = 1, i.e. twice the
    focal loss with alpha = 0.5 (which weights positives and negatives by 1/2), on every anchor."""
    rng = np.random.default_rng(2)
    ids = rng.choice([-2, -1, 0, 1, 2], size=(2, 40)).astype(np.int32)
    logits = (rng.normal(size=(2, 40, 3)) * 4).astype(np.float32)
    logits[0, :4] = [[50.0, -50.0, 20.0], [-50.0, 50.0, -20.0], [15.0, 15.0, -15.0], [-15.0, -15.0, 15.0]]
    ids[0, :4] = [0, 0, 1, 2]
    qfl = quality_focal_loss_per_anchor(ids, logits, np.ones((2, 40), np.float32), gamma).numpy()
    focal = focal_loss_per_anchor(ids, logits, alpha=0.5, gamma=gamma).numpy()
    np.testing.assert_allclose(qfl, 2.0 * focal, rtol=1e-5, atol=1e-30)
    # ... and the numpy form with alpha dropped (float64, away from the saturated logits)
    x = logits[1].astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    y = (ids[1][:, None] == np.arange(3)).astype(np.float64)
    p_t = np.where(y == 1, p, 1 - p)
    ref = np.where(ids[1] == -2, 0.0, (-(1 - p_t) ** gamma * np.log(p_t)).sum(-1))
    np.testing.assert_allclose(qfl[1], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("beta", [2.0, 0.5, 0.0])
def test_ignored_nothing_and_extreme_logits_finite(beta):
    ids = np.array([[0, 1, -1, -2, -2, 0]], np.int32)
    quality = np.array([[1.0, 0.5, 0.3, np.nan, 0.7, 0.0]], np.float32)
    logits = np.array([[[50.0, -50.0], [-50.0, 50.0], [50.0, 50.0], [50.0, -50.0], [-50.0, 50.0],
                        [-50.0, -50.0]]], np.float32)
    x = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(x)
        per_anchor = quality_focal_loss_per_anchor(ids, x, quality, beta)
        total = tf.reduce_sum(per_anchor)
    values, grad = per_anchor.numpy(), tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
    assert np.all(values[0, 3:5] == 0.0) and np.all(grad[0, 3:5] == 0.0)  # ignored: nothing at all
    # anchor 0: positive at +50 with y = 1 and negative at -50: (almost exactly) no loss
    np.testing.assert_allclose(values[0, 0], 0.0, atol=1e-20)
    # anchor 2: background at +50 on both classes: 2 * 50 (BCE) * 1 (modulator)
    np.testing.assert_allclose(values[0, 2], 100.0, rtol=1e-6)
    np.testing.assert_allclose(values, _np_qfl(ids, logits, quality, beta), rtol=1e-5, atol=1e-20)
    # the ignored entries contribute nothing whatever the logits
    other = logits.copy()
    other[0, 3:5] = [[-7.0, 3.0], [1.0, 1.0]]
    np.testing.assert_allclose(quality_focal_loss_per_anchor(ids, other, quality, beta).numpy(), values)


@pytest.mark.parametrize("beta", [2.0, 0.5])
def test_gradients_numerical(beta):
    rng = np.random.default_rng(3)
    ids = np.array([[0, 1, -1, -2, 2, 0]], np.int32)
    logits = (rng.normal(size=(1, 6, 3)) * 2).astype(np.float32)
    quality = np.array([[0.7, 0.2, 0.0, 0.5, 0.9, 1.0]], np.float32)

    def fn(x):
        return quality_focal_loss_per_anchor(ids, x, quality, beta)

    check_gradients(fn, (logits,))


def test_detection_loss_quality_is_iou_against_real_anchors():
    """The quality fed by DetectionLoss is the IoU of the predicted and target boxes decoded
    against the real anchors with the box coder (random anchors and aspect ratios)."""
    targets, outputs = _case(4, b=2, n=200)
    outputs["box"][0, :30, :2] += 30.0   # some far away: IoU 0
    anchors = random_anchors(np.random.default_rng(5), 200).astype(np.float32)
    det = DetectionLoss(LossConfig(cls_loss="quality_focal"), box_scale_factors=FACTORS)
    quality = det.quality(targets, outputs).numpy()
    ref = np_iou(decode(outputs["box"], anchors, FACTORS).numpy().astype(np.float64),
                  decode(targets["box"], anchors, FACTORS).numpy().astype(np.float64))
    positive = targets["cls"] >= 0
    ref = np.where(positive, ref, 0.0)
    assert (ref[positive] == 0).sum() >= 5 and (ref[positive] > 0.5).sum() >= 5
    np.testing.assert_allclose(quality, ref, atol=2e-5)
    assert quality.dtype == np.float32 and np.all(quality[~positive] == 0)
    # the cls term is the QFL with that quality, normalised by the positive count
    num_pos = count_positives(targets)
    out = det(targets, outputs, num_pos)
    expected = _np_qfl(targets["cls"], outputs["cls_logits"], ref, 2.0).sum() / num_pos.numpy()
    np.testing.assert_allclose(out["cls"].numpy(), expected, rtol=1e-4)
    # the default (focal) is a different number on the same example
    assert abs(DetectionLoss(LossConfig())(targets, outputs, num_pos)["cls"].numpy() - expected) > 1e-3
    # iou() itself on float64 boxes is the closed form
    a = decode(outputs["box"][1], anchors, FACTORS).numpy().astype(np.float64)
    b = decode(targets["box"][1], anchors, FACTORS).numpy().astype(np.float64)
    np.testing.assert_allclose(iou(a, b).numpy(), np_iou(a, b), atol=1e-12)


def test_detection_loss_hand_made():
    # 1 class, all logits 0 (p = 1/2, BCE = ln 2 for any y): positives with IoU 1, 1/2 and 0,
    # background, ignored.  Per anchor: (ln 2) |y - 1/2|^2 -> 1/4 ln 2, 0, 1/4 ln 2, 1/4 ln 2, 0.
    t = {"cls": np.array([[0, 0, 0, -1, -2]], np.int32),
         "box": np.zeros((1, 5, 4), np.float32),
         "depth": np.zeros((1, 5), np.float32), "depth_mask": np.zeros((1, 5), np.float32)}
    pred_box = np.zeros((1, 5, 4), np.float32)
    pred_box[0, 1] = [0.0, 0.0, 5.0 * np.log(2.0), 0.0]  # height x2: IoU 1/2
    pred_box[0, 2] = [20.0, 0.0, 0.0, 0.0]               # moved 2 heights: IoU 0
    pred_box[0, 3:] = 50.0                               # not supervised
    t["box"][0, 3:] = np.nan                              # garbage where nothing is supervised
    o = {"cls_logits": np.zeros((1, 5, 1), np.float32), "box": pred_box, "depth": np.zeros((1, 5), np.float32)}
    det = DetectionLoss(LossConfig(cls_loss="quality_focal"))
    np.testing.assert_allclose(det.quality(t, o).numpy(), [[1.0, 0.5, 0.0, 0.0, 0.0]], atol=1e-6)
    out = det(t, o, count_positives(t))
    np.testing.assert_allclose(out["cls"].numpy(), 3 * 0.25 * np.log(2.0) / 3.0, rtol=1e-6)
    assert np.isfinite(out["total"].numpy())
    # focal_alpha is unused, focal_gamma is beta
    assert DetectionLoss(LossConfig(cls_loss="quality_focal", focal_alpha=0.9))(t, o, 3.0)["cls"].numpy() == \
        out["cls"].numpy()
    beta1 = DetectionLoss(LossConfig(cls_loss="quality_focal", focal_gamma=1.0))(t, o, 3.0)["cls"].numpy()
    np.testing.assert_allclose(beta1, 3 * 0.5 * np.log(2.0) / 3.0, rtol=1e-6)


def test_no_gradient_into_boxes_through_quality_and_extreme_codes():
    targets, outputs = _case(6, b=1, n=12, c=2)
    outputs["box"][0, :6] = [[0.0, 0.0, 100.0, 0.0], [0.0, 0.0, 0.0, 100.0], [0.0, 0.0, -100.0, -100.0],
                             [1e4, -1e4, 0.0, 0.0], [0.0, 0.0, 1e4, -1e4], [1e6, 1e6, 1e6, 1e6]]
    targets["cls"][0, :6] = [0, 1, 0, 1, 0, 1]
    outputs["cls_logits"][0, 6:] = [[50.0, -50.0]] * 6
    det = DetectionLoss(LossConfig(cls_loss="quality_focal", box_loss="giou"))
    logits, box = tf.constant(outputs["cls_logits"]), tf.constant(outputs["box"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logits, box])
        out = det(targets, {**outputs, "cls_logits": logits, "box": box}, count_positives(targets))
    g_cls_box = tape.gradient(out["cls"], box)
    assert g_cls_box is None or np.all(g_cls_box.numpy() == 0)
    g_cls_logits = tape.gradient(out["cls"], logits).numpy()
    assert np.all(np.isfinite(g_cls_logits)) and np.any(g_cls_logits != 0)
    g_total = tape.gradient(out["total"], [logits, box])
    assert all(np.all(np.isfinite(g.numpy())) for g in g_total)
    assert all(np.isfinite(v.numpy()) for v in out.values())
    # The box gradient of the total is the box term's alone.
    with tf.GradientTape() as tape2:
        tape2.watch(box)
        box_only = det(targets, {**outputs, "box": box}, count_positives(targets))["box"]
    np.testing.assert_allclose(g_total[1].numpy(), 0.7 * tape2.gradient(box_only, box).numpy(),
                               rtol=1e-6, atol=1e-10)
    # Analytic vs numerical gradient w.r.t. the logits through DetectionLoss (float64).
    t, o = _case(7, b=1, n=12, c=2)

    def fn(x):
        return det(t, {**o, "cls_logits": x, "box": tf.cast(o["box"], x.dtype)}, count_positives(t))["cls"]

    check_gradients(fn, (o["cls_logits"],))


def test_positive_iou_from_codes_masks_garbage():
    cls = np.array([[0, -1, -2]], np.int32)
    pred = np.array([[[0.0, 0.0, 0.0, 0.0], [np.nan, 1e9, -1e9, np.inf], [np.inf, 0.0, 0.0, 0.0]]], np.float32)
    target = np.array([[[0.0, 0.0, 5.0 * np.log(2.0), 0.0], [np.nan] * 4, [np.nan] * 4]], np.float32)
    np.testing.assert_allclose(positive_iou_from_codes(cls, pred, target).numpy(), [[0.5, 0.0, 0.0]], atol=1e-6)


def test_serialization_and_config():
    det = DetectionLoss(LossConfig(cls_loss="quality_focal"), box_scale_factors=(8.0, 8.0, 4.0, 4.0))
    back = DetectionLoss.from_config(det.get_config())
    assert back.cfg == det.cfg and back.cfg.cls_loss == "quality_focal"
    assert back.box_scale_factors == (8.0, 8.0, 4.0, 4.0)
    # a config saved before the option existed still loads (focal)
    old = det.get_config()
    old["loss_cfg"].pop("cls_loss")
    assert DetectionLoss.from_config(old).cfg.cls_loss == "focal"
    with pytest.raises(ValueError, match="cls_loss"):
        DetectionLoss(LossConfig(cls_loss="varifocal"))
    with pytest.raises(ValueError, match="beta"):
        quality_focal_loss_per_anchor(np.zeros((1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1)), beta=-1.0)


def test_config_cls_loss_values():
    base = {"data": {"classes": ["a"]}}
    assert from_dict(base).loss.cls_loss == "focal"
    assert from_dict(base, ["loss.cls_loss=quality_focal"]).loss.cls_loss == "quality_focal"
    with pytest.raises(ConfigError, match=r"loss\.cls_loss: expected one of 'focal' \| 'quality_focal', got 'qfl'"):
        from_dict(base, ["loss.cls_loss=qfl"])
    with pytest.raises(ConfigError, match=r"loss\.cls_loss"):
        from_dict({**base, "loss": {"cls_loss": "varifocal"}})
