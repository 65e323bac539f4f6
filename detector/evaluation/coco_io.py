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

_REQUIRED = object()


@dataclass(frozen=True)
class ImageEntry:
    """One ``images[]`` entry as the data loaders need it (``with_image_fields=True``)."""

    image_id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class CocoGroundTruth:
    """A GT file as arrays.

    image_ids: int64 [I] sorted unique image ids (pycocotools ``params.imgIds``);
    category_ids: int64 [K] sorted category ids; category_names: K names;
    arrays: :class:`GroundTruthArrays` with ``image`` indexing ``image_ids`` and
    ``category`` indexing ``category_ids``, annotations in file order;
    depth: float32 [G] per-annotation ``depth`` in metres (-1 where absent);
    images: the ``images[]`` entries in file order (only with ``with_image_fields``).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    arrays: GroundTruthArrays
    depth: np.ndarray
    images: tuple[ImageEntry, ...] = ()


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


def _field(entries: list, key: str, path: Path, where: str, default: Any = _REQUIRED) -> list:
    """``[e[key] for e in entries]`` (``default`` where absent, if given); on failure name the entry."""
    try:
        if default is _REQUIRED:
            return [e[key] for e in entries]
        return [e.get(key, default) for e in entries]
    except (KeyError, TypeError, IndexError, AttributeError):
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise UserError(f"{path}: {where}[{i}] is not a JSON object: {_short(e)}") from None
            if key not in e:
                raise UserError(f"{path}: {_at(where, i, e)}: missing field '{key}': {_short(e)}") from None
        raise


def _loc(where: str, i: int, entries: list | None) -> str:
    return _at(where, i, entries[i]) if entries is not None else f"{where}[{i}]"


def _at(where: str, i: int, entry: Any) -> str:
    """``annotations[3] (id 42)``: the entry's index, and its id when it has one."""
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{where}[{i}]" + (f" (id {ident})" if isinstance(ident, int) and where != "images" else "")


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _ints(values: list, key: str, path: Path, where: str, entries: list | None = None) -> np.ndarray:
    arr = np.array(values) if values else np.zeros(0, np.int64)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or not -2**63 <= v < 2**63:
            raise UserError(f"{path}: {_loc(where, i, entries)}: '{key}' must be an integer, got {_short(v)}")
    raise UserError(f"{path}: {where}: '{key}' values could not be read as integers")


def _floats(values: list, key: str, path: Path, where: str, width: int = 0,
            entries: list | None = None) -> np.ndarray:
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
        raise UserError(f"{path}: {_loc(where, i, entries)}: '{key}' is not finite: {_short(values[i])}")
    for i, v in enumerate(values):
        items = v if width else [v]
        if (width and (not isinstance(v, list) or len(v) != width)) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
            need = f"a list of {width} numbers" if width else "a number"
            raise UserError(f"{path}: {_loc(where, i, entries)}: '{key}' must be {need}, got {_short(v)}")
    raise UserError(f"{path}: {where}: '{key}' values could not be read as numbers")


def _check_sizes(bbox: np.ndarray, path: Path, where: str, entries: list) -> None:
    bad = (bbox[:, 2] < 0) | (bbox[:, 3] < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{path}: {_at(where, i, entries[i])}: 'bbox' [x, y, w, h] has a negative size: "
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


def _first_duplicate(ids: np.ndarray, path: Path, where: str, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[np.argmax(counts > 1)]
        i, j = np.nonzero(ids == dup)[0][:2]
        raise UserError(f"{path}: {where}[{j}]: duplicate {what} {dup} (also {where}[{i}])")


def _image_entries(images: list, ids: np.ndarray, path: Path) -> tuple[ImageEntry, ...]:
    out = []
    for i, (im, image_id) in enumerate(zip(images, ids)):
        for key in ("file_name", "height", "width"):
            if key not in im:
                raise UserError(f"{path}: images[{i}] (id {image_id}): missing field '{key}'")
        h, w, name = im["height"], im["width"], im["file_name"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
            raise UserError(f"{path}: images[{i}] (id {image_id}): height/width must be positive integers, "
                            f"got {_short(h)} x {_short(w)}")
        if not isinstance(name, str) or not name:
            raise UserError(f"{path}: images[{i}] (id {image_id}): file_name must be a non-empty string")
        out.append(ImageEntry(int(image_id), name, h, w))
    return tuple(out)


def load_ground_truth(path: str | Path, with_image_fields: bool = False) -> CocoGroundTruth:
    """Read and validate a COCO instances file (``images``, ``annotations``, ``categories``).

    The one validator of COCO ground truth: ``detector eval`` file mode, the COCO-JSON
    data loader (``with_image_fields=True`` also checks and returns ``file_name``,
    ``height``, ``width`` of every image) and so training all read GT through it.
    Errors name the file, the entry (``annotations[17] (id 4242)``) and the field.
    Optional per-annotation fields: ``iscrowd`` (0 or 1, default 0) and ``depth``
    (metres, default -1 = unknown).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with 'images', 'annotations' and "
                        f"'categories', got a {type(data).__name__}")
    images = _list_section(data, "images", path)
    cats = _list_section(data, "categories", path)
    anns = _list_section(data, "annotations", path)
    image_id_list = _ints(_field(images, "id", path, "images"), "id", path, "images")
    _first_duplicate(image_id_list, path, "images", "image id")
    image_ids = np.unique(image_id_list)
    entries = _image_entries(images, image_id_list, path) if with_image_fields else ()
    cat_id_list = _ints(_field(cats, "id", path, "categories"), "id", path, "categories")
    _first_duplicate(cat_id_list, path, "categories", "category id")
    order = np.argsort(cat_id_list, kind="stable")
    category_ids = cat_id_list[order]
    names = tuple(str(cats[i].get("name", category_ids[j])) for j, i in enumerate(order))

    where = "annotations"
    ann_id = _ints(_field(anns, "id", path, where), "id", path, where, anns)
    img = _ints(_field(anns, "image_id", path, where), "image_id", path, where, anns)
    cat = _ints(_field(anns, "category_id", path, where), "category_id", path, where, anns)
    bbox = _floats(_field(anns, "bbox", path, where), "bbox", path, where, width=4, entries=anns)
    area = _floats(_field(anns, "area", path, where), "area", path, where, entries=anns)
    crowd_raw = _floats(_field(anns, "iscrowd", path, where, default=0), "iscrowd", path, where,
                         entries=anns)
    depth = _floats(_field(anns, "depth", path, where, default=-1.0), "depth", path, where,
                    entries=anns).astype(np.float32)
    for key, bad, need in (("iscrowd", (crowd_raw != 0) & (crowd_raw != 1), "0 or 1"),
                           ("area", area < 0, "a non-negative number")):
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"{path}: {_at(where, i, anns[i])}: '{key}' must be {need}, got {_short(anns[i][key])}")
    _check_sizes(bbox, path, where, anns)
    img_idx, found = _index_of(img, image_ids)
    if not found.all():
        i = int(np.argmin(found))
        raise UserError(f"{path}: {_at(where, i, anns[i])}: image_id {img[i]} is not in 'images'")
    cat_idx, found = _index_of(cat, category_ids)
    if not found.all():
        i = int(np.argmin(found))
        raise UserError(f"{path}: {_at(where, i, anns[i])}: category_id {cat[i]} is not in 'categories'")
    _first_duplicate(ann_id, path, where, "annotation id")
    if (ann_id == 0).any():
        i = int(np.argmax(ann_id == 0))
        print(f"warning: {path}: {where}[{i}] has id 0; like pycocotools, a detection matched to it "
              f"counts as unmatched (cocoapi#664)", file=sys.stderr)
    arrays = GroundTruthArrays(image=img_idx, category=cat_idx, bbox_xywh=bbox, area=area,
                               iscrowd=crowd_raw != 0, ann_id=ann_id)
    return CocoGroundTruth(image_ids=image_ids, category_ids=category_ids, category_names=names,
                           arrays=arrays, depth=depth, images=entries)


def _optional_numbers(entries: list, key: str, missing: float) -> np.ndarray:
    """float64 ``[len(entries)]``: each entry's numeric ``key``, ``missing`` where absent or not a number."""
    out = np.full(len(entries), missing, np.float64)
    for i, e in enumerate(entries):
        v = e.get(key) if isinstance(e, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[i] = float(v)
    return out


def load_detections(path: str | Path, gt: CocoGroundTruth, ignore_unknown_categories: bool = False,
                    with_depth: bool = False) -> DetectionArrays:
    """Read a results list ``[{"image_id", "category_id", "bbox": [x,y,w,h], "score"}, ...]``.

    List order is the submission order (it breaks score ties within an image).  With
    ``with_depth`` the optional per-entry ``"depth"`` (metres) is read too (NaN where absent).
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
    _check_sizes(bbox, path, where, res)
    depth = _optional_numbers(res, "depth", np.nan) if with_depth else None
    del res
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
        depth = depth[found] if depth is not None else None
    return DetectionArrays(image=img_idx, category=cat_idx, bbox_xywh=bbox, score=score, depth=depth)
