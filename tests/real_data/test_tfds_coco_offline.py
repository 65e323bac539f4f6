"""tfds coco/2017 through the REAL builder, prepared offline from a tiny COCO-layout download
directory (real JPEGs, official-layout instances JSON), then trained and evaluated with the tools.

Prepared once per module (under a second); nothing is downloaded.
"""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from coco_layout import write_download_dir

from detector.data.coco_categories import COCO_CATEGORIES
from tests.tools.tool_runner import run_in_process


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds_coco")
    builder = tfds.builder("coco/2017", data_dir=str(root / "data"))
    val = write_download_dir(root / "downloads", builder)
    builder.download_and_prepare(download_dir=str(root / "downloads"))
    assert builder.is_prepared()
    (root / "instances_val2017.json").write_text(json.dumps(val))
    return root


def _overrides(root, run_root):
    # coco_small's data section (80 COCO classes, tfds coco/2017) on a tiny from-scratch model
    return ["--set", f"data.tfds_data_dir={root / 'data'}", "--set", "data.image_size=128",
            "--set", "model.backbone.name=small_cnn", "--set", "model.backbone.weights=null",
            "--set", "model.backbone.width=8", "--set", "model.max_level=5", "--set", "model.fpn_channels=16",
            "--set", "model.head_convs=1", "--set", "model.head_channels=16", "--set", "train.epochs=1",
            "--set", "train.steps_per_epoch=2", "--set", "train.batch_size=2", "--set", "train.warmup_steps=1",
            "--set", "eval.batch_size=2", "--set", "callbacks.tensorboard=false",
            "--set", f"run_root={run_root}", "--set", f"data.cache_dir={run_root / 'cache'}"]


def test_prepared_builder_reads_real_images(prepared):
    b = tfds.builder("coco/2017", data_dir=str(prepared / "data"))
    assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 4, "validation": 2, "test": 1}
    assert b.info.features["objects"]["label"].names[21] == "bear"


def test_train_and_eval_keep_coco_category_ids(prepared, tmp_path):
    from pycocotools.coco import COCO

    code, out, err = run_in_process("train", ["--config", "coco_small", "--quiet", *_overrides(prepared, tmp_path)])
    assert code == 0, err[-3000:]
    run_dir = next((tmp_path).glob("coco_small-*"))
    dets = tmp_path / "dets.json"
    code, out, err = run_in_process("eval", ["--config", "coco_small", "--checkpoint", str(run_dir),
                                             "--save-detections", str(dets), "--verify-pycocotools",
                                             "--set", "eval.score_threshold=0.0",
                                             *_overrides(prepared, tmp_path)])
    assert code == 0, err[-3000:]
    assert "pycocotools agrees" in err
    results = json.loads(dets.read_text())
    assert results, "an untrained model still scores some boxes above 0"
    # every one of the 80 classes may be detected: their ids are COCO's, not class index + 1
    ids = {r["category_id"] for r in results}
    assert ids <= {c for c, _ in COCO_CATEGORIES}, ids
    assert any(i > 80 for i in ids) or not (ids & {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}), ids
    # loads against the ORIGINAL instances file (COCO's ids 1..90 with gaps)
    gt = COCO(str(prepared / "instances_val2017.json"))
    dt = gt.loadRes(str(dets))
    assert set(dt.getCatIds()) <= set(gt.getCatIds())
    assert {r["image_id"] for r in results} <= {200, 201}


def test_class_subset_keeps_original_ids(prepared, tmp_path):
    from detector.config import load_config
    from detector.data import dataset_info
    from detector.data.sources import with_val_gt

    cfg = load_config("coco_small", [f"data.tfds_data_dir={prepared / 'data'}", "data.classes=[toothbrush, bear]",
                                     "data.unknown_classes=skip", f"data.cache_dir={tmp_path}",
                                     "model.backbone.weights=null"])
    info = with_val_gt(cfg, dataset_info(cfg))
    assert info.category_ids == (90, 23)
    gt = json.loads(open(info.gt_json).read())
    assert sorted(c["id"] for c in gt["categories"]) == [23, 90]
    assert sorted(a["category_id"] for a in gt["annotations"]) == [23, 23, 90]
    boxes = {a["image_id"]: a["bbox"] for a in gt["annotations"] if a["category_id"] == 23}
    # tfds stores normalised float32 boxes: equal to the JSON's up to float32 rounding
    np.testing.assert_allclose(boxes[201], [13.0, 10.0, 210.0, 211.0], atol=1e-3)


def test_max_images_slices_the_splits(prepared, tmp_path):
    from detector.config import load_config
    from detector.data import dataset_info

    cfg = load_config("coco_small", [f"data.tfds_data_dir={prepared / 'data'}", "data.max_images=1",
                                     "model.backbone.weights=null"])
    info = dataset_info(cfg)
    assert (info.num_train, info.num_val) == (1, 1)
