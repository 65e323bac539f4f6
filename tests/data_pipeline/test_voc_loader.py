"""Pascal-VOC loader and the COCO-format GT file written for it."""

import json

import cv2
import numpy as np
import pytest

from detector.data import dataset_info
from detector.data.voc import load_voc
from detector.errors import UserError

XML = """<annotation><filename>{stem}.jpg</filename>
<size><width>50</width><height>30</height><depth>3</depth></size>{objects}</annotation>"""
OBJ = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def _voc(root, items):
    """items: {stem: [(name, difficult, x0, y0, x1, y1), ...]}; same list for train and val."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for stem, objs in items.items():
        body = "".join(OBJ.format(name=n, difficult=d, x0=a, y0=b, x1=c, y1=e) for n, d, a, b, c, e in objs)
        (root / "Annotations" / f"{stem}.xml").write_text(XML.format(stem=stem, objects=body))
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.zeros((30, 50, 3), np.uint8))
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(items) + "\n")


ITEMS = {"2008_000007": [("dog", 0, 1, 1, 10, 20), ("cat", 1, 5, 6, 5, 6)],
         "2008_000123": []}


def test_records(tmp_path):
    _voc(tmp_path, ITEMS)
    records, notes = load_voc(tmp_path, "train", ("cat", "dog"))
    assert [r.image_id for r in records] == [2008000007, 2008000123]
    r = records[0]
    # 1-based inclusive corners -> xywh: x = xmin - 1, w = xmax - xmin + 1.
    np.testing.assert_array_equal(r.boxes, [[0, 0, 10, 20], [4, 5, 1, 1]])
    np.testing.assert_array_equal(r.classes, [1, 0])
    np.testing.assert_array_equal(r.is_crowd, [False, True])   # difficult -> ignored like crowd
    np.testing.assert_array_equal(r.area, [200, 1])
    np.testing.assert_array_equal(r.depth, [-1, -1])
    assert (r.height, r.width) == (30, 50) and len(records[1].classes) == 0


def test_unknown_class_names_the_xml(tmp_path):
    _voc(tmp_path, ITEMS)
    with pytest.raises(UserError, match=r"2008_000007.xml: object\[0\]: class 'dog' is not in data.classes"):
        load_voc(tmp_path, "train", ("cat",))
    records, _ = load_voc(tmp_path, "train", ("cat",), unknown="skip")
    np.testing.assert_array_equal(records[0].classes, [0])


def test_gt_json_for_pycocotools(tmp_path, smoke_cfg):
    from pycocotools.coco import COCO

    _voc(tmp_path / "voc", ITEMS)
    cfg = smoke_cfg("data.source=voc", f"data.voc_root={tmp_path / 'voc'}", "data.classes=[cat, dog]")
    info = dataset_info(cfg)
    assert (info.num_train, info.num_val, info.category_ids) == (2, 2, (1, 2))
    doc = json.loads(open(info.gt_json).read())
    assert [a["bbox"] for a in doc["annotations"]] == [[0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 1.0, 1.0]]
    assert [a["iscrowd"] for a in doc["annotations"]] == [0, 1]
    coco = COCO(info.gt_json)
    assert sorted(coco.getImgIds()) == [2008000007, 2008000123]
    assert coco.loadCats(2)[0]["name"] == "dog"
