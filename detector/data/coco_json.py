"""COCO-JSON loader: ``instances_*.json`` + an image folder -> :class:`ImageRecord` list.

Validation raises :class:`~detector.errors.UserError` naming the file and the entry
(``annotations[17] (id 4242)``) for: missing fields, a bbox that is not 4 finite
numbers or has negative width/height, unknown image or category ids, duplicate image
ids.  Zero-size boxes and boxes outside the image are legal in the file: the pipeline
clips them and drops (and counts) the degenerate ones from training targets.

Classes are matched by category NAME to ``data.classes`` (index = position there).
An annotation whose category name is not listed raises an error, or with
``data.unknown_classes: skip`` is dropped with one warning per category.
Optional per-annotation fields: ``iscrowd`` (default 0), ``depth`` (metres; -1 if
absent).  Images whose file is missing are skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from detector.data.records import ImageRecord
from detector.errors import UserError

log = logging.getLogger("detector.data")

_CACHE: dict[tuple, tuple[list[ImageRecord], dict]] = {}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: the top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"{path}: missing or non-list '{key}'")
    return doc


def _categories(doc: dict, path: Path, class_names) -> dict[int, int | None]:
    """category id -> class index (None: name not in ``class_names``)."""
    index = {n: i for i, n in enumerate(class_names)}
    out: dict[int, int | None] = {}
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise UserError(f"{path}: categories[{i}]: needs an integer 'id' and a string 'name'")
        if c["id"] in out:
            raise UserError(f"{path}: categories[{i}]: duplicate category id {c['id']}")
        out[c["id"]] = index.get(c["name"])
    return out


def _images(doc: dict, path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for i, im in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict):
            raise UserError(f"{where}: not an object")
        for k in ("id", "file_name", "height", "width"):
            if k not in im:
                raise UserError(f"{where}: missing field '{k}'")
        if not isinstance(im["id"], int) or isinstance(im["id"], bool):
            raise UserError(f"{where}: 'id' must be an integer, got {im['id']!r}")
        if not (isinstance(im["height"], int) and isinstance(im["width"], int)
                and im["height"] > 0 and im["width"] > 0):
            raise UserError(f"{where} (id {im['id']}): height/width must be positive integers")
        if im["id"] in out:
            raise UserError(f"{where}: duplicate image id {im['id']}")
        out[im["id"]] = im
    return out


def load_coco_json(json_path, images_dir, class_names, unknown: str = "error") -> tuple[list[ImageRecord], dict]:
    """Records of every image in ``json_path`` (image-file order), annotations in file order.

    Returns ``(records, notes)``; ``notes`` counts ``missing_images`` and
    ``skipped_annotations`` (unknown categories with ``unknown="skip"``).
    """
    path = Path(json_path).expanduser()
    st = path.stat() if path.is_file() else None
    key = (str(path.resolve()), st and st.st_mtime_ns, st and st.st_size, str(images_dir),
           tuple(class_names), unknown)
    if key in _CACHE:
        return _CACHE[key]
    doc = _load_json(path)
    cats = _categories(doc, path, class_names)
    images = _images(doc, path)
    per_image: dict[int, list] = {i: [] for i in images}
    skipped: Counter = Counter()
    names = {c["id"]: c["name"] for c in doc["categories"]}
    for i, a in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict):
            raise UserError(f"{where}: not an object")
        where += f" (id {a.get('id', '?')})"
        for k in ("image_id", "category_id", "bbox", "area"):
            if k not in a:
                raise UserError(f"{where}: missing field '{k}'")
        b = a["bbox"]
        if not (isinstance(b, list) and len(b) == 4 and all(_num(v) for v in b)):
            raise UserError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {b!r}")
        if b[2] < 0 or b[3] < 0:
            raise UserError(f"{where}: bbox has negative width/height: {b!r}")
        if not _num(a["area"]) or a["area"] < 0:
            raise UserError(f"{where}: area must be a non-negative number, got {a['area']!r}")
        if a["image_id"] not in per_image:
            raise UserError(f"{where}: image_id {a['image_id']!r} is not in 'images'")
        if a["category_id"] not in cats:
            raise UserError(f"{where}: category_id {a['category_id']!r} is not in 'categories'")
        cls = cats[a["category_id"]]
        if cls is None:
            cname = names[a["category_id"]]
            if unknown != "skip":
                raise UserError(
                    f"{where}: category '{cname}' is not in data.classes {list(class_names)} "
                    "(add it, or set data.unknown_classes: skip)")
            skipped[cname] += 1
            continue
        depth = a.get("depth", -1.0)
        if not _num(depth):
            raise UserError(f"{where}: depth must be a number (metres), got {depth!r}")
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1, True, False):
            raise UserError(f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
        per_image[a["image_id"]].append((b, cls, bool(crowd), float(a["area"]), float(depth)))
    for cname, n in skipped.items():
        log.warning("%s: skipped %d annotations of category '%s' (not in data.classes)", path, n, cname)
    records, missing = [], 0
    root = Path(images_dir).expanduser()
    for image_id, im in images.items():
        file = root / im["file_name"]
        if not os.path.isfile(file):
            missing += 1
            if missing <= 10:
                log.warning("%s: image file %s (image id %d) not found; skipping it", path, file, image_id)
            continue
        anns = per_image[image_id]
        records.append(ImageRecord(
            image=str(file), image_id=image_id, height=im["height"], width=im["width"],
            boxes=np.array([a[0] for a in anns], np.float64).reshape(-1, 4),
            classes=np.array([a[1] for a in anns], np.int32),
            is_crowd=np.array([a[2] for a in anns], bool),
            area=np.array([a[3] for a in anns], np.float64),
            depth=np.array([a[4] for a in anns], np.float32)))
    if missing:
        log.warning("%s: %d image files not found under %s (skipped)", path, missing, root)
    notes = {"missing_images": missing, "skipped_annotations": sum(skipped.values()),
             "category_ids": _category_ids(doc, class_names)}
    _CACHE[key] = (records, notes)
    return records, notes


def _category_ids(doc: dict, class_names) -> tuple[int, ...]:
    """Class index -> category id in this file (-1 when the file lacks the class)."""
    by_name = {c["name"]: c["id"] for c in doc["categories"]}
    return tuple(by_name.get(n, -1) for n in class_names)
