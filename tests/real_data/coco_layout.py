"""A tiny COCO 2017 download directory laid out as tfds' coco/2017 builder expects, offline.

tfds' builder downloads five archives and extracts them; ``write_download_dir`` writes
what the download manager would have left behind (an empty archive plus ``.INFO``
metadata per URL under ``<dir>/``, and the extracted trees under
``<dir>/extracted/ZIP.<archive name>/``), so that ``download_and_prepare`` skips the
download and extraction and reads our files (docs/datasets.md, "offline preparation").
The annotation files use the official layout and the 80 official categories (ids 1..90
with gaps); the images are real JPEGs from tests/data/raccoon_mini.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from detector.data.coco_categories import COCO_CATEGORIES
from tests.raccoon_mini import MINI

# (split folder, image stems) and each image's boxes: (category id, [x, y, w, h])
SPLITS = {
    "train2017": ["raccoon-151", "raccoon-131", "raccoon-166", "raccoon-165"],
    "val2017": ["raccoon-39", "raccoon-159"],
}


def _voc_box(stem: str) -> tuple[list[float], int, int]:
    import xml.etree.ElementTree as ET

    root = ET.parse(MINI / "Annotations" / f"{stem}.xml").getroot()
    b = root.find("object/bndbox")
    x0, y0, x1, y1 = (float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
    w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
    return [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1], w, h


def instances(split: str, first_image_id: int) -> dict:
    """Official-layout instances JSON: the raccoon is a 'bear' (id 23); the first image also
    has a 'toothbrush' (id 90) box, so two category ids with gaps are in play."""
    images, anns = [], []
    for k, stem in enumerate(SPLITS[split]):
        box, w, h = _voc_box(stem)
        image_id = first_image_id + k
        images.append({"license": 1, "file_name": f"{image_id:012d}.jpg", "coco_url": "", "height": h,
                       "width": w, "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id})
        anns.append({"segmentation": [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3]]],
                     "area": box[2] * box[3] * 0.7, "iscrowd": 0, "image_id": image_id, "bbox": box,
                     "category_id": 23, "id": 1000 * first_image_id + len(anns) + 1})
        if k == 0:
            anns.append({"segmentation": [[2, 2, 20, 2, 20, 12]], "area": 150.0, "iscrowd": 0,
                         "image_id": image_id, "bbox": [2.0, 2.0, 18.0, 10.0], "category_id": 90,
                         "id": 1000 * first_image_id + len(anns) + 1})
    cats = [{"supercategory": "x", "id": cid, "name": name} for cid, name in COCO_CATEGORIES]
    return {"info": {"description": "raccoon_mini as COCO 2017"}, "licenses": [{"id": 1, "name": "MIT"}],
            "images": images, "annotations": anns, "categories": cats}


def write_download_dir(download_dir: Path, builder) -> dict:
    """Populate ``download_dir`` for ``builder`` (tfds coco/2017); returns the val instances JSON."""
    from tensorflow_datasets.core.download import resource

    download_dir.mkdir(parents=True, exist_ok=True)
    extracted = {}
    for url, info in builder.url_infos.items():
        fname = resource.get_dl_fname(url, info.checksum)
        (download_dir / fname).write_bytes(b"")
        (download_dir / f"{fname}.INFO").write_text("{}")
        extracted[url.rsplit("/", 1)[-1]] = download_dir / "extracted" / f"ZIP.{fname}"
    first_id = {"train2017": 100, "val2017": 200}
    for split, stems in SPLITS.items():
        folder = extracted[f"{split}.zip"] / split
        folder.mkdir(parents=True, exist_ok=True)
        for k, stem in enumerate(stems):
            shutil.copy(MINI / "JPEGImages" / f"{stem}.jpg", folder / f"{first_id[split] + k:012d}.jpg")
    ann_dir = extracted["annotations_trainval2017.zip"] / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    val = instances("val2017", first_id["val2017"])
    (ann_dir / "instances_train2017.json").write_text(json.dumps(instances("train2017", first_id["train2017"])))
    (ann_dir / "instances_val2017.json").write_text(json.dumps(val))
    test_images = extracted["test2017.zip"] / "test2017"
    test_images.mkdir(parents=True, exist_ok=True)
    shutil.copy(MINI / "JPEGImages" / "raccoon-39.jpg", test_images / "000000000300.jpg")
    info_dir = extracted["image_info_test2017.zip"] / "annotations"
    info_dir.mkdir(parents=True, exist_ok=True)
    (info_dir / "image_info_test2017.json").write_text(json.dumps({
        "info": {}, "licenses": [], "categories": [{"supercategory": "x", "id": c, "name": n}
                                                   for c, n in COCO_CATEGORIES],
        "images": [{"file_name": "000000000300.jpg", "height": 172, "width": 250, "id": 300}]}))
    return val
