"""Run a model on image files: detections in original-image pixels, COCO results, speed.

:func:`predict_files` reads each image (EXIF orientation applied), letterboxes it like the
val pipeline, runs a :class:`~detector.inference.runner.ModelRunner`, and maps the boxes
back to the original image (``[x0, y0, x1, y1]`` for drawing, COCO ``[x, y, w, h]`` for
results files).  Any size and aspect ratio: the longer side is scaled to the network
input ``S``, the rest padded, and the inverse scale restores original pixels (clipped
to the image).

Image ids for COCO results (:func:`image_id_mapping`): from a mapping file (a COCO
instances JSON, matched by ``file_name``'s base name, or a ``{"name.jpg": id}`` JSON
object), otherwise ``1..N`` in sorted path order.  Category ids: the mapping COCO file's
categories matched by class name when it has them, otherwise ``class index + 1`` (the
convention of the GT files this project writes for VOC and the synthetic set).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.errors import UserError
from detector.inference.preprocess import boxes_to_original, letterbox_image, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_sources(source: str) -> list[Path]:
    """Image files of ``source``: a file, a directory (its images, not recursive) or a glob
    pattern (``**`` allowed); sorted.  :class:`UserError` when nothing matches."""
    import glob

    p = Path(source).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise UserError(f"--source {source}: the directory has no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if any(ch in source for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True)
                       if Path(f).suffix.lower() in IMAGE_SUFFIXES and Path(f).is_file())
        if not files:
            raise UserError(f"--source {source}: no image files match the pattern")
        return files
    raise UserError(f"--source {source}: no such file or directory")


@dataclass
class IdMapping:
    """``image_ids``: base file name -> image id; ``category_ids``: class index -> category id."""

    image_ids: dict[str, int] | None
    category_ids: list[int]
    source: str = "1..N in sorted path order"


def image_id_mapping(path: str | Path | None, class_names) -> IdMapping:
    """Read a mapping file (see the module docstring); ``None``: ids 1..N, categories k+1."""
    default_cats = [k + 1 for k in range(len(class_names))]
    if path is None:
        return IdMapping(None, default_cats)
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"--image-ids {path}: cannot read file: {e.strerror or e}") from None
    except ValueError as e:
        raise UserError(f"--image-ids {path}: not valid JSON: {e}") from None
    if isinstance(doc, dict) and isinstance(doc.get("images"), list):
        try:
            ids = {Path(im["file_name"]).name: int(im["id"]) for im in doc["images"]}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"--image-ids {path}: every 'images' entry needs 'id' and 'file_name'") from None
        cats = default_cats
        if isinstance(doc.get("categories"), list) and doc["categories"]:
            by_name = {str(c.get("name")): int(c["id"]) for c in doc["categories"] if "id" in c}
            missing = [n for n in class_names if n not in by_name]
            if missing:
                raise UserError(f"--image-ids {path}: the model's classes {missing} are not categories of "
                                "this file")
            cats = [by_name[n] for n in class_names]
        return IdMapping(ids, cats, f"{path} (COCO images by file name)")
    if isinstance(doc, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in doc.values()):
        return IdMapping({Path(k).name: int(v) for k, v in doc.items()}, default_cats, f"{path} (name -> id)")
    raise UserError(f"--image-ids {path}: expected a COCO instances JSON (with 'images') or a JSON object "
                    "mapping file names to integer ids")


@dataclass
class Prediction:
    """One image's detections (score >= the runner's threshold), best first.

    ``xyxy`` / ``xywh``: float64 [n, 4] original-image px; ``classes`` int [n] 0..C-1;
    ``scores`` [n]; ``depth`` [n] metres; ``hw``: (H, W) as read (EXIF applied)."""

    path: Path
    hw: tuple[int, int]
    image: np.ndarray                 # RGB uint8 [H, W, 3]
    xyxy: np.ndarray
    xywh: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    depth: np.ndarray


@dataclass
class SpeedMeter:
    """Seconds summed over images: read + letterbox, model, decode + NMS + mapping back."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    images: int = 0
    extra: dict = field(default_factory=dict)

    def line(self, image_size: int, batch: int) -> str:
        n = max(self.images, 1)
        return (f"speed: {1000 * self.preprocess / n:.1f} ms preprocess, {1000 * self.inference / n:.1f} ms "
                f"inference, {1000 * self.postprocess / n:.1f} ms postprocess per image "
                f"({self.images} images at {image_size}x{image_size}, batch {batch}; first call excluded)")


def predict_files(runner, paths: list[Path], batch: int = 1, speed: SpeedMeter | None = None
                  ) -> Iterator[Prediction]:
    """Yield a :class:`Prediction` per path (in order); ``speed`` accumulates the timings.

    A warm-up call on a blank batch runs first (tracing / allocation is not timed).
    """
    s = runner.image_size
    batch = max(1, min(batch, runner.max_batch or batch))
    speed = speed if speed is not None else SpeedMeter()
    runner(np.zeros((batch, s, s, 3), np.uint8))
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        t0 = time.perf_counter()
        images = [read_image(p) for p in chunk]
        boxed = [letterbox_image(im, s) for im in images]
        x = np.stack([b for b, _ in boxed])
        if len(chunk) < batch:     # keep one input shape (no retracing); padding images are dropped
            x = np.concatenate([x, np.zeros((batch - len(chunk), s, s, 3), np.uint8)])
        t1 = time.perf_counter()
        out = runner(x)
        t2 = time.perf_counter()
        split = getattr(runner, "timings", None) or {}
        results = []
        for i, (image, (_, scale)) in enumerate(zip(images, boxed)):
            keep = np.flatnonzero(np.asarray(out["classes"][i]) >= 0)
            xyxy, xywh = boxes_to_original(out["boxes"][i][keep], scale, image.shape[:2])
            results.append(Prediction(chunk[i], image.shape[:2], image, xyxy, xywh,
                                      np.asarray(out["classes"][i])[keep].astype(np.int64),
                                      np.asarray(out["scores"][i], np.float64)[keep],
                                      np.asarray(out["depth"][i], np.float64)[keep]))
        t3 = time.perf_counter()
        post = split.get("postprocess", 0.0)
        speed.preprocess += t1 - t0
        speed.inference += split.get("inference", t2 - t1) if split else t2 - t1
        speed.postprocess += (t3 - t2) + (post if split else 0.0)
        speed.images += len(chunk)
        yield from results


def coco_entries(pred: Prediction, image_id: int, category_ids, min_score: float) -> list[dict]:
    """COCO results entries (plus ``"depth"`` metres) of one image, score >= ``min_score``."""
    return [{"image_id": int(image_id), "category_id": int(category_ids[int(c)]),
             "bbox": [float(v) for v in b], "score": float(s), "depth": float(d)}
            for b, c, s, d in zip(pred.xywh, pred.classes, pred.scores, pred.depth) if s >= min_score]


def annotate(pred: Prediction, class_names, min_score: float) -> np.ndarray:
    """BGR uint8 copy of the image with the detections >= ``min_score`` drawn."""
    import cv2

    from detector.visualize.drawing import draw_boxes

    bgr = cv2.cvtColor(pred.image, cv2.COLOR_RGB2BGR)
    keep = pred.scores >= min_score
    return draw_boxes(bgr, pred.xyxy[keep], pred.classes[keep], class_names, scores=pred.scores[keep],
                      depths=pred.depth[keep])
