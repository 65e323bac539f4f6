"""Numpy references for the overlap-based losses: IoU / GIoU of yxyx boxes, random anchors."""

import numpy as np


def _area(r):
    return (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])


def _intersection_union(a, b):
    ih = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iw = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ih * iw
    return inter, _area(a) + _area(b) - inter


def np_iou(a, b):
    """Closed-form IoU of yxyx boxes (float64)."""
    inter, union = _intersection_union(a, b)
    return inter / union


def np_giou(a, b):
    """Closed-form GIoU of yxyx boxes (float64)."""
    inter, union = _intersection_union(a, b)
    enclose = ((np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0]))
               * (np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])))
    return inter / union - (enclose - union) / enclose


def random_anchors(rng, n):
    """Anchors of varied sizes (8..256 px), aspect ratios (1/4..4) and positions."""
    size = rng.uniform(8, 256, n)
    ratio = np.exp(rng.uniform(np.log(0.25), np.log(4.0), n))  # width / height
    h, w = size / np.sqrt(ratio), size * np.sqrt(ratio)
    yc, xc = rng.uniform(-100, 700, n), rng.uniform(-100, 700, n)
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)
