"""Per-variable gradient norms and histograms to TensorBoard."""

from __future__ import annotations

import sys

import keras
import numpy as np
import tensorflow as tf

from detector.callbacks import summaries


@keras.saving.register_keras_serializable(package="detector")
class GradientMonitor(keras.callbacks.Callback):
    """Log the real gradients of a training step every ``every_n_steps`` steps.

    Keras 3 has no ``optimizer.get_gradients``, so the gradients come from the
    training loop: :class:`detector.training.engine.Trainer` asks
    ``wants_gradients(step)`` before each step and, if True, runs the step variant
    that also returns the gradients and passes them to ``receive_gradients``.
    They are the gradients of the global-batch loss (all-reduced over replicas)
    *before* clipping, i.e. exactly what ``tape.gradient`` gives on one device.
    Plain ``model.fit`` does not expose gradients; the callback then logs nothing
    and says so at the end of training.

    TensorBoard tags: ``grad_norm/<variable path>`` (L2 norm), ``grad_norm/global``
    and, with ``histograms``, ``grad/<variable path>``; the step is the global step
    the gradients were computed at (``optimizer.iterations`` before the update).
    """

    def __init__(self, log_dir: str, every_n_steps: int = 100, histograms: bool = True):
        super().__init__()
        if every_n_steps <= 0:
            raise ValueError(f"GradientMonitor needs every_n_steps > 0, got {every_n_steps}")
        self.log_dir, self.every_n_steps, self.histograms = str(log_dir), int(every_n_steps), bool(histograms)
        self._writer = None
        self.last_step: int | None = None
        self.last_norms: dict[str, float] = {}

    def wants_gradients(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def receive_gradients(self, step: int, named_grads: list[tuple[str, np.ndarray]]) -> None:
        """Log ``named_grads`` = [(variable path, gradient array)] computed at ``step``."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        norms = {name: float(np.sqrt(np.sum(np.square(g, dtype=np.float64)))) for name, g in named_grads}
        with self._writer.as_default():
            for name, g in named_grads:
                summaries.scalar(f"grad_norm/{name}", norms[name], step)
                if self.histograms:
                    summaries.histogram(f"grad/{name}", g, step)
            summaries.scalar("grad_norm/global", float(np.sqrt(sum(n * n for n in norms.values()))),
                             step)
        self.last_step, self.last_norms = step, norms

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
        elif self.last_step is None:
            print("warning: GradientMonitor received no gradients: it needs "
                  "detector.training.engine.Trainer (model.fit does not expose them)", file=sys.stderr)

    def get_config(self):
        return {"log_dir": self.log_dir, "every_n_steps": self.every_n_steps,
                "histograms": self.histograms}
