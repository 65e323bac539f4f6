"""Keras callbacks for detector training (all usable with ``model.fit`` too).

Early stopping, best-checkpoint selection and the NaN guard live in the training
engine (:mod:`detector.training.engine`), because their state must be saved in
the checkpoints for an exact ``--resume``.
"""

from detector.callbacks.cosine import CosineAnnealing, cosine_rate
from detector.callbacks.gradients import GradientMonitor
from detector.callbacks.mosaic import MosaicSwitch
from detector.callbacks.profiling import ProfilingCallback
from detector.callbacks.tensorboard import ScalarLogger

__all__ = ["CosineAnnealing", "cosine_rate", "GradientMonitor", "MosaicSwitch", "ProfilingCallback", "ScalarLogger"]
