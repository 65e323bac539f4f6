"""tfds coco/2017 and kitti plumbing, offline: tfds.testing.mock_data with hand-made examples.

(tfds' own random mock examples are unusable here: their Sequence features have
inconsistent lengths and fail to encode, docs/conventions.md §12.)
"""

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from detector.config import load_config
from detector.data import PipelineStats, make_dataset
from detector.data.tfds_source import image_hw, tfds_dataset
from detector.errors import UserError


def _encoded(h, w, ext):
    return cv2.imencode(ext, np.full((h, w, 3), 120, np.uint8))[1].tobytes()


def _concat(examples):
    ds = None
    for ex in examples:
        one = tf.data.Dataset.from_tensors(ex)
        ds = one if ds is None else ds.concatenate(one)
    return ds


def _fake_coco(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
    ex = {"image": _encoded(48, 64, ".jpg"), "image/filename": "000000000009.jpg", "image/id": np.int64(9),
          "objects": {
              # normalised yxyx; the second box is inverted (ymin > ymax): degenerate
              "bbox": np.array([[0.25, 0.125, 0.75, 0.5], [0.8, 0.1, 0.2, 0.3], [0.0, 0.0, 0.5, 0.5]], np.float32),
              "label": np.array([0, 5, 79], np.int64), "area": np.array([300, 10, 700], np.int64),
              "is_crowd": np.array([False, False, True]), "id": np.array([1, 2, 3], np.int64)}}
    empty = {"image": _encoded(30, 40, ".jpg"), "image/filename": "000000000010.jpg", "image/id": np.int64(10),
             "objects": {"bbox": np.zeros((0, 4), np.float32), "label": np.zeros(0, np.int64),
                         "area": np.zeros(0, np.int64), "is_crowd": np.zeros(0, bool), "id": np.zeros(0, np.int64)}}
    return _concat([ex, empty])


def _fake_kitti(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
    # 80 x 40 PNG; tfds KITTI boxes have the origin at the BOTTOM-left.
    ex = {"image": _encoded(40, 80, ".png"), "image/file_name": "000042.png",
          "objects": {"type": np.array([0, 1, 3], np.int64),   # Car, Van, Pedestrian
                      "bbox": np.array([[0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 1.0, 0.1]],
                                       np.float32),
                      "location": np.array([[1.0, 1.5, 12.5], [0, 0, 20.0], [-2.0, 1.0, 30.0]], np.float32)}}
    return _concat([ex, ex])


def _coco_cfg(tmp_path, *extra):
    return load_config("coco_small", ["data.image_size=128", "model.max_level=5", "train.batch_size=2",
                                      "eval.batch_size=2", f"data.cache_dir={tmp_path}", *extra])


def _kitti_cfg(tmp_path, *extra):
    return load_config("smoke", ["data.source=tfds", "data.tfds_name=kitti", "data.val_split=validation",
                                 "data.classes=[Car, Pedestrian, Cyclist]", "data.unknown_classes=skip",
                                 f"data.cache_dir={tmp_path}", "train.batch_size=2", "eval.batch_size=2", *extra])


def test_image_hw_from_headers():
    assert image_hw(_encoded(48, 64, ".jpg")).numpy().tolist() == [48, 64]
    assert image_hw(_encoded(37, 1242, ".png")).numpy().tolist() == [37, 1242]


def test_coco_canonical_values(tmp_path):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_fake_coco):
        ds, _ = tfds_dataset(_coco_cfg(tmp_path), "validation", training=False)
        first, second = list(ds)
    assert first["image_id"].numpy() == 9 and second["image_id"].numpy() == 10
    np.testing.assert_allclose(first["boxes"].numpy(),
                               [[8, 12, 24, 24], [6.4, 38.4, 12.8, -28.8], [0, 0, 32, 24]], rtol=1e-6)
    # Unprepared builders only know labels '0'..'79': mapped by position.
    assert first["classes"].numpy().tolist() == [0, 5, 79]
    assert first["is_crowd"].numpy().tolist() == [False, False, True]
    assert first["area"].numpy().tolist() == [300, 10, 700]
    assert (first["depth"].numpy() == -1).all() and second["boxes"].shape == (0, 4)


def test_coco_pipeline_drops_degenerate_boxes(tmp_path):
    cfg = _coco_cfg(tmp_path, "data.augment.backend=albumentations")   # the backend that counts drops
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_fake_coco):
        stats = PipelineStats()
        train = next(iter(make_dataset(cfg, "train", training=True, stats=stats)))
        val = list(make_dataset(cfg, "val", training=False))
    assert train["images"].shape == (2, 128, 128, 3)
    assert stats.boxes_degenerate >= 1                       # the inverted box
    gt = val[0]["gt"]
    assert len(val) == 1 and gt["image_id"].numpy().tolist() == [9, 10]
    assert gt["num_boxes"].numpy().tolist() == [2, 0]        # inverted box left out
    s = 128 / 64
    np.testing.assert_allclose(gt["boxes"][0, 0].numpy(), [12 * s, 8 * s, 36 * s, 32 * s], rtol=1e-5)


def test_kitti_depth_flipped_boxes_and_skipped_classes(tmp_path):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_fake_kitti):
        ds, _ = tfds_dataset(_kitti_cfg(tmp_path), "validation", training=False)
        ex = next(iter(ds))
        batch = next(iter(make_dataset(_kitti_cfg(tmp_path), "val", training=False)))
    assert ex["image_id"].numpy() == 42
    np.testing.assert_allclose(ex["boxes"].numpy(), [[20, 10, 40, 20], [0, 0, 8, 40]], atol=1e-5)
    assert ex["classes"].numpy().tolist() == [0, 1]          # Van skipped
    np.testing.assert_allclose(ex["depth"].numpy(), [12.5, 30.0])
    assert ex["is_crowd"].numpy().tolist() == [False, False]
    np.testing.assert_allclose(ex["area"].numpy(), [800, 320], rtol=1e-5)
    np.testing.assert_allclose(batch["gt"]["depth"][0, :2].numpy(), [12.5, 30.0])
    assert (batch["targets"]["depth_mask"][0].numpy() > 0).sum() > 0


def test_kitti_unknown_class_names_error(tmp_path):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_fake_kitti):
        with pytest.raises(UserError, match=r"data.classes lacks 5 class names of kitti: \['Van'"):
            tfds_dataset(_kitti_cfg(tmp_path, "data.unknown_classes=error"), "train", training=True)
