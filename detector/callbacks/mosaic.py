"""``MosaicSwitch``: train the last share of the schedule without the mosaic.

A mosaic (``data.augment.mosaic``) regularises, but its images are not what the
detector sees at test time: four scenes at up to half size, cut edges, a different
mix of object sizes and image statistics (BatchNorm's included).  YOLOX and YOLOv8
turn it off for the last epochs so that the low-learning-rate end of the schedule fits
plain images.  ``data.augment.mosaic_off_last: p`` does that for the last share ``p``
of the steps the learning-rate schedule plans, as it plans them now: when a time limit
shortens the cosine schedule (``train.fit_schedule_to_time_limit``) the mosaic stops
earlier with it.

The switch is an int64 variable ``until`` that the training pipeline reads as each
epoch starts (:class:`detector.data.pipeline.Epochs`): epochs ``e < until`` have the
mosaic, later ones none.  The pipeline prefetches, so a change made at an epoch end may
reach the pipeline one epoch late.
"""

from __future__ import annotations

import math
import sys

import keras
import tensorflow as tf


def mosaic_until(planned_steps: int, share: float, steps_per_epoch: int) -> int:
    """The first epoch without the mosaic: the first whose start is at or past
    ``(1 - share) * planned_steps``."""
    return math.ceil((1.0 - share) * planned_steps / steps_per_epoch - 1e-9)


class MosaicSwitch(keras.callbacks.Callback):
    """Keep ``until`` (int64 variable) at :func:`mosaic_until` of the schedule's plan.

    Args:
      until: the variable the training pipeline reads (``Epochs.mosaic_until``).
      share: ``data.augment.mosaic_off_last``, in (0, 1).
      steps_per_epoch: train steps per epoch.
      schedule: the run's :class:`~detector.callbacks.CosineAnnealing`; place this
        callback after it, so that its epoch-end re-plan is seen.
      progress: print a line when the mosaic stops.
    """

    def __init__(self, until: tf.Variable, share: float, steps_per_epoch: int, schedule, progress: bool = True):
        super().__init__()
        if not 0 < share < 1:
            raise ValueError(f"MosaicSwitch: share must be in (0, 1), got {share}")
        self.until, self.share, self.steps_per_epoch = until, float(share), int(steps_per_epoch)
        self.schedule, self.progress = schedule, progress

    def _update(self) -> None:
        self.until.assign(mosaic_until(self.schedule.planned_steps, self.share, self.steps_per_epoch))

    def on_train_begin(self, logs=None):
        self._update()

    def on_epoch_begin(self, epoch, logs=None):
        if self.progress and epoch == int(self.until.numpy()):
            left = self.schedule.planned_steps - epoch * self.steps_per_epoch
            print(f"epoch {epoch + 1}: no mosaic from here on, the last {left} steps "
                  f"(data.augment.mosaic_off_last: {self.share:g})", file=sys.stderr, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        self._update()
