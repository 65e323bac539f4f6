"""Training: a strategy-agnostic custom loop (engine), the train step, checkpoints,
run directory / results.csv, progress display, and the detection task glue.

``detector_task`` imports the model/data/loss/metric packages; import it directly
(``from detector.training.detector_task import train``) rather than from here so
the generic engine stays importable on its own.
"""

from detector.training.engine import EarlyStopping, FitResult, NonFiniteLossError, Trainer
from detector.training.step import TrainStep

__all__ = ["EarlyStopping", "FitResult", "NonFiniteLossError", "Trainer", "TrainStep"]
