"""make_dataset: static shapes, val completeness/padding, skipping bad data, determinism."""

import json

import numpy as np
import pytest
import tensorflow as tf
from datapipe_helpers import write_coco

from detector.data import PipelineStats, dataset_info, make_dataset
from detector.targets.anchors import anchors_for_config


def _batches(ds, n=None):
    it = ds if n is None else ds.take(n)
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in it]


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_static_shapes_and_dtypes(smoke_cfg, backend):
    cfg = smoke_cfg(f"data.augment.backend={backend}")
    n = len(anchors_for_config(cfg))
    b, s, m = 4, 128, 16
    want = {"images": ([b, s, s, 3], tf.float32),
            "targets": {"cls": ([b, n], tf.int32), "box": ([b, n, 4], tf.float32),
                        "depth": ([b, n], tf.float32), "depth_mask": ([b, n], tf.float32)},
            "gt": {"boxes": ([b, m, 4], tf.float32), "boxes_xywh": ([b, m, 4], tf.float64),
                   "classes": ([b, m], tf.int32), "is_crowd": ([b, m], tf.bool),
                   "area": ([b, m], tf.float64), "depth": ([b, m], tf.float32),
                   "num_boxes": ([b], tf.int32), "image_id": ([b], tf.int64), "scale": ([b], tf.float32),
                   "original_size": ([b, 2], tf.int32), "valid": ([b], tf.bool)}}
    for training in (True, False):
        ds = make_dataset(cfg, "train" if training else "val", training)
        got = tf.nest.map_structure(lambda sp: (sp.shape.as_list(), sp.dtype), ds.element_spec)
        assert got == want
    batch = _batches(ds, 1)[0]
    assert batch["images"].max() > 50 and batch["images"].min() >= 0


def test_val_yields_every_image_once_in_file_order(smoke_cfg):
    cfg = smoke_cfg("data.synthetic.num_val=10")
    info = dataset_info(cfg)
    doc = json.loads(open(info.gt_json).read())
    batches = _batches(make_dataset(cfg, "val", training=False))
    assert len(batches) == 3                                     # ceil(10 / 4)
    ids = np.concatenate([b["gt"]["image_id"] for b in batches])
    valid = np.concatenate([b["gt"]["valid"] for b in batches])
    assert ids[valid].tolist() == list(range(1, 11)) and valid.tolist() == [True] * 10 + [False] * 2
    last = batches[-1]
    assert (last["gt"]["num_boxes"][2:] == 0).all() and (last["gt"]["classes"][2:] == -1).all()
    assert (last["targets"]["cls"][2:] == -2).all()              # padding images: all ignored
    assert not last["images"][2:].any()
    # GT carries the annotation values untouched, in file order.
    for b in batches:
        for i in np.flatnonzero(b["gt"]["valid"]):
            anns = [a for a in doc["annotations"] if a["image_id"] == b["gt"]["image_id"][i]]
            k = b["gt"]["num_boxes"][i]
            assert k == len(anns)
            np.testing.assert_array_equal(b["gt"]["boxes_xywh"][i, :k], np.reshape([a["bbox"] for a in anns], (-1, 4)))
            np.testing.assert_array_equal(b["gt"]["area"][i, :k], [a["area"] for a in anns])
            np.testing.assert_array_equal(b["gt"]["classes"][i, :k], [a["category_id"] - 1 for a in anns])
            np.testing.assert_allclose(b["gt"]["depth"][i, :k], [a["depth"] for a in anns], rtol=1e-6)
            # Positive anchors carry classes of this image's non-crowd boxes.
            pos = b["targets"]["cls"][i][b["targets"]["cls"][i] >= 0]
            regular = {a["category_id"] - 1 for a in anns if not a["iscrowd"]}
            assert set(pos.tolist()) == regular
    # Finite and repeatable.
    again = _batches(make_dataset(cfg, "val", training=False))
    np.testing.assert_array_equal(again[1]["images"], batches[1]["images"])


def _bad_dataset(tmp_path, smoke_cfg, backend):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    images = [{"id": 1, "file_name": "a.jpg", "height": 48, "width": 64, "pixels": pixels},
              {"id": 2, "file_name": "b.jpg", "height": 48, "width": 64, "raw": b"\xff\xd8garbage"},
              {"id": 3, "file_name": "c.jpg", "height": 48, "width": 64, "pixels": pixels},
              {"id": 4, "file_name": "d.jpg", "height": 48, "width": 64, "pixels": pixels}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10], "area": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [70, 10, 10, 10], "area": 100},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100},
            {"id": 5, "image_id": 4, "category_id": 2, "bbox": [30, 20, 30.5, 20.25], "area": 600.5}]
    path = write_coco(tmp_path / "coco", images, anns, [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}])
    img_dir = tmp_path / "coco" / "images"
    return smoke_cfg("data.source=coco_json", "data.classes=[circle, square]", f"data.train_json={path}",
                     f"data.val_json={path}", f"data.train_images={img_dir}", f"data.val_images={img_dir}",
                     "train.batch_size=2", "eval.batch_size=2", "data.image_size=64",
                     f"data.augment.backend={backend}")


def test_bad_images_and_boxes_are_skipped_and_counted(tmp_path, smoke_cfg):
    cfg = _bad_dataset(tmp_path, smoke_cfg, "albumentations")
    stats = PipelineStats()
    batches = _batches(make_dataset(cfg, "train", training=True, stats=stats), 4)
    assert stats.images_skipped >= 1 and set(stats.skipped_files) == {str(tmp_path / "coco/images/b.jpg")}
    assert stats.boxes_degenerate >= 2                       # zero width + fully outside
    ids = np.concatenate([b["gt"]["image_id"] for b in batches])
    assert 2 not in ids and set(ids) == {1, 3, 4}
    for b in batches:
        for i in np.flatnonzero(b["gt"]["image_id"] == 1):
            assert b["gt"]["num_boxes"][i] == 1              # only the valid box survives
    val_stats = PipelineStats()
    val = _batches(make_dataset(cfg, "val", training=False, stats=val_stats))
    assert np.concatenate([b["gt"]["image_id"] for b in val]).tolist() == [1, 3, 4, -1]
    assert val_stats.images_skipped == 1
    first = val[0]["gt"]
    assert first["num_boxes"][0] == 3                        # eval GT keeps all annotations


def test_tf_backend_skips_undecodable_images(tmp_path, smoke_cfg):
    cfg = _bad_dataset(tmp_path, smoke_cfg, "tf")
    val = _batches(make_dataset(cfg, "val", training=False))
    assert np.concatenate([b["gt"]["image_id"] for b in val]).tolist() == [1, 3, 4, -1]
    np.testing.assert_array_equal(val[1]["gt"]["boxes_xywh"][0, 0], [30, 20, 30.5, 20.25])


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_deterministic_with_seed(smoke_cfg, backend):
    cfg = smoke_cfg(f"data.augment.backend={backend}")
    a, b = (_batches(make_dataset(cfg, "train", training=True), 3) for _ in range(2))
    for x, y in zip(a, b):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    c = _batches(make_dataset(smoke_cfg(f"data.augment.backend={backend}", "data.seed=5"), "train", True), 1)
    assert not np.array_equal(c[0]["images"], a[0]["images"])
