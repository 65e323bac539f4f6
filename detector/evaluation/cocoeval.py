"""Exact pycocotools COCOeval(iouType='bbox') on arrays or files, numpy only.

``evaluate(gt, dt, K, I)`` = :func:`~detector.evaluation.matching.match` (evaluateImg)
followed by :func:`~detector.evaluation.accumulate.accumulate`; its
``.stats()`` equal ``COCOeval.stats`` (within ~1e-16, the float64 summation order of
the means being the same).  Nothing here imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from detector.evaluation.accumulate import CocoEvalResult, accumulate
from detector.evaluation.coco_io import CocoGroundTruth, load_detections, load_ground_truth
from detector.evaluation.matching import DetectionArrays, GroundTruthArrays, match


def evaluate(gt: GroundTruthArrays, dt: DetectionArrays, num_classes: int, num_images: int,
             all_max_dets: bool = False) -> CocoEvalResult:
    """Evaluate detections against GT over ``num_images`` images and ``num_classes`` classes."""
    records, npig = match(gt, dt, num_classes, num_images)
    return accumulate(records, npig, all_max_dets=all_max_dets)


def evaluate_files(gt_path: str | Path, dt_path: str | Path, ignore_unknown_categories: bool = False
                   ) -> tuple[CocoEvalResult, CocoGroundTruth]:
    """Evaluate a COCO results list against a COCO GT file (same inputs as pycocotools)."""
    gt = load_ground_truth(gt_path)
    dt = load_detections(dt_path, gt, ignore_unknown_categories)
    result = evaluate(gt.arrays, dt, len(gt.category_ids), len(gt.image_ids))
    return result, gt
