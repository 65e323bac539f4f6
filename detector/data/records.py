"""Canonical per-image records shared by all loaders, and small helpers on them.

A loader (COCO-JSON, VOC) turns its files into a list of :class:`ImageRecord`; the
input pipeline only ever sees this form (tfds examples are converted to the same
fields inside the tf.data graph, see :mod:`detector.data.tfds_source`).

Conventions: ``boxes`` are ``[x, y, w, h]`` in ORIGINAL image pixels exactly as stored
in the annotation file (float64, never rounded); ``classes`` are contiguous indices
``0..C-1`` in the order of ``data.classes`` (no background slot); ``depth`` is in
metres, ``-1`` when unknown.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("detector.data")


@dataclass
class ImageRecord:
    """One image and its annotations (``n`` objects, in annotation-file order)."""

    image: str                  # path of the encoded image file
    image_id: int
    height: int
    width: int
    boxes: np.ndarray           # float64 [n, 4] xywh original pixels
    classes: np.ndarray         # int32 [n] 0..C-1
    is_crowd: np.ndarray        # bool [n]
    area: np.ndarray            # float64 [n] annotation area field
    depth: np.ndarray           # float32 [n] metres, -1 unknown


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the application needs to know about the configured dataset."""

    class_names: tuple[str, ...]
    num_train: int | None            # None when unknown (some tfds builds)
    num_val: int | None
    gt_json: str | None              # COCO-format GT of the val split, for pycocotools
    category_ids: tuple[int, ...]       # class index -> category id used in gt_json
    source: str
    # what evaluation leaves out, in the metric and gt_json alike: missing_images,
    # undecodable (images), boxes_over_max (boxes beyond data.max_boxes)
    eval_dropped: dict = field(default_factory=dict)


@dataclass
class PipelineStats:
    """Counters filled by the input pipeline (thread-safe; Python side).

    ``images_skipped``: unreadable / undecodable images (named in a warning each);
    ``boxes_degenerate``: boxes with w or h <= 0 after clipping to the image, dropped
    from training targets; ``boxes_cropped``: boxes removed by augmentation (crop below
    ``min_visibility``); ``boxes_truncated``: boxes beyond ``data.max_boxes``.
    """

    images_seen: int = 0
    images_skipped: int = 0
    boxes_degenerate: int = 0
    boxes_cropped: int = 0
    boxes_truncated: int = 0
    skipped_files: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + int(v))

    def skip(self, name: str, reason: str) -> None:
        with self._lock:
            self.images_skipped += 1
            if len(self.skipped_files) < 100:
                self.skipped_files.append(name)
        log.warning("skipping unreadable image %s: %s", name, reason)

    def summary(self) -> str:
        return (f"images seen {self.images_seen}, skipped (unreadable) {self.images_skipped}; "
                f"boxes dropped: degenerate {self.boxes_degenerate}, cropped away "
                f"{self.boxes_cropped}, over max_boxes {self.boxes_truncated}")

    def log_summary(self) -> None:
        """Log the counters; as a warning when images were skipped."""
        level = logging.WARNING if self.images_skipped else logging.INFO
        log.log(level, "input pipeline: %s", self.summary())


def clip_xyxy(boxes_xywh: np.ndarray, height: float, width: float) -> np.ndarray:
    """``[n, 4]`` xywh -> xyxy clipped to the image; float64."""
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    x0 = np.clip(b[:, 0], 0, width)
    y0 = np.clip(b[:, 1], 0, height)
    x1 = np.clip(b[:, 0] + b[:, 2], 0, width)
    y1 = np.clip(b[:, 1] + b[:, 3], 0, height)
    return np.stack([x0, y0, x1, y1], axis=1)


def degenerate_mask(boxes_xywh: np.ndarray, height: float, width: float) -> np.ndarray:
    """bool ``[n]``: True where the box has w or h <= 0 after clipping to the image."""
    c = clip_xyxy(boxes_xywh, height, width)
    return (c[:, 2] <= c[:, 0]) | (c[:, 3] <= c[:, 1])


def write_coco_gt(records: list[ImageRecord], class_names: Sequence[str], path: str | Path,
                  category_ids: Sequence[int] | None = None, max_boxes: int | None = None) -> Path:
    """Write a COCO-format GT file (ann ids from 1).

    ``category_ids``: class index -> category id (default: class index + 1), so a class
    subset of a COCO dataset keeps its original ids.  ``max_boxes``: keep only the first
    ``max_boxes`` annotations of each image (file order), as the evaluation pipeline does.
    Box and area values are written unchanged (Python floats round-trip exactly).
    """
    ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    images, anns = [], []
    for r in records:
        images.append({"id": int(r.image_id), "file_name": Path(r.image).name,
                       "height": int(r.height), "width": int(r.width)})
        for j in range(min(len(r.classes), max_boxes if max_boxes is not None else len(r.classes))):
            ann = {"id": len(anns) + 1, "image_id": int(r.image_id),
                   "category_id": int(ids[int(r.classes[j])]),
                   "bbox": [float(v) for v in r.boxes[j]], "area": float(r.area[j]),
                   "iscrowd": int(bool(r.is_crowd[j]))}
            if r.depth[j] > 0:
                ann["depth"] = float(r.depth[j])
            anns.append(ann)
    cats = sorted(({"id": int(i), "name": n} for i, n in zip(ids, class_names)), key=lambda c: c["id"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    tmp.replace(path)
    return path


def count_degenerate(records: list[ImageRecord]) -> int:
    return int(sum(degenerate_mask(r.boxes, r.height, r.width).sum() for r in records))
