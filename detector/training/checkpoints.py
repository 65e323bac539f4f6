"""Checkpoints (last and best) and the metric trackers they carry.

A checkpoint holds all model variables (see :func:`model_state`), all optimizer
variables (slots and ``optimizer.iterations`` = the global step, which the LR
schedule is a function of), the number of completed epochs, and the state of the
best-checkpoint and early-stopping trackers, so that ``--resume`` continues exactly
where the run was.

Under MultiWorkerMirroredStrategy every worker must take part in a save (the
variables may be collectively read); only the chief writes to the run directory,
the others write to a scratch directory that is deleted again.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

import keras
import tensorflow as tf

from detector.errors import UserError
from detector.training.ema import averaged, has_average, swap_average


class MetricTracker(tf.Module):
    """Best value of one metric and the number of evaluations since it improved.

    ``mode`` "max": improved when ``value > best + min_delta``; "min": when
    ``value < best - min_delta``.  State lives in variables so it is checkpointed.
    """

    def __init__(self, monitor: str, mode: str = "max", min_delta: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best = tf.Variable(-math.inf if mode == "max" else math.inf, dtype=tf.float64,
                                trainable=False, name="best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` measured after 1-based ``epoch``; True if it is a new best."""
        best = float(self.best.numpy())
        if math.isnan(value):
            improved = False
        elif self.mode == "max":
            improved = value > best + self.min_delta
        else:
            improved = value < best - self.min_delta
        if improved:
            self.best.assign(value)
            self.best_epoch.assign(epoch)
            self.wait.assign(0)
        else:
            self.wait.assign_add(1)
        return improved


def model_state(model: keras.Model) -> dict:
    """The checkpoint entries of a model: ALL its variables as one flat list.

    Not ``tf.train.Checkpoint(model=model)``: Keras 3 keeps sub-layers held in Python
    lists (``self.convs = [...]``) in its own TrackedList, which TensorFlow's object
    graph does not see, so their weights (e.g. the detector's head towers and FPN)
    would silently be missing from the checkpoint.  The list order is the model's
    variable creation order, identical for the same config.
    """
    return {"model_variables": list(model.variables)}


class UnreadableCheckpoint(UserError):
    """A checkpoint whose files are missing, truncated or corrupt (not a config mismatch):
    callers may fall back to an older one."""


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous one is still usable."""


# What reading a truncated or corrupt checkpoint raises: DataLossError (index file),
# IndexError "Read less bytes than requested" (data file), NotFoundError (a file gone).
_UNREADABLE = (tf.errors.OpError, IndexError, OSError)


def checkpoint_paths(directory: str | Path) -> list[str]:
    """Checkpoint prefixes (``.../ckpt-N``) in ``directory``, newest (highest N) first.

    From the files themselves, not the ``checkpoint`` state file, so that a checkpoint
    that file names but whose files are broken can be skipped for the one before it.
    """
    found = []
    for index in Path(directory).glob("ckpt-*.index"):
        number = index.name[len("ckpt-"):-len(".index")]
        if number.isdigit():
            found.append((int(number), str(index.with_suffix(""))))
    return [p for _, p in sorted(found, reverse=True)]


def restore_model(model: keras.Model, path: str) -> None:
    """Load only the model weights of a training checkpoint (e.g. checkpoints/best/ckpt-N).

    :class:`UnreadableCheckpoint` when its files are broken, :class:`UserError` when it
    does not fit the model.
    """
    try:
        tf.train.Checkpoint(**model_state(model)).restore(path).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.NotFoundError) as e:
        if isinstance(e, tf.errors.NotFoundError) and not Path(f"{path}.index").is_file():
            raise UnreadableCheckpoint(f"checkpoint {path}: its files are missing") from None
        raise UserError(f"checkpoint {path} does not match the model built from the config: "
                        f"{str(e)[:300]}") from None
    except _UNREADABLE as e:
        raise UnreadableCheckpoint(f"checkpoint {path} is unreadable (truncated or corrupt?): "
                                   f"{type(e).__name__}: {_message(e)}") from None


def _message(e: BaseException) -> str:
    return str(getattr(e, "message", None) or e).splitlines()[0][:200] if str(e) else type(e).__name__


class Checkpoints:
    """``<directory>/last`` (keeps ``keep`` newest) and ``<directory>/best`` (keeps one)."""

    def __init__(self, directory: str | Path | None, model: keras.Model,
                 optimizer: keras.optimizers.Optimizer, trackers: dict[str, MetricTracker],
                 chief: bool = True, keep: int = 3):
        # With a weights' moving average the checkpoint's model entries hold the average
        # (what eval/export/predict read) and the optimizer's average slots the raw weights.
        self.optimizer = optimizer
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.checkpoint = tf.train.Checkpoint(**model_state(model),
                                              optimizer_variables=list(optimizer.variables),
                                              epoch=self.epoch, **trackers)
        self.chief = chief
        # Restores read the run's directory (shared by all workers); non-chief workers
        # write to a scratch directory instead.
        self.read_dir = Path(directory) if directory is not None else None
        if directory is None or not chief:
            self._scratch = Path(tempfile.mkdtemp(prefix="detector_ckpt_"))
            weakref.finalize(self, shutil.rmtree, self._scratch, True)
            directory = self._scratch
        else:
            self._scratch = None
        self.directory = Path(directory)
        self.last = tf.train.CheckpointManager(self.checkpoint, str(self.directory / "last"), keep)
        self.best = tf.train.CheckpointManager(self.checkpoint, str(self.directory / "best"), 1)

    @property
    def latest_path(self) -> str | None:
        return self.last.latest_checkpoint

    def save_last(self, step: int) -> str:
        return self._save(self.last, step)

    def save_best(self, step: int) -> str:
        return self._save(self.best, step)

    def _save(self, manager: tf.train.CheckpointManager, step: int) -> str:
        # TensorFlow writes the data and index files, then the `checkpoint` state file by an
        # atomic rename: a failed save leaves the previous checkpoint listed and intact.
        try:
            with averaged(self.optimizer):
                path = manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            previous = manager.latest_checkpoint
            kept = f"the previous checkpoint {previous} is kept" if previous else "no checkpoint was saved before"
            reason = e.strerror if isinstance(e, OSError) and e.strerror else _message(e)
            raise CheckpointWriteError(f"cannot write checkpoint {manager.directory}/ckpt-{step}: {reason} "
                                       f"(disk full?); {kept}") from e
        self._drop_scratch()
        return path

    def restore_last(self, say=None) -> int:
        """Restore the newest loadable ``last`` checkpoint; returns the epochs it completed.

        A truncated or corrupt checkpoint (e.g. a crash or a full disk during its write)
        is skipped for the one before it, and ``say`` (default: stderr) is told which.
        """
        where = (self.read_dir or self.directory) / "last"
        paths = checkpoint_paths(where)
        if not paths:
            raise UserError(f"--resume: no checkpoint in {where}")
        say = say or (lambda m: print(m, file=sys.stderr, flush=True))
        problems = []
        for path in paths:
            try:
                self.restore(path)
            except UnreadableCheckpoint as e:
                problems.append(str(e))
                continue
            if problems:
                say(f"warning: {'; '.join(problems)}; resuming from the newest loadable one, {path} "
                    f"(after epoch {int(self.epoch.numpy())})")
            return int(self.epoch.numpy())
        raise UserError(f"--resume: no loadable checkpoint in {where}: " + "; ".join(problems))

    def restore(self, path: str) -> None:
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            if has_average(self.optimizer):
                swap_average(self.optimizer)   # saved swapped: raw weights back into the model
        except (AssertionError, ValueError) as e:
            raise UserError(f"checkpoint {path} does not match the model/optimizer built from the "
                            f"config (was the config changed?): {str(e)[:300]}") from None
        except _UNREADABLE as e:
            raise UnreadableCheckpoint(f"checkpoint {path} is unreadable (truncated or corrupt?): "
                                       f"{type(e).__name__}: {_message(e)}") from None

    def _drop_scratch(self) -> None:
        # Non-chief workers only save to take part in collective ops; keep nothing.
        if self._scratch is not None and not self.chief:
            shutil.rmtree(self._scratch, ignore_errors=True)
