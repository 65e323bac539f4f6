"""check_gradients passes correct gradients and fails broken ones, with clear messages."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.losses.dice import DiceLoss
from detector.testing import check_gradients


def test_passes_on_dice_loss_in_float64():
    rng = np.random.default_rng(0)
    y = (rng.random((2, 5, 1)) > 0.5).astype(np.float32)
    x = rng.normal(size=(2, 5, 1)).astype(np.float32)
    x[0, 0, 0], x[1, 1, 0] = 100.0, -100.0
    report = check_gradients(DiceLoss(), (y, x))
    assert report.dtype == "float64"  # the float32 loss was rebuilt in float64
    assert report.num_checked == 10 and set(report.errors) == {"input 1"}
    assert report.max_abs_error < 1e-9
    assert report.value == pytest.approx(float(DiceLoss()(y, x)), rel=1e-6)


def test_fails_on_wrong_custom_gradient():
    @tf.custom_gradient
    def square(x):
        return x * x, lambda dy: dy * 2.2 * x  # should be 2 x

    with pytest.raises(AssertionError, match=r"w.r.t. input 0 disagrees .*analytic=.*numeric="):
        check_gradients(lambda x: tf.reduce_sum(square(x)), np.array([0.5, -1.0, 2.0]))


def test_fails_on_non_finite_gradient_and_value():
    with pytest.raises(AssertionError, match=r"non-finite entries of 3; first at flat index 1: inf"):
        check_gradients(lambda x: tf.reduce_sum(tf.sqrt(x)), np.array([1.0, 0.0, 4.0]))
    def naive_bce(y, x):
        return -tf.reduce_sum(y * tf.math.log(tf.sigmoid(x)) + (1 - y) * tf.math.log(1 - tf.sigmoid(x)))
    y, x = np.array([1.0, 0.0]), np.array([3.0, 100.0])  # sigmoid(100) == 1.0 -> log(0)
    with pytest.raises(AssertionError, match="value is not finite"):
        check_gradients(naive_bce, (y, x), wrt=(1,))
    def stable(y, x):
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x))
    assert check_gradients(stable, (y, x), wrt=(1,)).max_abs_error < 1e-9


def test_function_with_several_inputs_vector_output_and_subset():
    a, b = np.linspace(-1, 1, 300).reshape(30, 10), np.linspace(0.5, 2, 10)
    report = check_gradients(lambda a, b: tf.tanh(a) * b, (a, b), max_checks=20)
    assert report.num_checked == 20 + 10 and set(report.errors) == {"input 0", "input 1"}
    assert report.max_abs_error < 1e-9


def test_float32_tolerances_when_not_promoted():
    report = check_gradients(lambda x: tf.reduce_sum(tf.sin(x)), np.array([0.1, 0.2], np.float32), dtype=None)
    assert (report.dtype, report.delta, report.atol, report.rtol) == ("float32", 1e-3, 1e-3, 1e-2)


def test_model_weights_and_inputs():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), dtype="float64"),
                              keras.layers.Dense(4, activation="tanh", dtype="float64"),
                              keras.layers.Dense(1, dtype="float64")])
    x = np.random.default_rng(1).normal(size=(5, 3))
    report = check_gradients(model, x, loss=DiceLoss(dtype="float64"), y_true=np.array([[1.0], [0], [1], [0], [0]]))
    assert set(report.errors) == {v.path for v in model.trainable_variables} | {"input 0"}
    assert report.dtype == "float64" and report.max_abs_error < 1e-9


def test_model_with_broken_layer_gradient_fails():
    class BrokenSoftplus(keras.layers.Layer):
        def call(self, x):
            @tf.custom_gradient
            def f(x):
                return tf.math.softplus(x), lambda dy: dy * tf.sigmoid(x) * 1.5

            return f(x)

    model = keras.Sequential([keras.Input((2,), dtype="float64"), keras.layers.Dense(2, dtype="float64"),
                              BrokenSoftplus(dtype="float64")])
    with pytest.raises(AssertionError, match="disagrees with finite differences"):
        check_gradients(model, np.ones((3, 2)), wrt="weights")


def test_hidden_float32_cast_is_reported_with_a_hint():
    def softplus_sum_in_float32(x):
        return tf.cast(tf.reduce_sum(tf.math.softplus(tf.cast(x, tf.float32))), tf.float64)

    x = np.linspace(-3, 3, 8)
    with pytest.raises(AssertionError, match="casts to float32 internally"):
        check_gradients(softplus_sum_in_float32, x)
    assert check_gradients(softplus_sum_in_float32, x, atol=1e-3, rtol=1e-2, delta=1e-3).max_abs_error < 1e-3
