"""Detector model: backbones, FPN, shared heads, the keras.Model and post-processing.

* :func:`build_detector` / :class:`Detector` (``detector.py``): ``model(images)`` ->
  ``{"cls_logits" [B,N,C], "box" [B,N,4], "depth" [B,N]}``.
* :func:`decode_detections` (``postprocess.py``): top-k, decode, clip, NMS ->
  ``{"boxes" [B,D,4], "scores", "classes", "depth", "num_detections"}``.
"""

from detector.model.backbones import ImageNormalization, build_backbone
from detector.model.detector import Detector, build_detector
from detector.model.fpn import FeaturePyramid
from detector.model.heads import AnchorPredictor, HeadTower
from detector.model.postprocess import decode_detections

__all__ = [
    "AnchorPredictor", "Detector", "FeaturePyramid", "HeadTower", "ImageNormalization",
    "build_backbone", "build_detector", "decode_detections",
]
