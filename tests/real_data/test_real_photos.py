"""Real photographs end to end (tests/data/raccoon_mini: 6 JPEGs of different sizes, VOC layout).

* the VOC folder and the COCO-JSON converted from it ('detector voc2coco') give the same records;
* a few training steps on the real JPEGs through COCO-JSON, with a val split that has a
  missing image, an undecodable one and an image with more boxes than data.max_boxes: the
  in-training val_AP equals pycocotools on the GT file written for it and the saved detections,
  and the run says what was left out.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from detector.config import load_config
from detector.data import dataset_info, make_dataset
from detector.data.sources import load_records
from detector.evaluation import reference
from detector.evaluation.params import STAT_NAMES
from tests.raccoon_mini import AT_128, MINI
from tests.tools.tool_runner import run_in_process

TINY = [*AT_128, "model.backbone.width=8", "model.max_level=5", "model.fpn_channels=16",
        "model.head_convs=1", "model.head_channels=16", "train.epochs=1", "train.steps_per_epoch=2",
        "train.batch_size=2", "train.warmup_steps=1", "train.time_limit_minutes=null", "eval.batch_size=2",
        "eval.every_epochs=1", "eval.score_threshold=0.0"]


def test_voc_folder_feeds_the_pipeline_and_matches_converted_json(tmp_path):
    code, out, err = run_in_process("voc2coco", ["--voc-root", str(MINI), "--out-dir", str(tmp_path)])
    assert code == 0, err
    voc = load_config("raccoon", [f"data.voc_root={MINI}", f"data.cache_dir={tmp_path}", *TINY])
    js = load_config("coco_json_example", [f"data.train_json={tmp_path / 'instances_train.json'}",
                                           f"data.val_json={tmp_path / 'instances_val.json'}",
                                           f"data.train_images={MINI / 'JPEGImages'}",
                                           f"data.val_images={MINI / 'JPEGImages'}", f"data.cache_dir={tmp_path}"])
    for split in ("train", "val"):
        a, _ = load_records(voc, split)
        b, _ = load_records(js, split)
        assert [r.image for r in a] == [r.image for r in b]
        assert [r.image_id for r in a] == [r.image_id for r in b]
        for ra, rb in zip(a, b):
            np.testing.assert_array_equal(ra.boxes, rb.boxes)
            assert (ra.height, ra.width) == (rb.height, rb.width)
    sizes = {(r.height, r.width) for r in load_records(voc, "train")[0]}
    assert len(sizes) == 4, sizes            # photos of different sizes
    batch = next(iter(make_dataset(voc, "train", training=True)))
    assert batch["images"].shape == (2, 128, 128, 3)
    assert int(batch["gt"]["num_boxes"].numpy().sum()) >= 1


@pytest.fixture
def awkward_val(tmp_path):
    """COCO-JSON of raccoon_mini whose val split has a missing file, an undecodable file and an
    image with 3 boxes (data.max_boxes=2 keeps 2)."""
    code, _, err = run_in_process("voc2coco", ["--voc-root", str(MINI), "--out-dir", str(tmp_path)])
    assert code == 0, err
    images = tmp_path / "images"
    shutil.copytree(MINI / "JPEGImages", images)
    (images / "broken.jpg").write_bytes(b"this is not an image")
    val = json.loads((tmp_path / "instances_val.json").read_text())
    first = val["images"][0]
    val["images"] += [dict(first, id=9001, file_name="missing.jpg"), dict(first, id=9002, file_name="broken.jpg")]
    extra = [{"id": 500 + k, "image_id": iid, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
              "iscrowd": 0} for k, (iid, bbox) in enumerate([(first["id"], [10.0, 20.0, 60.0, 50.0]),
                                                             (first["id"], [100.0, 30.0, 40.0, 80.0]),
                                                             (9002, [5.0, 5.0, 30.0, 30.0])])]
    val["annotations"] += extra
    (tmp_path / "instances_val.json").write_text(json.dumps(val))
    return tmp_path


def test_training_val_ap_equals_pycocotools_on_the_written_gt(awkward_val, tmp_path, caplog):
    from detector.training.detector_task import train

    d = awkward_val
    sets = [f"data.train_json={d / 'instances_train.json'}", f"data.val_json={d / 'instances_val.json'}",
            f"data.train_images={d / 'images'}", f"data.val_images={d / 'images'}", "data.max_boxes=2",
            f"data.cache_dir={d / 'cache'}", f"run_root={d / 'runs'}", *TINY]
    cfg = load_config("coco_json_example", sets)
    with caplog.at_level(logging.WARNING, logger="detector.data"):
        info = dataset_info(cfg)
    assert info.eval_dropped == {"missing_images": 1, "undecodable": 1, "boxes_over_max": 1}
    assert "1 val images missing, 1 val images undecodable, 1 val boxes beyond data.max_boxes=2" in caplog.text
    gt = json.loads(Path(info.gt_json).read_text())
    assert Path(info.gt_json) != d / "instances_val.json"
    assert sorted(im["id"] for im in gt["images"]) == sorted(r.image_id for r in load_records(cfg, "val")[0]
                                                               if "broken" not in r.image)
    assert len(gt["annotations"]) == 3          # 1 + 1 raccoons, the first image capped at 2 boxes

    outcome = train(cfg, run_dir=d / "run", progress=False)
    val_ap = outcome.result.logs["val_AP"]
    dets = d / "dets.json"
    code, out, err = run_in_process("eval", ["--config", "coco_json_example", *[a for s in sets for a in ("--set", s)],
                                             "--checkpoint", str(d / "run"), "--save-detections", str(dets),
                                             "--verify-pycocotools", "--json"])
    assert code == 0, err
    saved = json.loads(dets.read_text())
    assert saved and {r["image_id"] for r in saved} <= {im["id"] for im in gt["images"]}
    ref = reference.pycocotools_stats(info.gt_json, saved)
    assert abs(val_ap - ref["AP"]) <= 1e-12, (val_ap, ref["AP"])
    stats = json.loads(out)
    assert max(abs(stats[k] - ref[k]) for k in STAT_NAMES) <= 1e-12


def test_coco_json_class_subset_keeps_original_category_ids(tmp_path):
    code, _, err = run_in_process("voc2coco", ["--voc-root", str(MINI), "--out-dir", str(tmp_path)])
    assert code == 0, err
    for split in ("train", "val"):     # raccoon becomes id 23, plus a 'toothbrush' (id 90) box per image
        doc = json.loads((tmp_path / f"instances_{split}.json").read_text())
        doc["categories"] = [{"id": 23, "name": "raccoon"}, {"id": 90, "name": "toothbrush"}]
        extra = []
        for a in doc["annotations"]:
            a["category_id"] = 23
            extra.append(dict(a, id=a["id"] + 100, category_id=90, bbox=[1.0, 1.0, 10.0, 10.0], area=100.0))
        doc["annotations"] += extra
        (tmp_path / f"instances_{split}.json").write_text(json.dumps(doc))
    cfg = load_config("coco_json_example", [
        f"data.train_json={tmp_path / 'instances_train.json'}", f"data.val_json={tmp_path / 'instances_val.json'}",
        f"data.train_images={MINI / 'JPEGImages'}", f"data.val_images={MINI / 'JPEGImages'}",
        "data.classes=[toothbrush]", "data.unknown_classes=skip", f"data.cache_dir={tmp_path / 'cache'}"])
    info = dataset_info(cfg)
    assert info.category_ids == (90,)
    gt = json.loads(Path(info.gt_json).read_text())
    assert gt["categories"] == [{"id": 90, "name": "toothbrush"}]
    assert {a["category_id"] for a in gt["annotations"]} == {90} and len(gt["annotations"]) == 2
    assert len(gt["images"]) == 2      # images without a toothbrush stay (negatives)


def test_training_turns_the_mosaic_off_for_the_last_share(tmp_path, capsys):
    """data.augment.mosaic_off_last through train(): 2 epochs of 2 steps, the last half plain."""
    from detector.training.detector_task import train

    cfg = load_config("raccoon", [f"data.voc_root={MINI}", f"data.cache_dir={tmp_path}", *TINY, "train.epochs=2",
                                  "data.augment.mosaic=1.0", "data.augment.mosaic_off_last=0.5",
                                  "eval.every_epochs=2", f"run_root={tmp_path / 'runs'}"])
    outcome = train(cfg, run_dir=tmp_path / "run", progress=True)
    assert outcome.result.epochs_done == 2
    err = capsys.readouterr().err
    assert "epoch 2: no mosaic from here on, the last 2 steps (data.augment.mosaic_off_last: 0.5)" in err, err
    assert "epoch 1: no mosaic" not in err
