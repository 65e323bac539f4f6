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
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np

from detector.atomic import write_text

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


# (file, problem) pairs already warned about in this process: a bad image is reported
# once, not at every visit (every epoch, every evaluation).
_REPORTED: set[tuple[str, str]] = set()
_REPORTED_LOCK = threading.Lock()

# What PipelineStats.repaired() counts, and the one-time warning for each.
REPAIRS = {
    "truncated": ("images_truncated", "JPEG data ends early; decoded as far as it goes (the rest is grey)"),
    "exif_ignored": ("images_exif_ignored", "annotated size matches the stored pixels, not the EXIF-rotated "
                     "view; the EXIF orientation is ignored for it"),
    "too_many_boxes": ("images_too_many_boxes", "more boxes than data.max_boxes; the rest are dropped"),
}


def warn_once(name: str, problem: str, message: str) -> bool:
    """Log ``message`` as a warning the first time (name, problem) is seen in this process."""
    with _REPORTED_LOCK:
        if (name, problem) in _REPORTED:
            return False
        _REPORTED.add((name, problem))
    log.warning(message)
    return True


@dataclass
class PipelineStats:
    """Counters filled by the input pipeline (thread-safe; Python side).

    ``images_skipped``: visits of unreadable / undecodable images, the distinct files
    in ``skipped_files`` (each named in ONE warning per process); ``images_truncated``,
    ``images_exif_ignored``, ``images_too_many_boxes``: visits of images used after a
    repair (see :data:`REPAIRS`; files in ``repaired_files``); ``boxes_degenerate``:
    boxes with w or h <= 0 after clipping to the image (or a negative size), dropped
    from training targets; ``boxes_invalid``: boxes with NaN/inf coordinates, dropped;
    ``boxes_cropped``: boxes removed by augmentation (crop below ``min_visibility``);
    ``boxes_truncated``: boxes beyond ``data.max_boxes``.
    """

    images_seen: int = 0
    images_skipped: int = 0
    images_truncated: int = 0
    images_exif_ignored: int = 0
    images_too_many_boxes: int = 0
    boxes_degenerate: int = 0
    boxes_invalid: int = 0
    boxes_cropped: int = 0
    boxes_truncated: int = 0
    skipped_files: list = field(default_factory=list)
    repaired_files: dict = field(default_factory=dict)    # problem -> [file, ...]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + int(v))

    def skip(self, name: str, reason: str) -> None:
        with self._lock:
            self.images_skipped += 1
            if name not in self.skipped_files and len(self.skipped_files) < 1000:
                self.skipped_files.append(name)
        warn_once(name, "skip", f"skipping unreadable image {name}: {reason}")

    def repaired(self, name: str, problem: str) -> None:
        counter, text = REPAIRS[problem]
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
            files = self.repaired_files.setdefault(problem, [])
            if name not in files and len(files) < 1000:
                files.append(name)
        warn_once(name, problem, f"image {name}: {text}")

    def skipped_names(self, limit: int = 5) -> str:
        files = self.skipped_files
        more = f" and {len(files) - limit} more" if len(files) > limit else ""
        return "first: " + ", ".join(files[:limit]) + more if files else "none named"

    @property
    def notable(self) -> bool:
        """True when something was skipped, repaired or dropped for being invalid."""
        return bool(self.images_skipped or self.images_truncated or self.images_exif_ignored
                    or self.images_too_many_boxes or self.boxes_invalid)

    def summary(self) -> str:
        text = (f"images seen {self.images_seen}, skipped (unreadable) {self.images_skipped}"
                f" ({len(self.skipped_files)} files)")
        for problem, (counter, _) in REPAIRS.items():
            if getattr(self, counter):
                text += f", {problem.replace('_', ' ')} {getattr(self, counter)}"
        text += (f"; boxes dropped: degenerate {self.boxes_degenerate}, invalid (NaN/inf) "
                 f"{self.boxes_invalid}, cropped away {self.boxes_cropped}, over max_boxes "
                 f"{self.boxes_truncated}")
        if self.skipped_files:
            text += f"; skipped files: {self.skipped_names()}"
        for problem, files in self.repaired_files.items():
            text += f"; {problem.replace('_', ' ')}: {', '.join(files[:5])}" + (
                f" and {len(files) - 5} more" if len(files) > 5 else "")
        return text

    def log_summary(self) -> None:
        """Log the counters; as a warning when images were skipped."""
        level = logging.WARNING if self.images_skipped else logging.INFO
        log.log(level, "input pipeline: %s", self.summary())


def confined_path(root: str | Path, name: str, where: str) -> Path:
    """``root / name`` for an image name read from an annotation file, refused when it leaves ``root``.

    ``name`` must be relative and must not climb out with ``..`` (checked on the text,
    so a dataset folder that is itself a symlink, or holds symlinks the user made, is
    fine): an absolute path or ``../../etc/passwd`` in a downloaded annotation file is
    a :class:`~detector.errors.UserError` naming the entry (``where``), never opened.
    """
    from detector.errors import UserError

    bad = (not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name)
           or bool(PureWindowsPath(name).anchor))
    if not bad:
        norm = os.path.normpath(name.replace("\\", "/"))
        bad = norm == ".." or norm.startswith("../") or norm == "."
    if bad:
        raise UserError(f"{where}: image name {name!r} is not a path inside the image folder {root} "
                        "(absolute paths and '..' are refused)")
    return Path(root) / name


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
    write_text(path, json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def count_degenerate(records: list[ImageRecord]) -> int:
    return int(sum(degenerate_mask(r.boxes, r.height, r.width).sum() for r in records))
