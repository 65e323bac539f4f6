"""A tiny regression "task" for engine tests: Dense model, fixed data, sum-style loss.

Not a test file; imported by tests/training and tests/callbacks.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from detector.training.engine import epochs_dataset

NUM_EXAMPLES, BATCH = 64, 8
X = np.random.default_rng(0).normal(size=(NUM_EXAMPLES, 4)).astype("float32")
Y = np.stack([X[:, 0] * 2 - X[:, 1], np.sin(X[:, 2]) + X[:, 3]], axis=1).astype("float32")


def make_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    out = keras.layers.Dense(2, name="out")(h)
    return keras.Model(inputs, out, name="toy")


def epoch_batches(epoch, seed: int = 0, batch: int = BATCH) -> tf.data.Dataset:
    """Endless batches of ``epoch`` (an int or int64 tensor): one permutation seeded by (seed, epoch)."""
    order = tf.random.experimental.stateless_shuffle(
        tf.range(NUM_EXAMPLES), seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]))
    ds = tf.data.Dataset.from_tensor_slices((tf.gather(X, order), tf.gather(Y, order)))
    return ds.batch(batch, drop_remainder=True).repeat()


def dataset_fn(seed: int = 0, batch: int = BATCH):
    """The engine's ``train_dataset_fn``: epochs whose order depends only on (seed, epoch)."""

    def fn(start_epoch: int, skip: int, steps_per_epoch: int) -> tf.data.Dataset:
        return epochs_dataset(lambda e: epoch_batches(e, seed, batch), start_epoch, skip, steps_per_epoch)

    return fn


def loss_fn(batch, outputs, count):
    """Squared error summed over the replica batch, divided by the GLOBAL example count."""
    err = tf.square(outputs - batch[1])
    cls = tf.reduce_sum(err[:, 0]) / count
    box = tf.reduce_sum(err[:, 1]) / count
    return {"total": cls + box, "cls": cls, "box": box}


def numpy_loss(model, x, y) -> float:
    out = model(x, training=False).numpy()
    return float(np.mean(np.sum((out - y) ** 2, axis=1)))


class CrashAt(keras.callbacks.Callback):
    """Raises after global step ``step`` (before a step checkpoint of that step)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise RuntimeError("crash")
