"""Load and validate COCO ground truth and detection-result JSON files (numpy only).

Accepts what pycocotools accepts for ``COCO(gt)`` / ``gt.loadRes(results)`` with
iouType 'bbox', and rejects what would make it crash or silently misbehave, with a
:class:`~detector.errors.UserError` naming the file, the entry index and the field:
malformed JSON, missing fields, wrong types, non-finite numbers, negative box sizes,
unknown image ids, duplicate annotation ids, and (unless
``ignore_unknown_categories``) detections whose category is not a GT category
(pycocotools drops those silently).  An empty results list is allowed (pycocotools
crashes on it; here it yields AP 0 where GT exists).

Class index ``k`` = position of the category id in the sorted GT category ids, i.e.
pycocotools' ``params.catIds`` order; no background slot.
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import UserError
from detector.evaluation.matching import DetectionArrays, GroundTruthArrays


@dataclass(frozen=True)
class CocoGroundTruth:
    """A GT file as arrays.

    image_ids: int64 [I] sorted unique image ids (pycocotools ``params.imgIds``);
    category_ids: int64 [K] sorted category ids; category_names: K names;
    arrays: :class:`GroundTruthArrays` with ``image`` indexing ``image_ids`` and
    ``category`` indexing ``category_ids``.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    arrays: GroundTruthArrays


def _read_json(path: Path) -> Any:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read file: {e.strerror or e}") from None
    gc_was_enabled = gc.isenabled()
    gc.disable()   # ~2x faster for ~10^6 small containers; nothing cyclic is created
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    finally:
        if gc_was_enabled:
            gc.enable()


def _field(entries: list, key: str, path: Path, where: str) -> list:
    """``[e[key] for e in entries]``; on failure name the first bad entry."""
    try:
        return [e[key] for e in entries]
    except (KeyError, TypeError, IndexError):
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise UserError(f"{path}: {where}[{i}] is not a JSON object: {_short(e)}") from None
            if key not in e:
                raise UserError(f"{path}: {where}[{i}] has no '{key}' field: {_short(e)}") from None
        raise


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _ints(values: list, key: str, path: Path, where: str) -> np.ndarray:
    arr = np.array(values) if values else np.zeros(0, np.int64)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or not -2**63 <= v < 2**63:
            raise UserError(f"{path}: {where}[{i}]: '{key}' must be an integer, got {_short(v)}")
    raise UserError(f"{path}: {where}: '{key}' values could not be read as integers")


def _floats(values: list, key: str, path: Path, where: str, width: int = 0) -> np.ndarray:
    """Numbers (``width`` 0) or lists of ``width`` numbers, as finite float64."""
    try:
        arr = np.array(values, dtype=None) if values else np.zeros((0, width) if width else 0)
        ok = arr.dtype.kind in "fiub" and arr.ndim == (2 if width else 1) and (
            not width or arr.shape[1] == width)
    except (ValueError, TypeError, OverflowError):
        ok = False
    if ok:
        arr = arr.astype(np.float64)
        bad = ~np.isfinite(arr) if not width else ~np.isfinite(arr).all(axis=1)
        if not bad.any():
            return arr
        i = int(np.argmax(bad))
        raise UserError(f"{path}: {where}[{i}]: '{key}' is not finite: {_short(values[i])}")
    for i, v in enumerate(values):
        items = v if width else [v]
        if (width and (not isinstance(v, list) or len(v) != width)) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
            need = f"a list of {width} numbers" if width else "a number"
            raise UserError(f"{path}: {where}[{i}]: '{key}' must be {need}, got {_short(v)}")
    raise UserError(f"{path}: {where}: '{key}' values could not be read as numbers")


def _check_sizes(bbox: np.ndarray, path: Path, where: str) -> None:
    bad = (bbox[:, 2] < 0) | (bbox[:, 3] < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{path}: {where}[{i}]: 'bbox' [x, y, w, h] has a negative size: "
                        f"{bbox[i].tolist()}")


def _index_of(ids: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``ids`` in the sorted unique ``table`` and a bool mask of found ones."""
    pos = np.searchsorted(table, ids)
    pos_c = np.minimum(pos, max(len(table) - 1, 0))
    found = (table[pos_c] == ids) if len(table) else np.zeros(len(ids), bool)
    return pos_c, found


def _list_section(data: dict, key: str, path: Path) -> list:
    if key not in data:
        raise UserError(f"{path}: no '{key}' list at the top level (not a COCO annotation file?)")
    if not isinstance(data[key], list):
        raise UserError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data[key]


def load_ground_truth(path: str | Path) -> CocoGroundTruth:
    """Read a COCO instances file (``images``, ``annotations``, ``categories``)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with 'images', 'annotations' and "
                        f"'categories', got a {type(data).__name__}")
    images = _list_section(data, "images", path)
    cats = _list_section(data, "categories", path)
    anns = _list_section(data, "annotations", path)
    image_ids = np.unique(_ints(_field(images, "id", path, "images"), "id", path, "images"))
    cat_id_list = _ints(_field(cats, "id", path, "categories"), "id", path, "categories")
    category_ids, first = np.unique(cat_id_list, return_index=True)
    names = tuple(str(cats[i].get("name", category_ids[j])) for j, i in enumerate(first))

    where = "annotations"
    ann_id = _ints(_field(anns, "id", path, where), "id", path, where)
    img = _ints(_field(anns, "image_id", path, where), "image_id", path, where)
    cat = _ints(_field(anns, "category_id", path, where), "category_id", path, where)
    bbox = _floats(_field(anns, "bbox", path, where), "bbox", path, where, width=4)
    area = _floats(_field(anns, "area", path, where), "area", path, where)
    crowd = _floats(_field(anns, "iscrowd", path, where), "iscrowd", path, where) != 0
    _check_sizes(bbox, path, where)
    img_idx, found = _index_of(img, image_ids)
    if not found.all():
        i = int(np.argmin(found))
        raise UserError(f"{path}: {where}[{i}] (id {ann_id[i]}): image_id {img[i]} is not in 'images'")
    cat_idx, found = _index_of(cat, category_ids)
    if not found.all():
        i = int(np.argmin(found))
        raise UserError(f"{path}: {where}[{i}] (id {ann_id[i]}): category_id {cat[i]} is not in 'categories'")
    uniq, counts = np.unique(ann_id, return_counts=True)
    if (counts > 1).any():
        dup = uniq[np.argmax(counts > 1)]
        i, j = np.nonzero(ann_id == dup)[0][:2]
        raise UserError(f"{path}: {where}[{j}]: duplicate annotation id {dup} (also {where}[{i}])")
    if (ann_id == 0).any():
        i = int(np.argmax(ann_id == 0))
        print(f"warning: {path}: {where}[{i}] has id 0; like pycocotools, a detection matched to it "
              f"counts as unmatched (cocoapi#664)", file=sys.stderr)
    arrays = GroundTruthArrays(image=img_idx, category=cat_idx, bbox_xywh=bbox, area=area,
                               iscrowd=crowd, ann_id=ann_id)
    return CocoGroundTruth(image_ids=image_ids, category_ids=category_ids, category_names=names,
                           arrays=arrays)


def load_detections(path: str | Path, gt: CocoGroundTruth,
                    ignore_unknown_categories: bool = False) -> DetectionArrays:
    """Read a results list ``[{"image_id", "category_id", "bbox": [x,y,w,h], "score"}, ...]``.

    List order is the submission order (it breaks score ties within an image).
    """
    path = Path(path)
    res = _read_json(path)
    if not isinstance(res, list):
        raise UserError(f"{path}: expected a JSON list of detection results "
                        f"[{{\"image_id\", \"category_id\", \"bbox\", \"score\"}}, ...], "
                        f"got a {type(res).__name__}")
    where = "entry"
    img = _ints(_field(res, "image_id", path, where), "image_id", path, where)
    cat = _ints(_field(res, "category_id", path, where), "category_id", path, where)
    bbox = _floats(_field(res, "bbox", path, where), "bbox", path, where, width=4)
    score = _floats(_field(res, "score", path, where), "score", path, where)
    del res
    _check_sizes(bbox, path, where)
    img_idx, found = _index_of(img, gt.image_ids)
    if not found.all():
        i = int(np.argmin(found))
        raise UserError(f"{path}: {where}[{i}]: image_id {img[i]} is not an image of the ground truth")
    cat_idx, found = _index_of(cat, gt.category_ids)
    if not found.all():
        i = int(np.argmin(found))
        if not ignore_unknown_categories:
            raise UserError(f"{path}: {where}[{i}]: category_id {cat[i]} is not a category of the "
                            f"ground truth (pass --ignore-unknown-categories to drop such "
                            f"detections, as pycocotools does)")
        print(f"warning: {path}: dropping {int((~found).sum())} detections with unknown "
              f"category ids (first: {where}[{i}], category_id {cat[i]})", file=sys.stderr)
        img_idx, cat_idx, bbox, score = img_idx[found], cat_idx[found], bbox[found], score[found]
    return DetectionArrays(image=img_idx, category=cat_idx, bbox_xywh=bbox, score=score)
