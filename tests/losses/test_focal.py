"""FocalLoss against a numpy reference, label conventions, extreme logits, gradients, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.losses import FocalLoss, focal_loss_per_anchor
from detector.testing import check_gradients


def _np_focal(ids, logits, alpha=0.25, gamma=2.0):
    """Textbook form: -alpha_t (1 - p_t)^gamma log(p_t), per anchor summed over classes."""
    x = logits.astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    y = (ids[..., None] == np.arange(x.shape[-1])).astype(np.float64)
    p_t = np.where(y == 1, p, 1 - p)
    a_t = np.where(y == 1, alpha, 1 - alpha)
    per_anchor = (-a_t * (1 - p_t) ** gamma * np.log(p_t)).sum(-1)
    return np.where(ids == -2, 0.0, per_anchor)


def _random_case(seed=0, b=2, n=50, c=4, scale=4.0):
    rng = np.random.default_rng(seed)
    ids = rng.choice([-2, -1, 0, 1, 2, 3][: c + 2], size=(b, n)).astype(np.int32)
    return ids, (rng.normal(size=(b, n, c)) * scale).astype(np.float32)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_matches_numpy_reference(alpha, gamma):
    ids, logits = _random_case()
    ref = _np_focal(ids, logits, alpha, gamma)
    got = focal_loss_per_anchor(ids, logits, alpha, gamma).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    total = FocalLoss(alpha, gamma)(ids, logits).numpy()  # reduction "sum"
    np.testing.assert_allclose(total, ref.sum(), rtol=1e-5)


def test_ignore_and_background_rows():
    logits = np.array([[[3.0, -1.0], [3.0, -1.0], [3.0, -1.0]]], np.float32)
    got = focal_loss_per_anchor(np.array([[-2, -1, 1]]), logits).numpy()[0]
    assert got[0] == 0.0  # ignored anchor: exactly nothing, whatever the logits
    # background: both classes are negatives -> (1-alpha) p^gamma * softplus(x) per class
    p = 1 / (1 + np.exp(-logits[0, 1]))
    np.testing.assert_allclose(got[1], (0.75 * p**2 * np.log1p(np.exp(logits[0, 1]))).sum(), rtol=1e-6)
    # class 1 positive: class 0 negative term + class 1 positive term
    pos = 0.25 * (1 - p[1]) ** 2 * np.log1p(np.exp(1.0))
    np.testing.assert_allclose(got[2], 0.75 * p[0] ** 2 * np.log1p(np.exp(3.0)) + pos, rtol=1e-6)


def test_float_targets_as_keras_passes_them():
    ids, logits = _random_case(1)
    np.testing.assert_allclose(focal_loss_per_anchor(ids.astype(np.float32), logits).numpy(),
                               focal_loss_per_anchor(ids, logits).numpy())


def test_extreme_logits_are_finite_and_exact():
    # [anchor, class]: positive at +100 (no loss), positive at -100 (ce = 100),
    # negative at +100 (ce = 100), negative at -100 (no loss).
    logits = np.array([[[100.0, -100.0], [-100.0, 100.0]]], np.float32)
    ids = np.array([[0, 1]])  # anchor0: class0 pos (+100), class1 neg (-100); anchor1: class1 pos (+100)
    got = focal_loss_per_anchor(ids, logits).numpy()
    np.testing.assert_allclose(got, [[0.0, 0.0]], atol=1e-30)
    flipped = focal_loss_per_anchor(np.array([[1, 0]]), logits).numpy()
    # anchor0: class0 neg at +100 -> 0.75*100, class1 pos at -100 -> 0.25*100
    np.testing.assert_allclose(flipped, [[100.0, 100.0]], rtol=1e-6)
    with tf.GradientTape() as tape:
        x = tf.constant(logits)
        tape.watch(x)
        loss = tf.reduce_sum(focal_loss_per_anchor(np.array([[1, 0]]), x))
    g = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[0, 0], [0.75, -0.25], rtol=1e-6)  # saturated: d ce / dx = +-1


@pytest.mark.parametrize("gamma", [2.0, 0.5, 0.0])
def test_gradients_extreme_logits(gamma):
    ids, logits = _random_case(2, b=1, n=6, c=3, scale=2.0)
    logits[0, 0] = [100.0, -100.0, 100.0]
    logits[0, 1] = [-100.0, 100.0, -100.0]
    ids[0, :3] = [0, 1, -1]
    check_gradients(FocalLoss(gamma=gamma), (ids, logits))


def test_all_background_image_gradients():
    ids = -np.ones((2, 8), np.int32)
    logits = np.random.default_rng(3).normal(size=(2, 8, 3)).astype(np.float32) * 3
    value = FocalLoss()(ids, logits).numpy()
    np.testing.assert_allclose(value, _np_focal(ids, logits).sum(), rtol=1e-5)
    assert value > 0
    check_gradients(FocalLoss(), (ids, logits))


def test_all_ignored_is_zero():
    ids = -2 * np.ones((1, 5), np.int32)
    assert FocalLoss()(ids, np.ones((1, 5, 2), np.float32)).numpy() == 0.0


def test_config_round_trip():
    loss = FocalLoss(alpha=0.3, gamma=1.0)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, FocalLoss) and (clone.alpha, clone.gamma) == (0.3, 1.0)
    ids, logits = _random_case(4)
    np.testing.assert_allclose(clone(ids, logits).numpy(), loss(ids, logits).numpy())
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
