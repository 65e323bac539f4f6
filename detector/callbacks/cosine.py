"""Per-step cosine learning-rate schedule with linear warm-up, warm restarts and an
optional training-time budget that the schedule is re-planned to fit."""

from __future__ import annotations

import math
import sys
import time

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
    return _anneal(t / period, base_lr, min_lr)


def _anneal(progress: float, base_lr: float, min_lr: float) -> float:
    """The cosine phase at ``progress`` in ``[0, 1]``: ``base_lr`` at 0, ``min_lr`` at 1."""
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ScheduleState(tf.Module):
    """Checkpointed state of a time-budgeted schedule.

    The cosine phase runs on a piecewise-linear *progress* ``p`` in ``[0, 1]``:
    ``p = p0 + (1 - p0) * (step - s0) / (total - s0)``.  Unshortened, ``s0`` is the
    warm-up length, ``p0 = 0`` and ``total`` the planned steps, which is exactly the
    plain cosine.  Shortening at step ``s`` sets ``s0 = s``, ``p0 = p(s)`` and a smaller
    ``total`` (lengthening again works the same way): the rate stays continuous and
    reaches its floor at the new end.
    ``elapsed_s`` is the training time used so far (survives ``--resume``).
    """

    def __init__(self, warmup_steps: int, total_steps: int):
        super().__init__(name="lr_schedule")
        self.s0 = tf.Variable(warmup_steps, dtype=tf.int64, trainable=False, name="s0")
        self.p0 = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="p0")
        self.total = tf.Variable(total_steps, dtype=tf.int64, trainable=False, name="total")
        self.elapsed_s = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_s")


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
      time_budget_s: optional training-time budget (seconds of train steps, measured
        from batch begin to batch end, so data waits count).  At every epoch end the
        remaining steps are projected with the epoch's MEDIAN step time (the tracing
        first step does not skew it); when they would overrun the budget, the cosine
        phase is shortened from the current step on (see :class:`ScheduleState`) so
        the rate still reaches ``min_lr``, and ``model.stop_training`` is set at the
        new end.  When later epochs run faster, the end moves out again (by at least
        2 % of the plan, never past ``total_steps``).  On a machine fast enough for
        the plan nothing changes, so the run stays deterministic.
        ``checkpoint_state`` holds what ``--resume`` must restore.  One decision per
        process: not for multi-worker training.
      clock: time source in seconds (tests inject a fake one).
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0, restart_period: int | None = None,
                 log_dir: str | None = None, time_budget_s: float | None = None,
                 clock=time.perf_counter):
        super().__init__()
        if time_budget_s is not None and (time_budget_s <= 0 or restart_period is not None):
            raise ValueError("CosineAnnealing: time_budget_s must be > 0 and cannot be combined "
                             f"with restart_period; got {time_budget_s}, {restart_period}")
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
        self.time_budget_s, self._clock = time_budget_s, clock
        self.checkpoint_state = (ScheduleState(self.warmup_steps, self.total_steps)
                                 if time_budget_s is not None else None)
        self._batch_start: float | None = None
        self._spans: list[float] = []

    def rate(self, step: int) -> float:
        st = self.checkpoint_state
        if st is None or step < self.warmup_steps:
            return cosine_rate(step, self.base_lr, self.total_steps, self.warmup_steps, self.min_lr,
                               self.restart_period)
        return _anneal(self._progress(step), self.base_lr, self.min_lr)

    def _progress(self, step: int) -> float:
        st = self.checkpoint_state
        s0, p0, total = int(st.s0.numpy()), float(st.p0.numpy()), int(st.total.numpy())
        return p0 + (1.0 - p0) * min(1.0, max(0, step - s0) / max(1, total - s0))

    @property
    def planned_steps(self) -> int:
        """Steps the schedule now ends at (``total_steps`` unless shortened)."""
        st = self.checkpoint_state
        return self.total_steps if st is None else int(st.total.numpy())

    def _fit_budget(self, step: int) -> None:
        """Re-plan the end: earlier when the remaining steps would overrun the budget,
        later again (up to the plan) when they now fit with room to spare."""
        st = self.checkpoint_state
        if not self._spans or step >= int(st.total.numpy()):
            return
        median = sorted(self._spans)[len(self._spans) // 2]
        affordable = int(max(0.0, self.time_budget_s - float(st.elapsed_s.numpy())) / max(median, 1e-9))
        new_total = min(self.total_steps, step + affordable)
        current = int(st.total.numpy())
        # Shorten whenever needed; lengthen again (never past the plan) when a slow spell
        # has passed and at least 2 % of the plan can be won back.
        if not (new_total < current or new_total >= current + max(1, self.total_steps // 50)):
            return
        s0 = max(step, self.warmup_steps)
        p0 = self._progress(step) if step >= self.warmup_steps else 0.0
        st.s0.assign(s0)
        st.p0.assign(p0)
        st.total.assign(max(new_total, s0 + 1))
        print(f"time budget: {float(st.elapsed_s.numpy()):.0f} of {self.time_budget_s:.0f} s used at "
              f"step {step}, {median * 1000:.0f} ms/step; the cosine schedule now ends at step "
              f"{int(st.total.numpy())} (planned: {self.total_steps})", file=sys.stderr, flush=True)

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
        self._batch_start = self._clock()
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
        st = self.checkpoint_state
        if st is not None and self._batch_start is not None:
            span = self._clock() - self._batch_start
            self._spans.append(span)
            st.elapsed_s.assign_add(span)
            step = int(keras.ops.convert_to_numpy(self._optimizer().iterations))
            if self.planned_steps < self.total_steps and step >= self.planned_steps:
                self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._spans = []

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._rate is not None:
            logs["lr"] = self._rate
        if self.checkpoint_state is not None:
            self._fit_budget(int(keras.ops.convert_to_numpy(self._optimizer().iterations)))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr,
                "restart_period": self.restart_period, "log_dir": self.log_dir,
                "time_budget_s": self.time_budget_s}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
