"""Convert a Pascal-VOC folder split to a COCO instances JSON (``detector voc2coco``).

The boxes are exactly what the VOC loader produces (:func:`detector.data.voc.load_voc`:
``x = xmin - 1``, ``w = xmax - xmin + 1``, ...), so training from the JSON and from the
folder sees the same ground truth.  ``difficult`` objects become ``iscrowd: 1`` (ignored
by matching and by COCO evaluation, as VOC's own evaluation ignores them).  Category ids
are ``1..C`` in the order of ``classes`` (default: the sorted class names found in the
split); ``file_name`` is relative to ``JPEGImages/``, so the JSON pairs with
``data.train_images: <voc_root>/JPEGImages``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from detector.errors import UserError


def voc_class_names(voc_root: str | Path, split: str) -> list[str]:
    """Sorted object names found in the annotation files of ``split``."""
    import defusedxml.ElementTree as ET
    from defusedxml import DefusedXmlException

    from detector.data.records import confined_path

    root = Path(voc_root).expanduser()
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise UserError(f"{listing}: VOC split list not found")
    names = set()
    for stem in (ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()):
        xml = confined_path(root / "Annotations", f"{stem}.xml", f"{listing}: entry '{stem}'")
        try:
            tree = ET.parse(xml, forbid_dtd=True)
            names.update((o.findtext("name") or "").strip() for o in tree.getroot().iter("object"))
        except (ET.ParseError, OSError, DefusedXmlException) as e:
            raise UserError(f"{xml}: cannot parse XML: {e}") from None
    names.discard("")
    return sorted(names)


def voc_to_coco(voc_root: str | Path, split: str, out_json: str | Path,
                classes: Sequence[str] | None = None) -> Path:
    """Write ``out_json`` (COCO instances: images, annotations, categories) for one VOC split."""
    from detector.data.voc import load_voc

    classes = list(classes) if classes else voc_class_names(voc_root, split)
    records, notes = load_voc(voc_root, split, classes)
    jpeg_dir = Path(voc_root).expanduser() / "JPEGImages"
    images, anns = [], []
    for r in records:
        images.append({"id": int(r.image_id), "file_name": str(Path(r.image).relative_to(jpeg_dir)),
                       "height": int(r.height), "width": int(r.width)})
        for j in range(len(r.classes)):
            anns.append({"id": len(anns) + 1, "image_id": int(r.image_id), "category_id": int(r.classes[j]) + 1,
                         "bbox": [float(v) for v in r.boxes[j]], "area": float(r.area[j]),
                         "iscrowd": int(bool(r.is_crowd[j]))})
    out = Path(out_json).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)]}))
    return out
