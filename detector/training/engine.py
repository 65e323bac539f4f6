"""Strategy-agnostic custom training loop driving standard Keras callbacks.

One loop for the default strategy, MirroredStrategy, MultiWorkerMirroredStrategy
and TPUStrategy (Keras 3 ``fit`` fails under MultiWorkerMirroredStrategy,
keras-team/keras#20585).  Nothing here is detection specific: the task
supplies the model, a loss function (see :mod:`detector.training.step` for the
contract), the optimizer, a dataset function and an evaluation function.

Input: ``fit`` builds ONE input pipeline and iterator for all the epochs it runs:
``train_dataset_fn(start_epoch, skip, steps_per_epoch)`` gives the batches of epochs
``start_epoch, start_epoch + 1, ...`` in sequence, exactly ``steps_per_epoch`` per epoch
(the first ``skip`` of ``start_epoch`` left out), and the loop takes
``steps_per_epoch`` batches per epoch from it.  Nothing is rebuilt between epochs: the
pipeline keeps its caches and buffers, and prefetches the next epoch during the
evaluation.  Reproducibility: epoch ``e``'s batches must depend only on ``e`` (e.g. a
shuffle seeded by (seed, e)), not on where the stream started, so that an interrupted
and resumed run sees the same data as an uninterrupted one and ends with the same
weights.  :func:`epochs_dataset` builds such a stream from a per-epoch dataset.

Mid-epoch checkpoints (``checkpoint_every_n_steps``, and on SIGTERM) also store the
input position (batches done in the current epoch); ``fit(resume=True)`` builds the
stream from that epoch with those batches skipped, so it continues at the exact step.

Under MultiWorkerMirroredStrategy every worker must take the same decisions at the
same step, or a collective hangs.  The time limit, ``model.stop_training`` (set by a
callback) and SIGTERM are local events: each worker passes its requests into the
next train step, where they are all-reduced with the positive count, and every
worker stops after that step when any worker asked.  The NaN stop and early stopping
read values that are already global (the loss is reduced over all workers; the
evaluator gathers all detections), so every worker decides the same.
With ``sharded_dataset_fn`` each worker builds its own input pipeline (its shard of
the data, per-replica batches) through ``distribute_datasets_from_function``, once per
``fit`` as well.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from detector.atomic import write_with
from detector.training.checkpoints import Checkpoints, MetricTracker
from detector.training.ema import averaged
from detector.training.progress import EpochStats, ProgressBar
from detector.training.results import ResultsWriter, format_metrics
from detector.training.step import STOP_FLAGS, TrainStep, batch_size_count, default_forward


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without saving the bad weights."""


@dataclass(frozen=True)
class EarlyStopping:
    monitor: str = "val_AP"
    mode: str = "max"
    patience: int = 5          # evaluations without improvement before stopping
    min_delta: float = 0.0


@dataclass
class FitResult:
    epochs_done: int
    step: int
    stop_reason: str   # completed | early_stopping | time_limit | stop_training | preempted
    logs: dict = field(default_factory=dict)   # last epoch's logs (incl. val_* if evaluated)
    best_value: float | None = None
    best_epoch: int | None = None
    last_checkpoint: str | None = None
    best_checkpoint: str | None = None


def epochs_dataset(epoch_fn: Callable[[tf.Tensor], tf.data.Dataset], start_epoch: int, skip: int,
                   steps_per_epoch: int) -> tf.data.Dataset:
    """A ``train_dataset_fn`` stream from ``epoch_fn(epoch) -> batches of that epoch`` (``epoch``
    an int64 scalar tensor; at least ``steps_per_epoch`` batches, order a function of the epoch).

    Each epoch's first ``steps_per_epoch`` batches, epochs ``start_epoch, ...`` in sequence;
    the ``skip`` batches are dropped after they were made: a pipeline that can skip its
    input more cheaply (e.g. before decoding images) should do so itself.
    """
    return (tf.data.Dataset.range(start_epoch, 2 ** 62)
            .flat_map(lambda e: epoch_fn(e).take(steps_per_epoch)).skip(skip))


class Trainer:
    """Train ``model`` for ``epochs`` epochs of ``steps_per_epoch`` global batches.

    Args (keyword-only):
      strategy: the ``tf.distribute`` strategy; ``model`` and ``optimizer`` must have
        been created under ``strategy.scope()``.
      train_dataset_fn: ``(start_epoch, skip, steps_per_epoch) -> tf.data.Dataset`` of
        GLOBAL batches (batch size ``global_batch_size``, static shapes) of epochs
        ``start_epoch, start_epoch + 1, ...``, each ``steps_per_epoch`` batches, without
        the first ``skip`` batches of ``start_epoch`` (see the module doc); distributed here.
      loss_fn / forward_fn / count_fn: see :class:`detector.training.step.TrainStep`.
      eval_fn: ``model -> {name: float}``; logged as ``val_<name>``.  Run every
        ``eval_every`` epochs, at the last epoch and when the run stops early.
      best_metric / best_mode: which logged metric selects ``checkpoints/best``.
      run_dir: where results.csv, checkpoints/ and model.keras go (None: nowhere
        except a scratch checkpoint directory).  Only the chief writes.
      time_limit_s: stop after this much training time (train steps only).
      jit_compile: compile each replica's forward + loss + backward with XLA.
      checkpoint_every_n_steps: also save ``checkpoints/last`` every N global steps
        mid-epoch, with the input position (None: at epoch ends only).  SIGTERM makes
        every worker save such a checkpoint after the next step and stop
        (``stop_reason == "preempted"``).
      steps_per_execution: train steps per ``tf.function`` call (one host read of the
        losses per call); callbacks, logging, checkpoints and stop decisions then act
        every that many steps, and the logged step losses are the means over them.
      sharded_dataset_fn: ``(start_epoch, skip, steps_per_epoch, tf.distribute.InputContext)
        -> dataset`` of PER-REPLICA batches of this worker's shard, the same epochs (each
        step takes one batch per local replica); used instead of ``train_dataset_fn``
        under MultiWorkerMirroredStrategy.
    """

    def __init__(self, *, strategy: tf.distribute.Strategy, model: keras.Model,
                 optimizer: keras.optimizers.Optimizer, loss_fn: Callable,
                 train_dataset_fn: Callable[[int, int, int], tf.data.Dataset], steps_per_epoch: int,
                 epochs: int, global_batch_size: int, forward_fn: Callable = default_forward,
                 count_fn: Callable = batch_size_count, eval_fn: Callable | None = None,
                 eval_every: int = 1, callbacks: Sequence[keras.callbacks.Callback] = (),
                 clip_norm: float | None = None, run_dir: str | Path | None = None,
                 best_metric: str | None = None, best_mode: str = "max",
                 early_stopping: EarlyStopping | None = None, time_limit_s: float | None = None,
                 progress: bool = True, chief: bool = True, keep_checkpoints: int = 3,
                 export_model: bool = True, jit_compile: bool = False,
                 checkpoint_every_n_steps: int | None = None, steps_per_execution: int = 1,
                 sharded_dataset_fn: Callable[[int, int, int, tf.distribute.InputContext],
                                              tf.data.Dataset] | None = None):
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.train_dataset_fn, self.steps_per_epoch, self.epochs = train_dataset_fn, steps_per_epoch, epochs
        self.global_batch_size = global_batch_size
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self.user_callbacks = list(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.time_limit_s, self.progress, self.chief = time_limit_s, progress, chief
        self.export_model = export_model
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.steps_per_execution = max(1, int(steps_per_execution))
        self.sharded_dataset_fn = sharded_dataset_fn
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self._preempted = False
        with strategy.scope():
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            if getattr(model, "optimizer", None) is not optimizer:
                model.compile(optimizer=optimizer)  # callbacks reach the optimizer via model.optimizer
        self.step_fn = TrainStep(strategy, model, optimizer, loss_fn, forward_fn, count_fn, clip_norm,
                                 jit_compile=jit_compile)
        self.best = MetricTracker(best_metric, best_mode, name="best") if best_metric else None
        self.stopper = (MetricTracker(early_stopping.monitor, early_stopping.mode,
                                      early_stopping.min_delta, name="early_stopping")
                        if early_stopping else None)
        self.patience = early_stopping.patience if early_stopping else None
        trackers = {k: v for k, v in (("best", self.best), ("early_stopping", self.stopper)) if v}
        # Callbacks with state that --resume must restore (e.g. a time-budgeted schedule).
        trackers.update({f"callback_{i}": c.checkpoint_state for i, c in enumerate(self.user_callbacks)
                         if getattr(c, "checkpoint_state", None) is not None})
        # batches done in the current epoch (0 at epoch ends): where a resumed run continues
        self.position = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_position")
        trackers["input_position"] = self.position
        ckpt_dir = self.run_dir / "checkpoints" if self.run_dir is not None else None
        self.checkpoints = Checkpoints(ckpt_dir, model, optimizer, trackers, chief, keep_checkpoints)
        self._traced: set[bool] = set()
        self._train_time = 0.0

    # ------------------------------------------------------------------ public

    def fit(self, resume: bool = False) -> FitResult:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            return self._fit(resume)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum, frame) -> None:
        self._preempted = True
        print("SIGTERM: saving a checkpoint after the current step, then stopping "
              "(continue with --resume)", file=sys.stderr, flush=True)

    def _fit(self, resume: bool) -> FitResult:
        start_epoch = self.checkpoints.restore_last(say=self._say) if resume else 0
        skip = int(self.position.numpy()) if resume else 0
        if skip:
            self._say(f"resuming epoch {start_epoch + 1} after batch {skip}")
        results = None
        if self.chief and self.run_dir is not None:
            results = ResultsWriter(self.run_dir / "results.csv",
                                    keep_through_epoch=start_epoch if resume else -1)
            missing = sorted(set(range(1, start_epoch + 1)) - {int(r["epoch"]) for r in results.rows})
            if missing:
                self._say(f"warning: {self.run_dir / 'results.csv'} has no row for epoch(s) "
                          f"{', '.join(map(str, missing))} (written by an older version or edited)")
        callbacks = keras.callbacks.CallbackList(self.user_callbacks, model=self.model,
                                                 epochs=self.epochs, steps=self.steps_per_epoch,
                                                 verbose=0)
        self.model.stop_training = False
        stop_reason = "completed"
        if self.stopper is not None and int(self.stopper.wait.numpy()) >= self.patience:
            stop_reason = "early_stopping"  # the resumed run had already stopped
            self._say("the resumed run had stopped early; nothing to train")
        elif start_epoch >= self.epochs:
            self._say(f"the run already completed {start_epoch} epochs; raise train.epochs to continue")
        callbacks.on_train_begin()
        try:
            logs, stop_reason = self._epochs(start_epoch, callbacks, results, stop_reason, skip)
        except NonFiniteLossError:
            callbacks.on_train_end({})
            raise
        callbacks.on_train_end(dict(logs))
        if self.chief and self.run_dir is not None and self.export_model:
            with averaged(self.optimizer):   # model.keras holds the weights' average, if kept
                self._export()
        has_best = self.best is not None and int(self.best.best_epoch.numpy()) > 0
        return FitResult(
            epochs_done=int(self.checkpoints.epoch.numpy()), step=self._global_step(),
            stop_reason=stop_reason, logs=logs,
            best_value=float(self.best.best.numpy()) if has_best else None,
            best_epoch=int(self.best.best_epoch.numpy()) if has_best else None,
            last_checkpoint=self.checkpoints.last.latest_checkpoint,
            best_checkpoint=self.checkpoints.best.latest_checkpoint)

    # ------------------------------------------------------------------ epoch

    def _epochs(self, epoch: int, callbacks, results, stop_reason: str, skip: int = 0) -> tuple[dict, str]:
        logs: dict = {}
        iterator = None
        while stop_reason == "completed" and epoch < self.epochs:
            if iterator is None:   # one pipeline for every epoch of this fit
                iterator = iter(self._distributed_dataset(epoch, skip))
            callbacks.on_epoch_begin(epoch)
            logs, stop_reason = self._train_epoch(epoch, callbacks, iterator, skip)
            skip = 0
            if stop_reason == "preempted":   # the checkpoint is saved; no evaluation, no epoch end
                self._say(f"preempted: checkpoint saved at step {self._global_step()}; continue with --resume")
                break
            last = epoch + 1 == self.epochs or stop_reason != "completed"
            if self.eval_fn is not None and ((epoch + 1) % self.eval_every == 0 or last):
                with averaged(self.optimizer):
                    val = self.eval_fn(self.model)
                logs.update({f"val_{k}": float(v) for k, v in val.items()})
                self._say(f"epoch {epoch + 1}/{self.epochs} val: "
                          f"{format_metrics({k: v for k, v in logs.items() if k.startswith('val_')})}")
            callbacks.on_epoch_end(epoch, dict(logs))
            if self._end_epoch(epoch, logs, results) and stop_reason == "completed":
                stop_reason = "early_stopping"
                self._say(f"early stopping: {self.stopper.monitor} has not improved for "
                          f"{self.patience} evaluations (best {float(self.stopper.best.numpy()):.4g})")
            if self.model.stop_training and stop_reason == "completed":
                stop_reason = "stop_training"
            epoch += 1
        return logs, stop_reason

    def _distributed_dataset(self, start_epoch: int, skip: int):
        """The input of epochs ``start_epoch, ...`` (``skip`` batches of the first done), distributed."""
        if self.multi_worker and self.sharded_dataset_fn is not None:
            def per_worker(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
                return self.sharded_dataset_fn(start_epoch, skip, self.steps_per_epoch, ctx)

            return self.strategy.distribute_datasets_from_function(per_worker)
        ds = self.train_dataset_fn(start_epoch, skip, self.steps_per_epoch)
        return self.strategy.experimental_distribute_dataset(ds)

    def _train_epoch(self, epoch: int, callbacks, iterator, skip: int = 0) -> tuple[dict, str]:
        """Run one epoch (from batch ``skip``) on the fit's ``iterator``; returns (epoch logs: mean
        losses, lr, timing; stop reason)."""
        bar = (ProgressBar(epoch + 1, self.epochs, self.steps_per_epoch)
               if self.progress and self.chief else None)
        stats = EpochStats()
        try:
            stop = self._steps(epoch, iterator, callbacks, bar, stats, skip)
        finally:
            if bar is not None:
                bar.close()
        if stop == "time_limit":
            self._say(f"time limit reached after {self._train_time / 60:.1f} min of training")
        logs = {k: v / max(stats.done, 1) for k, v in stats.sums.items() if k != "lr"}
        logs["lr"] = self._current_lr()
        elapsed = time.perf_counter() - stats.start
        if not stats.timed:  # only tracing steps ran: report them rather than nothing
            stats.wait_s, stats.busy_s, stats.timed = 0.0, elapsed, stats.done
        logs["epoch_time_s"] = elapsed
        logs["images_per_s"] = stats.images_per_s(self.global_batch_size) or float("nan")
        logs["input_wait_share"] = stats.wait_s / stats.busy_s if stats.busy_s else float("nan")
        return logs, stop

    def _steps(self, epoch: int, iterator, callbacks, bar, stats: EpochStats, skip: int = 0) -> str:
        consumers = [c for c in self.user_callbacks if hasattr(c, "receive_gradients")]
        batch_idx = skip
        while batch_idx < self.steps_per_epoch:
            step = self._global_step()
            wanted = [c for c in consumers if c.wants_gradients(step)]
            # steps_per_execution: n steps in one call (one host sync); a gradient request runs alone
            n = 1 if wanted else min(self.steps_per_execution, self.steps_per_epoch - batch_idx)
            callbacks.on_train_batch_begin(batch_idx)
            t0 = time.perf_counter()
            # multi-worker: this worker's stop requests travel with the step (see module doc)
            requests = self._stop_requests() if self.multi_worker else None
            if n == 1:
                try:
                    batch = next(iterator)
                except StopIteration:
                    self._say(f"warning: the training data ended after {batch_idx} of "
                              f"{self.steps_per_epoch} steps in epoch {epoch + 1}")
                    return "completed"
                t1 = time.perf_counter()
                out = self.step_fn(batch, with_grads=bool(wanted), stop_flags=requests)
            else:
                t1 = t0   # the input wait happens inside the call
                try:
                    out = self.step_fn.run_steps(iterator, n, stop_flags=requests)
                except tf.errors.OutOfRangeError:
                    self._say(f"warning: the training data ended in epoch {epoch + 1}")
                    return "completed"
            flags = out.pop("stop_flags")
            grads = out.pop("grads", None)
            values = {k: float(v) for k, v in out.items()}  # also waits for the step(s) to finish
            t2 = time.perf_counter()
            self._train_time += t2 - t0
            variant = (bool(wanted), n)
            if variant in self._traced:  # the first call of each variant traces: not timed
                stats.wait_s += t1 - t0
                stats.busy_s += t2 - t0
                stats.timed += n
            self._traced.add(variant)
            self._check_finite(values, step + n - 1, epoch, batch_idx + n - 1)
            if wanted:
                named = [(getattr(v, "path", v.name), np.asarray(g))
                         for v, g in zip(self.model.trainable_variables, grads)]
                for c in wanted:
                    c.receive_gradients(step, named)
            logs = self._loss_logs(values)   # with n > 1: the means over the n steps
            logs["lr"] = self._current_lr()
            for _ in range(n):
                stats.add(logs)
            batch_idx += n
            callbacks.on_train_batch_end(batch_idx - 1, dict(logs))
            if bar is not None:
                bar.update(stats.done, stats.means(), stats.images_per_s(self.global_batch_size))
            saved = self._maybe_save_position(batch_idx, step)
            reason = self._stop_reason(flags.numpy() if self.multi_worker else self._stop_requests())
            if reason == "preempted" and not saved:
                self._save_position(batch_idx)
            if reason is not None:
                return reason
        return "completed"

    def _stop_requests(self) -> list[float]:
        """This process's stop requests: [time limit reached, stop_training, SIGTERM]."""
        flags = [float(self.time_limit_s is not None and self._train_time >= self.time_limit_s),
                 float(bool(self.model.stop_training)), float(self._preempted)]
        assert len(flags) == STOP_FLAGS
        return flags

    @staticmethod
    def _stop_reason(flags) -> str | None:
        if flags[2] > 0:
            return "preempted"
        if flags[0] > 0:
            return "time_limit"
        if flags[1] > 0:
            return "stop_training"
        return None

    def _maybe_save_position(self, batches_done: int, step_before: int) -> bool:
        """Save when the step count crossed a multiple of checkpoint_every_n_steps."""
        n = self.checkpoint_every_n_steps
        if not n or self._global_step() // n == step_before // n or batches_done >= self.steps_per_epoch:
            return False   # the epoch end saves anyway
        self._save_position(batches_done)
        return True

    def _save_position(self, batches_done: int) -> None:
        """Mid-epoch checkpoint: every worker takes part (collective reads), only the chief writes."""
        self.position.assign(batches_done)
        self.checkpoints.save_last(self._global_step())

    def _end_epoch(self, epoch: int, logs: dict, results: ResultsWriter | None) -> bool:
        """Update trackers, save checkpoints, write results.csv; True = stop early."""
        self.checkpoints.epoch.assign(epoch + 1)
        self.position.assign(0)
        step = self._global_step()
        improved = False
        evaluated = any(k.startswith("val_") for k in logs)
        for tracker in (self.best, self.stopper):
            if tracker is None:
                continue
            if tracker.monitor not in logs:
                if tracker.monitor.startswith("val_") and not evaluated:
                    continue  # not an evaluation epoch
                raise ValueError(f"metric '{tracker.monitor}' is not logged; available: "
                                 f"{', '.join(sorted(logs))}")
            result = tracker.update(logs[tracker.monitor], epoch + 1)
            improved = improved or (tracker is self.best and result)
        # Order matters for crash consistency: the results row first, then best, then last.
        # --resume restarts after the newest `last` checkpoint and drops results rows after
        # it, so a crash anywhere here re-runs the epoch and leaves every epoch once.
        if results is not None:
            results.write({"epoch": epoch + 1, "step": step, **logs})
        if improved:
            self.checkpoints.save_best(step)
        self.checkpoints.save_last(step)
        return self.stopper is not None and int(self.stopper.wait.numpy()) >= self.patience

    # ------------------------------------------------------------------ helpers

    def _check_finite(self, values: dict, step: int, epoch: int, batch_idx: int) -> None:
        if all(math.isfinite(v) for k, v in values.items() if k != "grad_norm"):
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        last = self.checkpoints.last.latest_checkpoint
        done = int(self.checkpoints.epoch.numpy())
        kept = (f"the last good checkpoint is kept: {last} (after epoch {done})"
                if last else "no checkpoint had been saved yet")
        raise NonFiniteLossError(
            f"non-finite loss at step {step} (epoch {epoch + 1}, batch {batch_idx + 1}): {terms}; "
            f"training stopped and {kept}. Lower train.learning_rate or check the data.")

    @staticmethod
    def _loss_logs(values: dict) -> dict:
        logs = {"loss": values["total"]}
        for k, v in values.items():
            if k not in ("total", "grad_norm"):
                logs[f"{k}_loss"] = v
        logs["grad_norm"] = values["grad_norm"]
        return logs

    def _current_lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _global_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.optimizer.iterations))

    def _export(self) -> None:
        path = self.run_dir / "model.keras"
        try:
            write_with(path, self.model.save)   # atomic: a kill leaves the old file or none
        except Exception as e:  # the checkpoints are still there; don't lose the run over it
            self._say(f"warning: could not export {path}: {type(e).__name__}: {e}")

    def _say(self, message: str) -> None:
        if self.chief:
            print(message, file=sys.stderr, flush=True)

