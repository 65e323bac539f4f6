"""Per-step cosine learning-rate schedule with linear warm-up and warm restarts."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from detector.callbacks import summaries


def cosine_rate(step: int, base_lr: float, total_steps: int, warmup_steps: int = 0,
                min_lr: float = 0.0, restart_period: int | None = None) -> float:
    """The learning rate for 0-based global ``step`` (the step about to run).

    * warm-up, ``step < warmup_steps``: ``base_lr * (step + 1) / warmup_steps``
      (linear; the first step already trains, the last warm-up step reaches base_lr);
    * then ``t = step - warmup_steps`` and, with ``P = restart_period`` (or
      ``total_steps - warmup_steps`` without restarts), ``t' = t mod P`` (restarts)
      or ``min(t, P)`` (none):
      ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t' / P)) / 2``.
    Without restarts the rate stays at ``min_lr`` from ``total_steps`` on.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = step - warmup_steps
    if restart_period:
        period = restart_period
        t = t % period
    else:
        period = max(1, total_steps - warmup_steps)
        t = min(t, period)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / period))


@keras.saving.register_keras_serializable(package="detector")
class CosineAnnealing(keras.callbacks.Callback):
    """Set the optimizer's learning rate before every training step.

    The rate is a function of the global step (``optimizer.iterations``), so a
    resumed run (optimizer state restored) continues the schedule exactly.  Works
    with ``model.fit`` and with :class:`detector.training.engine.Trainer`.  Writes
    ``logs["lr"]`` at batch and epoch end and, if ``log_dir`` is given, a
    ``learning_rate`` scalar per step to TensorBoard.

    Args:
      base_lr: peak rate (after warm-up, at the start of every restart cycle).
      total_steps: length of the whole schedule in steps (without restarts).
      warmup_steps: linear warm-up length in steps.
      min_lr: the floor reached at the end of each cosine cycle.
      restart_period: cycle length in steps after warm-up (None = one cycle).
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0, restart_period: int | None = None,
                 log_dir: str | None = None):
        super().__init__()
        if total_steps <= 0 or warmup_steps < 0 or (restart_period is not None and restart_period <= 0):
            raise ValueError("CosineAnnealing needs total_steps > 0, warmup_steps >= 0 and "
                             f"restart_period > 0 or None; got {total_steps}, {warmup_steps}, "
                             f"{restart_period}")
        if not 0 <= min_lr <= base_lr:
            raise ValueError(f"CosineAnnealing needs 0 <= min_lr <= base_lr, got {min_lr}, {base_lr}")
        self.base_lr, self.total_steps = float(base_lr), int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr, self.restart_period, self.log_dir = float(min_lr), restart_period, log_dir
        self._writer = None
        self._rate = None

    def rate(self, step: int) -> float:
        return cosine_rate(step, self.base_lr, self.total_steps, self.warmup_steps, self.min_lr,
                           self.restart_period)

    def _optimizer(self):
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            raise ValueError("CosineAnnealing: the model has no optimizer (compile it or use the Trainer)")
        if not isinstance(opt.learning_rate, keras.Variable):
            raise ValueError("CosineAnnealing needs an optimizer created with a float learning_rate "
                             "(it was created with a schedule, whose rate cannot be assigned)")
        return opt

    def on_train_begin(self, logs=None):
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_batch_begin(self, batch, logs=None):
        opt = self._optimizer()
        step = int(keras.ops.convert_to_numpy(opt.iterations))
        self._rate = self.rate(step)
        opt.learning_rate.assign(self._rate)
        if self._writer is not None:
            with self._writer.as_default():
                summaries.scalar("learning_rate", self._rate, step)

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self._rate is not None:
            logs["lr"] = self._rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._rate is not None:
            logs["lr"] = self._rate

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr,
                "restart_period": self.restart_period, "log_dir": self.log_dir}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
