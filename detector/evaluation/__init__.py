"""Exact COCO box mAP (pycocotools COCOeval iouType='bbox' semantics), numpy only.

Importing this package does not import TensorFlow; the in-graph matching used by the
Keras metric lives in :mod:`detector.evaluation.tf_matching` (import it explicitly).
"""

from detector.evaluation.accumulate import CocoEvalResult, MatchRecords, accumulate, format_table, summarize
from detector.evaluation.cocoeval import evaluate, evaluate_files
from detector.evaluation.matching import DetectionArrays, GroundTruthArrays, match
from detector.evaluation.params import STAT_NAMES

__all__ = ["CocoEvalResult", "MatchRecords", "accumulate", "format_table", "summarize", "evaluate",
           "evaluate_files", "DetectionArrays", "GroundTruthArrays", "match", "STAT_NAMES"]
