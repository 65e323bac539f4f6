"""Checkpoints hold every variable, including sub-layers kept in Python lists."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.errors import UserError
from detector.training.checkpoints import Checkpoints, MetricTracker, restore_model


class ListTower(keras.layers.Layer):
    """Sub-layers in a Python list, like the detector's heads and FPN."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.convs = [keras.layers.Dense(6, name=f"d{i}") for i in range(2)]
        self.norms = [keras.layers.BatchNormalization(name=f"bn{i}") for i in range(2)]

    def call(self, x, training=None):
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x), training=training)
        return x


def _model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(ListTower()(inputs)))


def _trained(seed, tmp_path):
    model = _model(seed)
    opt = keras.optimizers.Adam(0.1)
    opt.build(model.trainable_variables)
    x = np.random.default_rng(seed).normal(size=(16, 4)).astype("float32")
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return model, opt


def test_every_variable_round_trips(tmp_path):
    model, opt = _trained(0, tmp_path)
    # TF's own object graph misses the list-held layers (the reason for model_state)
    graph = tf.train.Checkpoint(model=model).save(str(tmp_path / "graph" / "ck"))
    assert len(tf.train.list_variables(graph)) < len(model.variables)
    tracker = MetricTracker("val_AP", "max")
    tracker.update(0.5, epoch=1)
    ckpt = Checkpoints(tmp_path / "ck", model, opt, {"best": tracker})
    ckpt.epoch.assign(3)
    path = ckpt.save_last(step=3)

    fresh, fresh_opt = _model(1), keras.optimizers.Adam(0.1)
    fresh_opt.build(fresh.trainable_variables)
    fresh_tracker = MetricTracker("val_AP", "max")
    other = Checkpoints(tmp_path / "ck", fresh, fresh_opt, {"best": fresh_tracker})
    assert other.restore_last() == 3
    moving = [v for v in model.variables if "moving" in v.path]
    assert len(moving) == 4 and not np.allclose(moving[0].numpy(), 0.0)  # BN stats were updated
    for a, b in zip(model.variables, fresh.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(opt.variables, fresh_opt.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert int(fresh_opt.iterations.numpy()) == 3 and float(fresh_tracker.best.numpy()) == 0.5

    weights_only = _model(2)
    restore_model(weights_only, path)
    for a, b in zip(model.variables, weights_only.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(UserError, match="does not match the model"):
        restore_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), path)


def test_metric_tracker_modes():
    t = MetricTracker("val_loss", "min", min_delta=0.1)
    assert t.update(1.0, 1) and not t.update(0.95, 2) and t.update(0.8, 3)
    assert int(t.wait.numpy()) == 0 and int(t.best_epoch.numpy()) == 3
    assert not t.update(float("nan"), 4) and int(t.wait.numpy()) == 1
