"""Annotation files are untrusted input: image names stay inside the image folder, and
VOC XML is parsed without entity expansion (defusedxml)."""

import json

import cv2
import numpy as np
import pytest
from datapipe_helpers import write_coco

from detector.data.coco_json import load_coco_json
from detector.data.records import confined_path
from detector.data.voc import load_voc
from detector.errors import UserError

CATS = [{"id": 1, "name": "a"}]


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/../../x.jpg", "..", "C:\\x.jpg",
                                  "", "a\0b.jpg"])
def test_confined_path_refuses_names_leaving_the_folder(tmp_path, name):
    with pytest.raises(UserError, match=r"entry 7: image name .* is not a path inside the image folder"):
        confined_path(tmp_path, name, "entry 7")


@pytest.mark.parametrize("name", ["x.jpg", "sub/x.jpg", "sub/../x.jpg", "./x.jpg", "..x.jpg"])
def test_confined_path_keeps_names_inside(tmp_path, name):
    assert confined_path(tmp_path, name, "e") == tmp_path / name


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd"])
def test_coco_file_name_outside_the_folder_is_refused_naming_the_entry(tmp_path, bad):
    js = write_coco(tmp_path, [{"id": 1, "file_name": "ok.jpg", "height": 8, "width": 8},
                               {"id": 5, "file_name": "ok2.jpg", "height": 8, "width": 8}], [], CATS)
    doc = json.loads(js.read_text())
    doc["images"][1]["file_name"] = bad
    js.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=rf"instances.json: images\[1\] \(id 5\) file_name: image name '{bad}'"):
        load_coco_json(js, tmp_path / "images", ["a"])


def _voc(root, stem="img1", filename="img1.jpg", extra=""):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{stem}.xml").write_text(
        f"{extra}<annotation><filename>{filename}</filename><size><width>8</width><height>8</height></size>"
        "</annotation>")
    cv2.imwrite(str(root / "JPEGImages" / "img1.jpg"), np.zeros((8, 8, 3), np.uint8))
    (root / "ImageSets" / "Main" / "train.txt").write_text(f"{stem}\n")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd"])
def test_voc_filename_outside_the_folder_is_refused(tmp_path, bad):
    _voc(tmp_path, filename=bad)
    with pytest.raises(UserError, match=r"img1.xml: <filename>: image name .* is not a path inside"):
        load_voc(tmp_path, "train", ["a"])


def test_voc_split_list_entry_outside_the_folder_is_refused(tmp_path):
    _voc(tmp_path)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("../../../etc/passwd\n")
    with pytest.raises(UserError, match=r"train.txt: line 1: image name '../../../etc/passwd.xml'"):
        load_voc(tmp_path, "train", ["a"])


@pytest.mark.parametrize("dtd", [
    # billion laughs (entity expansion)
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>',
    # external entity (file disclosure)
    '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
])
def test_voc_xml_with_a_dtd_or_entities_is_refused(tmp_path, dtd):
    _voc(tmp_path, extra=dtd)
    with pytest.raises(UserError, match=r"img1.xml: refused: the XML declares a DTD or entities"):
        load_voc(tmp_path, "train", ["a"])


@pytest.mark.parametrize("corners,match", [(("nan", 1, 5, 5), "<xmin> is not a finite number: 'nan'"),
                                           ((1, 1, "inf", 5), "<xmax> is not a finite number"),
                                           ((6, 1, 2, 5), "bndbox has xmax < xmin")])
def test_voc_non_finite_or_swapped_corners_are_errors_naming_the_object(tmp_path, corners, match):
    _voc(tmp_path)
    x0, y0, x1, y1 = corners
    obj = (f"<object><name>a</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
           f"<ymax>{y1}</ymax></bndbox></object>")
    xml = tmp_path / "Annotations" / "img1.xml"
    xml.write_text(xml.read_text().replace("</annotation>", obj + "</annotation>"))
    with pytest.raises(UserError, match=r"img1.xml: object\[0\]: " + match.replace("<", r"\<").replace(">", r"\>")):
        load_voc(tmp_path, "train", ["a"])
