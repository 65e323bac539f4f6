"""COCO-JSON loader: ``instances_*.json`` + an image folder -> :class:`ImageRecord` list.

The file is validated by the project's one COCO ground-truth validator,
:func:`detector.evaluation.coco_io.load_ground_truth`, whose errors name the file and
the entry (``annotations[17] (id 4242)``).  Zero-size boxes and boxes outside the
image are legal in the file: the pipeline clips them and drops (and counts) the
degenerate ones from training targets.

Classes are matched by category NAME to ``data.classes`` (index = position there).
An annotation whose category name is not listed raises an error, or with
``data.unknown_classes: skip`` is dropped with one warning per category.
Optional per-annotation fields: ``iscrowd`` (default 0), ``depth`` (metres; -1 if
absent).  Images whose file is missing are skipped with a warning.  ``file_name`` must
stay inside the image folder (:func:`~detector.data.records.confined_path`): an
absolute path or one climbing out with ``..`` is refused, naming the entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.data.records import ImageRecord, confined_path
from detector.errors import UserError
from detector.evaluation.coco_io import load_ground_truth

log = logging.getLogger("detector.data")

_CACHE: dict[tuple, tuple[list[ImageRecord], dict]] = {}


def load_coco_json(json_path: str | os.PathLike, images_dir: str | os.PathLike, class_names: Sequence[str],
                   unknown: str = "error") -> tuple[list[ImageRecord], dict]:
    """Records of every image in ``json_path`` (image-file order), annotations in file order.

    Returns ``(records, notes)``; ``notes`` counts ``missing_images`` and
    ``skipped_annotations`` (unknown categories with ``unknown="skip"``) and gives
    ``category_ids``: class index -> category id in this file (-1 if it lacks the class).
    """
    path = Path(json_path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, str(images_dir), tuple(class_names), unknown)
    if key in _CACHE:
        return _CACHE[key]
    gt = load_ground_truth(path, with_image_fields=True)
    index = {n: i for i, n in enumerate(class_names)}
    # category index (sorted category ids) -> class index, -1 when the name is not a class
    to_class = np.array([index.get(n, -1) for n in gt.category_names], np.int32)
    a = gt.arrays
    classes = to_class[a.category] if len(a.category) else np.zeros(0, np.int32)
    unknown_mask = classes < 0
    skipped = int(unknown_mask.sum())
    if skipped:
        first = int(np.argmax(unknown_mask))
        cname = gt.category_names[a.category[first]]
        if unknown != "skip":
            raise UserError(f"{path}: annotations[{first}] (id {a.ann_id[first]}): category '{cname}' is not in "
                            f"data.classes {list(class_names)} (add it, or set data.unknown_classes: skip)")
        for k in np.unique(a.category[unknown_mask]):
            n = int((a.category[unknown_mask] == k).sum())
            log.warning("%s: skipped %d annotations of category '%s' (not in data.classes)",
                        path, n, gt.category_names[k])
    keep = ~unknown_mask
    order = np.argsort(a.image[keep], kind="stable")          # group by image, file order inside
    ann_index = np.flatnonzero(keep)[order]
    starts = np.searchsorted(a.image[ann_index], np.arange(len(gt.image_ids) + 1))
    records, missing = [], 0
    root = Path(images_dir).expanduser()
    for i, im in enumerate(gt.images):
        file = confined_path(root, im.file_name, f"{path}: images[{i}] (id {im.image_id}) file_name")
        if not os.path.isfile(file):
            missing += 1
            if missing <= 10:
                log.warning("%s: image file %s (image id %d) not found; skipping it", path, file, im.image_id)
            continue
        k = int(np.searchsorted(gt.image_ids, im.image_id))
        sel = ann_index[starts[k]:starts[k + 1]]
        records.append(ImageRecord(
            image=str(file), image_id=im.image_id, height=im.height, width=im.width,
            boxes=a.bbox_xywh[sel].reshape(-1, 4), classes=classes[sel].astype(np.int32),
            is_crowd=a.iscrowd[sel], area=a.area[sel], depth=gt.depth[sel]))
    if missing:
        log.warning("%s: %d image files not found under %s (skipped)", path, missing, root)
    by_name = dict(zip(gt.category_names, gt.category_ids.tolist()))
    notes = {"missing_images": missing, "skipped_annotations": skipped,
             "category_ids": tuple(by_name.get(n, -1) for n in class_names)}
    _CACHE[key] = (records, notes)
    return records, notes
