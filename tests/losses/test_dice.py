"""DiceLoss against the closed form (numpy), edge cases, gradients, replicas, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.losses.dice import DiceLoss
from detector.testing import check_gradients


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_dice_loss(y, p, smooth, mode, w=None):
    """Closed form: per-class (2I+s)/(S+s), 1 - class mean; batch or per-sample."""
    y, p = y.astype(np.float64), p.astype(np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    wb = w.reshape((-1,) + (1,) * (p.ndim - 1))
    if mode == "batch":
        axes = tuple(range(p.ndim - 1))
        i, s = (wb * p * y).sum(axes), (wb * p).sum(axes) + (wb * y).sum(axes)
        return 1.0 - np.mean((2 * i + smooth) / (s + smooth))
    axes = tuple(range(1, p.ndim - 1))
    i, s = (p * y).sum(axes), p.sum(axes) + y.sum(axes)
    per_sample = 1.0 - np.mean((2 * i + smooth) / (s + smooth), axis=-1)
    return np.sum(w * per_sample) / len(y)  # Keras sum_over_batch_size


@pytest.fixture
def binary_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 4, 5, 1)).astype(np.float32)
    target = (rng.random((3, 4, 5, 1)) > 0.6).astype(np.float32)
    return target, logits


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_binary_matches_closed_form(binary_data, mode, smooth):
    y, x = binary_data
    expected = _np_dice_loss(y, _sigmoid(x.astype(np.float64)), smooth, mode)
    got = DiceLoss(smooth=smooth, reduction_mode=mode)(y, x)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # no channel axis / channel-less y_true give the same number
    got_none = DiceLoss(smooth=smooth, reduction_mode=mode, channel_axis=None)(y[..., 0], x[..., 0])
    got_sparse_true = DiceLoss(smooth=smooth, reduction_mode=mode)(y[..., 0], x)
    np.testing.assert_allclose([float(got_none), float(got_sparse_true)], [float(got)] * 2, rtol=1e-6)


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_multiclass_softmax_and_multilabel_sigmoid(mode):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (2, 6, 3)).astype(np.float32)
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, 6))]
    got = DiceLoss(reduction_mode=mode, activation="softmax")(onehot, x)
    np.testing.assert_allclose(float(got), _np_dice_loss(onehot, _softmax(x.astype(np.float64)), 1.0, mode), rtol=1e-5)
    multihot = (rng.random((2, 6, 3)) > 0.5).astype(np.float32)
    got = DiceLoss(reduction_mode=mode)(multihot, x)
    want = _np_dice_loss(multihot, _sigmoid(x.astype(np.float64)), 1.0, mode)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_hand_computed_values():
    y = np.array([[0.0, 0.0, 1.0, 1.0]])
    perfect = DiceLoss(smooth=0.0, from_logits=False, channel_axis=None)(y, y)
    disjoint = DiceLoss(smooth=1.0, from_logits=False, channel_axis=None)(y, 1.0 - y)
    half = DiceLoss(smooth=0.0, from_logits=False, channel_axis=None)(y, np.full((1, 4), 0.5))
    # perfect: 0; disjoint: 1 - 1/(4+1); half: 1 - 2*1/(2+2)
    np.testing.assert_allclose([float(perfect), float(disjoint), float(half)], [0.0, 0.8, 0.5], atol=1e-7)


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_empty_prediction_and_target_give_zero_loss_and_finite_gradient(mode):
    zeros = tf.zeros((2, 3, 3, 1))
    loss = DiceLoss(smooth=0.0, from_logits=False, reduction_mode=mode)
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        value = loss(zeros, zeros)
    grad = tape.gradient(value, zeros)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad.numpy()))
    # logits -100 with smooth=1: prediction empty up to 1e-43
    assert float(DiceLoss(reduction_mode=mode)(zeros, tf.fill((2, 3, 3, 1), -100.0))) == pytest.approx(0.0, abs=1e-6)


def test_per_sample_empty_sample_contributes_zero():
    y = np.zeros((2, 4, 1), np.float32)
    y[1, :2] = 1.0
    p = np.zeros((2, 4, 1), np.float32)
    p[1] = 0.5
    got = DiceLoss(smooth=0.0, from_logits=False, reduction_mode="per_sample", reduction=None)(y, p)
    np.testing.assert_allclose(got.numpy(), [0.0, 1.0 - 2 * 1.0 / (2.0 + 2.0)], atol=1e-7)


def test_empty_batch_in_batch_mode_is_zero():
    empty = tf.zeros((0, 4, 1))
    assert float(DiceLoss(smooth=0.0)(empty, empty)) == 0.0
    assert float(DiceLoss(smooth=1.0)(empty, empty)) == 0.0


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_sample_weight(binary_data, mode):
    y, x = binary_data
    w = np.array([1.0, 0.0, 2.0], np.float32)
    got = DiceLoss(reduction_mode=mode)(y, x, sample_weight=w)
    np.testing.assert_allclose(float(got), _np_dice_loss(y, _sigmoid(x.astype(np.float64)), 1.0, mode, w), rtol=1e-5)


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_gradients_with_extreme_logits_and_zero_targets(binary_data, mode):
    y, x = binary_data
    x = x.copy()
    x[0, 0, 0, 0], x[0, 0, 1, 0], x[1, 2, 3, 0] = 100.0, -100.0, 100.0
    for smooth in (0.0, 1.0):
        for target in (y, np.zeros_like(y)):
            report = check_gradients(DiceLoss(smooth=smooth, reduction_mode=mode), (target, x))
            assert report.dtype == "float64" and report.max_abs_error < 1e-8
    check_gradients(DiceLoss(reduction_mode=mode, activation="softmax"), (np.eye(3)[[0, 2, 1, 1]], x[0, :, :3, 0]))


def test_batch_mode_under_two_replicas_equals_single_device(two_replica_strategy):
    """Value summed over replicas and per-replica gradients equal the global-batch loss."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5, 2)).astype(np.float32)
    y = (rng.random((4, 5, 2)) > 0.5).astype(np.float32)
    loss = DiceLoss()
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        single = loss(y, xt)
    single_grad = tape.gradient(single, xt).numpy()

    strategy = two_replica_strategy

    def replica_fn(yy, xx):
        with tf.GradientTape() as tape:
            tape.watch(xx)
            value = loss(yy, xx)
        return value, tape.gradient(value, xx)

    def shard(a):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(a[2 * ctx.replica_id_in_sync_group: 2 * ctx.replica_id_in_sync_group + 2]))

    values, grads = tf.function(lambda: strategy.run(replica_fn, args=(shard(y), shard(x))))()
    values = strategy.experimental_local_results(values)
    grads = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
    np.testing.assert_allclose(sum(float(v) for v in values), float(single), rtol=1e-6)
    np.testing.assert_allclose(grads, single_grad, rtol=1e-5, atol=1e-8)


def test_config_round_trip_and_registration(binary_data):
    y, x = binary_data
    loss = DiceLoss(smooth=0.5, reduction_mode="per_sample", activation="sigmoid", name="dice")
    clone = DiceLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == "detector>DiceLoss"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(restored, DiceLoss) and restored.get_config() == loss.get_config()
    assert float(restored(y, x)) == float(loss(y, x))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="smooth"):
        DiceLoss(smooth=-1.0)
    with pytest.raises(ValueError, match="reduction_mode"):
        DiceLoss(reduction_mode="mean")
    with pytest.raises(ValueError, match="softmax"):
        DiceLoss(activation="softmax", channel_axis=None)
