"""Scalar logs (losses, lr, val metrics, timing) to TensorBoard."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from detector.callbacks import summaries


@keras.saving.register_keras_serializable(package="detector")
class ScalarLogger(keras.callbacks.Callback):
    """Write numeric batch logs every ``every_n_steps`` steps and all epoch logs.

    Tags: ``step/<key>`` at the global step after the update
    (``optimizer.iterations``), ``epoch/<key>`` at the 1-based epoch number.
    """

    def __init__(self, log_dir: str, every_n_steps: int = 10):
        super().__init__()
        self.log_dir, self.every_n_steps = str(log_dir), int(every_n_steps)
        self._writer = None

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _write(self, prefix: str, logs: dict, step: int) -> None:
        with self._writer.as_default():
            for k, v in logs.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    summaries.scalar(f"{prefix}/{k}", float(v), step)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if logs and step % self.every_n_steps == 0:
            self._write("step", logs, step)

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            self._write("epoch", logs, epoch + 1)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def get_config(self):
        return {"log_dir": self.log_dir, "every_n_steps": self.every_n_steps}
