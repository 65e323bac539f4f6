"""COCO-JSON loader: record contents and error messages naming file and entry."""

import json

import numpy as np
import pytest
from datapipe_helpers import write_coco

from detector.data.coco_json import load_coco_json
from detector.errors import UserError

CLASSES = ("circle", "square")
# Category ids deliberately unlike class indices: mapping must go by NAME.
CATS = [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}]


def _dataset(tmp_path, anns, cats=CATS):
    images = [{"id": 11, "file_name": "a.jpg", "height": 40, "width": 60},
              {"id": 12, "file_name": "b.jpg", "height": 40, "width": 60}]
    return write_coco(tmp_path, images, anns, cats)


def _ann(i, **kw):
    a = {"id": i, "image_id": 11, "category_id": 7, "bbox": [1.25, 2.5, 10.0, 20.75], "area": 150.5}
    a.update(kw)
    return a


def test_records_map_classes_by_name_and_keep_values(tmp_path):
    anns = [_ann(1), _ann(2, category_id=3, iscrowd=1, depth=12.5, bbox=[0, 0, 0, 5], area=0),
            _ann(3, image_id=12, bbox=[59.5, 39.75, 30.0, 30.0], area=7)]
    path = _dataset(tmp_path, anns)
    records, notes = load_coco_json(path, tmp_path / "images", CLASSES)
    assert [r.image_id for r in records] == [11, 12]          # images in file order
    a, b = records
    assert a.boxes.dtype == np.float64
    np.testing.assert_array_equal(a.boxes, [[1.25, 2.5, 10.0, 20.75], [0, 0, 0, 5]])
    np.testing.assert_array_equal(a.classes, [1, 0])          # square -> 1, circle -> 0
    np.testing.assert_array_equal(a.is_crowd, [False, True])
    np.testing.assert_array_equal(a.area, [150.5, 0.0])
    np.testing.assert_array_equal(a.depth, [-1.0, 12.5])      # -1 = unknown
    assert (a.height, a.width) == (40, 60) and a.image.endswith("a.jpg")
    np.testing.assert_array_equal(b.boxes, [[59.5, 39.75, 30.0, 30.0]])  # outside: kept as is
    assert notes["category_ids"] == (3, 7)                    # class index -> file category id


@pytest.mark.parametrize("bad, message", [
    ({"bbox": [1, 2, 3]}, r"annotations\[1\] \(id 2\): 'bbox' must be a list of 4 numbers"),
    ({"bbox": [1, 2, -3, 4]}, r"annotations\[1\] \(id 2\): 'bbox' \[x, y, w, h\] has a negative size"),
    ({"bbox": [1, 2, "w", 4]}, r"annotations\[1\] \(id 2\): 'bbox' must be a list of 4"),
    ({"area": None}, r"annotations\[1\] \(id 2\): 'area' must be a number"),
    ({"image_id": 99}, r"annotations\[1\] \(id 2\): image_id 99 is not in 'images'"),
    ({"category_id": 5}, r"annotations\[1\] \(id 2\): category_id 5 is not in 'categories'"),
    ({"area": -1.5}, r"annotations\[1\] \(id 2\): 'area' must be a non-negative number, got -1.5"),
    ({"depth": "far"}, r"annotations\[1\] \(id 2\): 'depth' must be a number"),
    ({"id": 1}, r"annotations\[1\]: duplicate annotation id 1 \(also annotations\[0\]\)"),
    ({"iscrowd": 2}, r"annotations\[1\] \(id 2\): 'iscrowd' must be 0 or 1"),
])
def test_bad_annotation_names_file_and_index(tmp_path, bad, message):
    path = _dataset(tmp_path, [_ann(1), _ann(2, **bad)])
    with pytest.raises(UserError, match=message) as e:
        load_coco_json(path, tmp_path / "images", CLASSES)
    assert str(path) in str(e.value)


def test_missing_field_is_named(tmp_path):
    a = _ann(2)
    del a["bbox"]
    path = _dataset(tmp_path, [_ann(1), a])
    with pytest.raises(UserError, match=r"annotations\[1\] \(id 2\): missing field 'bbox'"):
        load_coco_json(path, tmp_path / "images", CLASSES)


def test_unknown_category_error_or_skip(tmp_path):
    cats = CATS + [{"id": 9, "name": "hexagon"}]
    path = _dataset(tmp_path, [_ann(1), _ann(2, category_id=9)], cats)
    with pytest.raises(UserError, match=r"annotations\[1\] \(id 2\): category 'hexagon' is not in data.classes"):
        load_coco_json(path, tmp_path / "images", CLASSES)
    records, notes = load_coco_json(path, tmp_path / "images", CLASSES, unknown="skip")
    assert notes["skipped_annotations"] == 1
    np.testing.assert_array_equal(records[0].classes, [1])


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="annotation file not found"):
        load_coco_json(tmp_path / "nope.json", tmp_path, CLASSES)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=f"{bad}: not valid JSON"):
        load_coco_json(bad, tmp_path, CLASSES)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(UserError, match="no 'categories' list at the top level"):
        load_coco_json(bad, tmp_path, CLASSES)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "height": 4, "width": 4},
                                          {"id": 1, "file_name": "y.jpg", "height": 4, "width": 4}],
                               "annotations": [], "categories": CATS}))
    with pytest.raises(UserError, match=r"images\[1\]: duplicate image id 1 \(also images\[0\]\)"):
        load_coco_json(bad, tmp_path, CLASSES)


def test_missing_image_file_is_skipped(tmp_path):
    path = _dataset(tmp_path, [_ann(1)])
    (tmp_path / "images" / "b.jpg").unlink()
    records, notes = load_coco_json(path, tmp_path / "images", CLASSES)
    assert [r.image_id for r in records] == [11] and notes["missing_images"] == 1
