"""Capture a TensorFlow profiler trace for a range of training steps."""

from __future__ import annotations

import sys

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="detector")
class ProfilingCallback(keras.callbacks.Callback):
    """Trace training steps ``start_step <= s < stop_step`` into ``log_dir``.

    Steps count from 0 at ``on_train_begin`` of this process (not the global step),
    so the first steps, which trace and compile the step function, can be skipped
    after a resume as well.  The trace is written to
    ``<log_dir>/plugins/profile/<timestamp>/*.xplane.pb``; point TensorBoard at
    ``log_dir`` and open the Profile tab.
    """

    def __init__(self, log_dir: str, start_step: int = 10, stop_step: int = 15):
        super().__init__()
        if not 0 <= start_step < stop_step:
            raise ValueError(f"ProfilingCallback needs 0 <= start_step < stop_step, "
                             f"got {start_step}, {stop_step}")
        self.log_dir, self.start_step, self.stop_step = str(log_dir), int(start_step), int(stop_step)
        self._seen = 0
        self._active = False
        self.traced = False   # True once a trace has been written

    def on_train_begin(self, logs=None):
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._seen == self.start_step and not self.traced:
            try:
                tf.profiler.experimental.start(self.log_dir)
                self._active = True
            except (tf.errors.AlreadyExistsError, tf.errors.UnavailableError) as e:
                print(f"warning: ProfilingCallback could not start the profiler: {e}", file=sys.stderr)

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._active and self._seen >= self.stop_step:
            self._stop()

    def on_train_end(self, logs=None):
        if self._active:
            self._stop()

    def _stop(self):
        tf.profiler.experimental.stop()
        self._active = False
        self.traced = True

    def get_config(self):
        return {"log_dir": self.log_dir, "start_step": self.start_step, "stop_step": self.stop_step}
