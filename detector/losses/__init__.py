"""Detection losses.

* :class:`FocalLoss` - sigmoid focal loss on logits (``focal.py``).
* :class:`MultiTaskRegressionLoss` - masked box Huber + log-depth loss, and
  :class:`TaskUncertainty` - learned task log-variances (``multitask.py``).
* :class:`DetectionLoss`, :func:`count_positives`, :func:`all_reduce_sum` - the
  combined training loss with global positive-count normalisation (``detection.py``).
* :class:`DiceLoss` (``dice.py``) - imported lazily, it is maintained separately.
"""

from detector.losses.detection import DetectionLoss, all_reduce_sum, count_positives
from detector.losses.focal import FocalLoss, focal_loss_per_anchor
from detector.losses.multitask import MultiTaskRegressionLoss, TaskUncertainty, huber, regression_per_anchor

__all__ = [
    "DetectionLoss", "DiceLoss", "FocalLoss", "MultiTaskRegressionLoss", "TaskUncertainty",
    "all_reduce_sum", "count_positives", "focal_loss_per_anchor", "huber", "regression_per_anchor",
]


def __getattr__(name):
    # Lazy so this package imports even while dice.py is absent or broken.
    if name == "DiceLoss":
        from detector.losses.dice import DiceLoss

        return DiceLoss
    raise AttributeError(f"module 'detector.losses' has no attribute {name!r}")
