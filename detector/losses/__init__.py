"""Detection losses.

* :class:`FocalLoss` - sigmoid focal loss on logits, and :func:`quality_focal_loss_per_anchor`
  (IoU soft targets, ``loss.cls_loss: quality_focal``) (``focal.py``).
* :class:`MultiTaskRegressionLoss` - masked box (Huber or GIoU) + log-depth loss, and
  :class:`TaskUncertainty` - learned task log-variances (``multitask.py``).
* :class:`DetectionLoss`, :func:`count_positives`, :func:`all_reduce_sum` - the
  combined training loss with global positive-count normalisation (``detection.py``).
* :class:`DiceLoss` (``dice.py``) - soft Dice for segmentation-style outputs.

Importing this package registers every loss with Keras, so ``.keras`` files that use
them load with ``safe_mode=True``.
"""

from detector.losses.detection import DetectionLoss, all_reduce_sum, count_positives
from detector.losses.dice import DiceLoss
from detector.losses.focal import FocalLoss, focal_loss_per_anchor, quality_focal_loss_per_anchor
from detector.losses.multitask import (
    MultiTaskRegressionLoss,
    TaskUncertainty,
    depth_of_class,
    giou,
    giou_loss_from_codes,
    huber,
    iou,
    positive_iou_from_codes,
    regression_per_anchor,
    unit_decode,
)

__all__ = [
    "DetectionLoss", "DiceLoss", "FocalLoss", "MultiTaskRegressionLoss", "TaskUncertainty",
    "all_reduce_sum", "count_positives", "depth_of_class", "focal_loss_per_anchor", "giou", "giou_loss_from_codes",
    "huber", "iou", "positive_iou_from_codes", "quality_focal_loss_per_anchor", "regression_per_anchor",
    "unit_decode",
]

