"""Box/depth regression masking, DetectionLoss normalisation, fixed vs uncertainty weighting."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.config import LossConfig
from detector.losses import (
    DetectionLoss,
    MultiTaskRegressionLoss,
    TaskUncertainty,
    count_positives,
    depth_of_class,
    focal_loss_per_anchor,
    huber,
)
from detector.testing import check_gradients


def _np_huber(e, d):
    a = np.abs(e)
    return np.where(a <= d, 0.5 * e**2, d * (a - 0.5 * d))


def _case(seed=0, b=2, n=40, c=3):
    rng = np.random.default_rng(seed)
    cls = rng.choice([-2, -1, 0, 1, 2], size=(b, n), p=[0.1, 0.5, 0.15, 0.15, 0.1]).astype(np.int32)
    has_depth = ((cls >= 0) & (rng.random((b, n)) < 0.6)).astype(np.float32)
    targets = {"cls": cls, "box": (rng.normal(size=(b, n, 4)) * 2).astype(np.float32),
               "depth": np.where(has_depth > 0, rng.normal(2, 0.5, (b, n)), 0).astype(np.float32),
               "depth_mask": has_depth}
    outputs = {"cls_logits": rng.normal(size=(b, n, c)).astype(np.float32) * 2,
               "box": (rng.normal(size=(b, n, 4)) * 2).astype(np.float32),
               "depth": rng.normal(2, 1.5, (b, n)).astype(np.float32)}
    return targets, outputs


def _np_terms(t, o, delta=1.0, depth_loss="huber"):
    pos = t["cls"] >= 0
    box = (_np_huber(o["box"] - t["box"], delta).sum(-1) * pos).sum()
    e = o["depth"] - t["depth"]
    per = _np_huber(e, delta) if depth_loss == "huber" else 0.5 * e**2
    return box, (per * (t["depth_mask"] > 0)).sum()


def test_huber_closed_form():
    e = np.array([-3.0, -1.0, -0.2, 0.0, 0.5, 1.0, 2.5], np.float32)
    np.testing.assert_allclose(huber(e, 1.0).numpy(), _np_huber(e, 1.0), rtol=1e-6)
    np.testing.assert_allclose(huber(e, 0.1).numpy(), _np_huber(e, 0.1), rtol=1e-6)
    np.testing.assert_allclose(huber(e, 1.0).numpy(), keras.losses.Huber(reduction=None)(
        np.zeros((7, 1)), e[:, None]).numpy(), rtol=1e-6)


@pytest.mark.parametrize("depth_loss", ["huber", "squared"])
def test_regression_sums_match_numpy(depth_loss):
    t, o = _case()
    loss = MultiTaskRegressionLoss(huber_delta=0.5, depth_loss=depth_loss)
    box, depth = (v.numpy() for v in loss.task_sums(t, o))
    ref_box, ref_depth = _np_terms(t, o, 0.5, depth_loss)
    np.testing.assert_allclose([box, depth], [ref_box, ref_depth], rtol=1e-5)
    # Keras API path: sum of 0.7 * box + 0.3 * depth per anchor
    np.testing.assert_allclose(loss(t, o).numpy(), 0.7 * ref_box + 0.3 * ref_depth, rtol=1e-5)


def test_masked_anchors_contribute_nothing():
    t, o = _case(1)
    base_box, base_depth = (v.numpy() for v in MultiTaskRegressionLoss().task_sums(t, o))
    neg = t["cls"] < 0
    no_depth = t["depth_mask"] == 0
    assert neg.any() and (no_depth & (t["cls"] >= 0)).any()
    t2 = {k: v.copy() for k, v in t.items()}
    t2["box"][neg] = np.nan        # garbage box targets on non-positives
    t2["depth"][no_depth] = np.inf  # objects without depth (COCO-like)
    o2 = {k: v.copy() for k, v in o.items()}
    o2["box"][neg] = 1e6           # wild predictions where nothing is supervised
    o2["depth"][no_depth] = -1e6
    loss = MultiTaskRegressionLoss()
    with tf.GradientTape() as tape:
        pb, pd = tf.constant(o2["box"]), tf.constant(o2["depth"])
        tape.watch([pb, pd])
        box, depth = loss.task_sums(t2, {"box": pb, "depth": pd})
        total = box + depth
    np.testing.assert_allclose([box.numpy(), depth.numpy()], [base_box, base_depth], rtol=1e-6)
    gb, gd = tape.gradient(total, [pb, pd])
    assert np.all(np.isfinite(gb.numpy())) and np.all(np.isfinite(gd.numpy()))
    assert np.all(gb.numpy()[neg] == 0) and np.all(gd.numpy()[no_depth] == 0)


def test_per_class_depth_reads_the_target_class():
    """[B, N, C] depth (model.depth_per_class): the loss sees the target class's entry,
    exactly as a [B, N] output holding those entries."""
    t, o = _case(3)
    c = 5
    rng = np.random.default_rng(7)
    per_class = rng.normal(2.0, 1.0, o["depth"].shape + (c,)).astype(np.float32)
    t["cls"] = np.where(t["cls"] >= 0, rng.integers(0, c, t["cls"].shape), t["cls"]).astype(np.int32)
    picked = np.take_along_axis(per_class, np.maximum(t["cls"], 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(depth_of_class(per_class, t["cls"]).numpy(), picked, rtol=1e-6)
    loss = MultiTaskRegressionLoss()
    got = [v.numpy() for v in loss.task_sums(t, {**o, "depth": per_class})]
    ref = _np_terms(t, {**o, "depth": picked})
    assert ref[1] > 0
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # A [B, N] output passes through unchanged.
    np.testing.assert_array_equal(depth_of_class(o["depth"], t["cls"]).numpy(), o["depth"])


def test_no_depth_dataset_gives_zero_depth_term():
    t, o = _case(2)
    t["depth_mask"][:] = 0
    out = DetectionLoss(LossConfig())(t, o, count_positives(t))
    assert out["depth"].numpy() == 0.0 and out["box"].numpy() > 0


def test_count_positives():
    cls = np.array([[0, -1, -2, 3], [2, 2, -1, -1]], np.int32)
    assert count_positives({"cls": cls}).numpy() == 4.0


@pytest.mark.parametrize("num_positives", [None, 0.0, 37.0])
def test_detection_loss_fixed_closed_form(num_positives):
    t, o = _case(3)
    cfg = LossConfig(cls_weight=1.5, box_weight=0.7, depth_weight=0.3, huber_delta=1.0)
    n = float((t["cls"] >= 0).sum()) if num_positives is None else num_positives
    out = {k: v.numpy() for k, v in DetectionLoss(cfg)(t, o, n).items()}
    norm = max(n, 1.0)
    cls = focal_loss_per_anchor(t["cls"], o["cls_logits"]).numpy().sum() / norm
    box, depth = (v / norm for v in _np_terms(t, o))
    np.testing.assert_allclose([out["cls"], out["box"], out["depth"]], [cls, box, depth], rtol=1e-5)
    np.testing.assert_allclose(out["total"], 1.5 * cls + 0.7 * box + 0.3 * depth, rtol=1e-5)


def test_uncertainty_weighting_closed_form_and_gradients():
    t, o = _case(4)
    cfg = LossConfig(weighting="uncertainty")
    fixed = DetectionLoss(dataclasses.replace(cfg, weighting="fixed"))(t, o, 20.0)
    loss = DetectionLoss(cfg)
    assert loss.trainable_variables and loss.trainable_variables[0].shape == (3,)
    # s = 0 at initialisation: identical to the fixed weighting
    np.testing.assert_allclose(loss(t, o, 20.0)["total"].numpy(), fixed["total"].numpy(), rtol=1e-6)
    s = np.array([0.5, -0.3, 1.0], np.float32)
    loss.task_uncertainty.log_variance.assign(s)
    with tf.GradientTape() as tape:
        out = loss(t, o, 20.0)
    terms = np.array([out["cls"].numpy(), out["box"].numpy(), out["depth"].numpy()])
    w = np.array([1.0, 0.7, 0.3])
    np.testing.assert_allclose(out["total"].numpy(), (np.exp(-s) * w * terms + s).sum(), rtol=1e-5)
    grad = tape.gradient(out["total"], loss.task_uncertainty.log_variance).numpy()
    np.testing.assert_allclose(grad, 1.0 - np.exp(-s) * w * terms, rtol=1e-5)
    assert np.all(grad != 0)


def test_task_uncertainty_layer_is_shared_when_given():
    layer = TaskUncertainty()
    layer.build()
    loss = DetectionLoss(LossConfig(weighting="uncertainty"), task_uncertainty=layer)
    assert loss.task_uncertainty is layer
    assert DetectionLoss(LossConfig(), task_uncertainty=layer).task_uncertainty is None  # fixed ignores it


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_detection_loss_gradients_extreme_and_empty(weighting):
    t, o = _case(5, b=1, n=12, c=2)
    o["cls_logits"][0, :3] = [[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0]]
    loss = DetectionLoss(LossConfig(weighting=weighting))

    def total(logits, box, depth):
        return loss(t, {"cls_logits": logits, "box": box, "depth": depth}, count_positives(t))["total"]

    check_gradients(total, (o["cls_logits"], o["box"], o["depth"]))
    # all-zero targets: no positives, no depth, zero codes (an empty image)
    empty = {"cls": -np.ones_like(t["cls"]), "box": np.zeros_like(t["box"]),
             "depth": np.zeros_like(t["depth"]), "depth_mask": np.zeros_like(t["depth_mask"])}

    def total_empty(logits, box, depth):
        return loss(empty, {"cls_logits": logits, "box": box, "depth": depth}, 0.0)["total"]

    report = check_gradients(total_empty, (o["cls_logits"], o["box"], o["depth"]))
    assert np.isfinite(report.value) and report.value > 0


def test_regression_loss_config_round_trip():
    loss = MultiTaskRegressionLoss(box_weight=0.6, depth_weight=0.4, huber_delta=0.2, depth_loss="squared")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert clone.get_config() == loss.get_config()
    det = DetectionLoss(LossConfig(huber_delta=0.3, weighting="uncertainty"))
    assert DetectionLoss.from_config(det.get_config()).cfg == det.cfg
