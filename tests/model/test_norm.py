"""FusedBatchNorm: same outputs, gradients and statistics as keras BatchNormalization."""

import keras
import numpy as np
import tensorflow as tf

from detector.model.norm import FusedBatchNorm


def _pair(x):
    fused, plain = FusedBatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    fused.build(x.shape)
    plain.build(x.shape)
    rng = np.random.default_rng(1)
    weights = [rng.normal(1, 0.2, 5), rng.normal(0, 0.2, 5), rng.normal(0, 1, 5), rng.uniform(0.5, 2, 5)]
    for layer in (fused, plain):
        layer.set_weights([w.astype(np.float32) for w in weights])
    return fused, plain


def test_training_matches_keras_batch_norm():
    x = tf.constant(np.random.default_rng(0).normal(3, 2, (4, 6, 6, 5)).astype(np.float32))
    fused, plain = _pair(x)
    grads = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.cos(y))
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
        if layer is fused:
            y_fused = y
    np.testing.assert_allclose(y_fused.numpy(), y.numpy(), atol=1e-5)
    for g_f, g_p in zip(*grads):
        np.testing.assert_allclose(g_f.numpy(), g_p.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    # the fused kernel's variance is Bessel-corrected: n / (n - 1) with n = 4*6*6
    n = 4 * 6 * 6
    batch_var = tf.math.reduce_variance(x, axis=[0, 1, 2]).numpy()
    expected = plain.moving_variance.numpy() + 0.1 * batch_var * (n / (n - 1) - 1)
    np.testing.assert_allclose(fused.moving_variance.numpy(), expected, rtol=1e-5)


def test_inference_and_config_are_keras():
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 3, 5)).astype(np.float32))
    fused, plain = _pair(x)
    np.testing.assert_allclose(fused(x, training=False).numpy(), plain(x, training=False).numpy(), atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
    assert isinstance(clone, FusedBatchNorm) and clone.get_config() == fused.get_config()
