"""Pascal-VOC folder loader: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

Box convention: VOC corners are 1-based inclusive pixels, converted as in detectron2
(``x = xmin - 1``, ``y = ymin - 1``, ``w = xmax - xmin + 1``, ``h = ymax - ymin + 1``).
``area`` is the box area ``w * h`` (VOC has no masks).  ``difficult=1`` objects become
``is_crowd=True``: like VOC's own evaluation they are neither positives nor false
positives (matching ignores anchors on them, COCO evaluation ignores them).  Depth is
unknown (-1).  ``image_id`` is the digits of the file stem (``2008_000123`` ->
2008000123), or the 1-based position in the split list when stems are not unique
numbers.  Unknown class names raise an error naming the XML file, or are skipped with
``data.unknown_classes: skip``.  Corners that are not finite numbers, or swapped
(``xmax < xmin``), are errors naming the object.

Security: the XML is parsed with ``defusedxml`` and a DTD is refused (no entity
expansion, no external entities); split-list stems and ``<filename>`` must stay inside
``Annotations/`` and ``JPEGImages/`` (:func:`~detector.data.records.confined_path`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import defusedxml.ElementTree as ET
import numpy as np
from defusedxml import DefusedXmlException

from detector.data.records import ImageRecord, confined_path
from detector.errors import UserError

log = logging.getLogger("detector.data")


def _text(node, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise UserError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node, tag: str, where: str) -> float:
    raw = _text(node, tag, where)
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{where}: <{tag}> is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: <{tag}> is not a finite number: {raw!r}")
    return value


def parse_voc_xml(xml_path: Path, class_names: Sequence[str],
                  unknown: str = "error") -> tuple[str, int, int, list[tuple[list[float], int, bool]]]:
    """``(file_name, height, width, objects)``; objects = [(xywh, class, difficult)]."""
    try:
        # defusedxml: refuses DTD entities (billion laughs, external entities)
        root = ET.parse(xml_path, forbid_dtd=True).getroot()
    except DefusedXmlException as e:
        raise UserError(f"{xml_path}: refused: the XML declares a DTD or entities ({type(e).__name__}); "
                        "VOC annotation files have none") from None
    except (ET.ParseError, OSError) as e:
        raise UserError(f"{xml_path}: cannot parse XML: {e}") from None
    size = root.find("size")
    if size is None:
        raise UserError(f"{xml_path}: missing <size>")
    height, width = int(_number(size, "height", str(xml_path))), int(_number(size, "width", str(xml_path)))
    file_name = _text(root, "filename", str(xml_path))
    index = {n: i for i, n in enumerate(class_names)}
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml_path}: object[{k}]"
        name = _text(obj, "name", where)
        if name not in index:
            if unknown == "skip":
                continue
            raise UserError(f"{where}: class '{name}' is not in data.classes {list(class_names)} "
                            "(add it, or set data.unknown_classes: skip)")
        bb = obj.find("bndbox")
        if bb is None:
            raise UserError(f"{where}: missing <bndbox>")
        x0, y0, x1, y1 = (_number(bb, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise UserError(f"{where}: bndbox has xmax < xmin or ymax < ymin: {[x0, y0, x1, y1]}")
        diff = obj.find("difficult")
        difficult = diff is not None and (diff.text or "0").strip() == "1"
        objects.append(([x0 - 1.0, y0 - 1.0, x1 - x0 + 1.0, y1 - y0 + 1.0], index[name], difficult))
    return file_name, height, width, objects


def load_voc(voc_root: str | Path, split: str, class_names: Sequence[str],
             unknown: str = "error") -> tuple[list[ImageRecord], dict]:
    """Records of the images listed in ``ImageSets/Main/<split>.txt`` (list order)."""
    root = Path(voc_root).expanduser()
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise UserError(f"{listing}: VOC split list not found (data.voc_root / data.*_split)")
    stems = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()]
    digits = [re.sub(r"\D", "", s) for s in stems]
    numeric = all(digits) and len(set(digits)) == len(digits)
    records, missing = [], 0
    for pos, stem in enumerate(stems):
        xml = confined_path(root / "Annotations", f"{stem}.xml", f"{listing}: line {pos + 1}")
        if not xml.is_file():
            raise UserError(f"{listing}: entry '{stem}' has no annotation file {xml}")
        file_name, height, width, objs = parse_voc_xml(xml, class_names, unknown)
        image = confined_path(root / "JPEGImages", file_name, f"{xml}: <filename>")
        if not image.is_file():
            image = root / "JPEGImages" / f"{stem}.jpg"
        if not image.is_file():
            missing += 1
            log.warning("%s: image %s not found; skipping it", xml, image)
            continue
        records.append(ImageRecord(
            image=str(image), image_id=int(digits[pos]) if numeric else pos + 1,
            height=height, width=width,
            boxes=np.array([o[0] for o in objs], np.float64).reshape(-1, 4),
            classes=np.array([o[1] for o in objs], np.int32),
            is_crowd=np.array([o[2] for o in objs], bool),
            area=np.array([o[0][2] * o[0][3] for o in objs], np.float64),
            depth=np.full(len(objs), -1.0, np.float32)))
    return records, {"missing_images": missing}
