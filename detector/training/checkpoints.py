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
import tempfile
import weakref
from pathlib import Path

import keras
import tensorflow as tf

from detector.errors import UserError


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


def restore_model(model: keras.Model, path: str) -> None:
    """Load only the model weights of a training checkpoint (e.g. checkpoints/best/ckpt-N)."""
    try:
        tf.train.Checkpoint(**model_state(model)).restore(path).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.NotFoundError) as e:
        raise UserError(f"checkpoint {path} does not match the model built from the config: "
                        f"{str(e)[:300]}") from None


class Checkpoints:
    """``<directory>/last`` (keeps ``keep`` newest) and ``<directory>/best`` (keeps one)."""

    def __init__(self, directory: str | Path | None, model: keras.Model,
                 optimizer: keras.optimizers.Optimizer, trackers: dict[str, MetricTracker],
                 chief: bool = True, keep: int = 3):
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
        path = self.last.save(checkpoint_number=step)
        self._drop_scratch()
        return path

    def save_best(self, step: int) -> str:
        path = self.best.save(checkpoint_number=step)
        self._drop_scratch()
        return path

    def restore_last(self) -> int:
        """Restore the newest ``last`` checkpoint; returns the number of epochs it completed."""
        where = (self.read_dir or self.directory) / "last"
        path = tf.train.latest_checkpoint(str(where))
        if path is None:
            raise UserError(f"--resume: no checkpoint in {where}")
        self.restore(path)
        return int(self.epoch.numpy())

    def restore(self, path: str) -> None:
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            raise UserError(f"checkpoint {path} does not match the model/optimizer built from the "
                            f"config (was the config changed?): {str(e)[:300]}") from None

    def _drop_scratch(self) -> None:
        # Non-chief workers only save to take part in collective ops; keep nothing.
        if self._scratch is not None and not self.chief:
            shutil.rmtree(self._scratch, ignore_errors=True)
