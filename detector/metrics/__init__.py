"""Keras metrics: streaming binary classification metrics and COCO mAP.

``MeanAveragePrecision`` lives in :mod:`detector.metrics.coco_map` and is imported
lazily on first access, so importing the classification metrics never pulls in
(or depends on) the COCO evaluation code.
"""

from detector.metrics.classification import BinaryRecall, OptimalF1, PrecisionRecallF1

__all__ = ["BinaryRecall", "MeanAveragePrecision", "OptimalF1", "PrecisionRecallF1"]


def __getattr__(name):
    if name == "MeanAveragePrecision":
        from detector.metrics.coco_map import MeanAveragePrecision

        return MeanAveragePrecision
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
