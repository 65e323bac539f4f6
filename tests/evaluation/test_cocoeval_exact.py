"""The numpy evaluator against pycocotools: stats, full precision/recall arrays, IoU bits."""

import json
import re

import numpy as np
import pytest

from detector.evaluation import evaluate, evaluate_files, reference, testing
from detector.evaluation.coco_io import load_detections, load_ground_truth
from detector.evaluation.matching import bbox_iou
from detector.evaluation.params import IOU_THRS, REC_THRS, STAT_NAMES

# pycocotools 2.0.11 on tests/data/cocoapi_val2014_100 (its bbox block of val2014_fake_eval_res.txt, full precision)
PUBLISHED = [0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
             0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
             0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982]


def _evaluate_in_memory(gt, results, tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    g = load_ground_truth(tmp_path / "gt.json")
    dt = load_detections(tmp_path / "dt.json", g)
    return evaluate(g.arrays, dt, len(g.category_ids), len(g.image_ids), all_max_dets=True)


def test_thresholds_are_numpy_linspace_bit_for_bit():
    assert IOU_THRS.tobytes() == np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1).tobytes()
    assert REC_THRS.tobytes() == np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1).tobytes()
    assert IOU_THRS[8] == 0.8999999999999999 and REC_THRS[35] == 0.35000000000000003


def test_cocoapi_val2014_100_matches_published_and_pycocotools(coco_ref_dir):
    gt_file = coco_ref_dir / "instances_val2014_100.json"
    dt_file = coco_ref_dir / "instances_val2014_fakebbox100_results.json"
    result, _ = evaluate_files(gt_file, dt_file)
    stats = list(result.stats().values())
    assert np.max(np.abs(np.array(stats) - PUBLISHED)) <= 1e-12
    ref = reference.pycocotools_stats(json.loads(gt_file.read_text()), json.loads(dt_file.read_text()))
    assert np.max(np.abs(np.array(stats) - list(ref.values()))) <= 1e-12
    # and the 3-decimal table the COCO API publishes (bbox section)
    text = (coco_ref_dir / "val2014_fake_eval_res.txt").read_text().split("type=bbox")[1]
    published = [float(v) for v in re.findall(r"\] = (\d\.\d{3})", text)[:12]]
    assert [round(s, 3) for s in stats] == published


@pytest.mark.parametrize("seed", range(6))
def test_random_edge_cases_full_arrays_equal_pycocotools(seed, tmp_path):
    gt, results = testing.random_coco(seed, num_images=20, crowded_image=2 if seed % 2 else 0)
    ev = reference.pycocotools_eval(gt, results)
    ours = _evaluate_in_memory(gt, results, tmp_path)
    stats = ours.stats()
    assert list(stats) == list(STAT_NAMES)
    assert max(abs(stats[k] - float(v)) for k, v in zip(STAT_NAMES, ev.stats)) <= 1e-12
    # bit-identical arrays, not only the means
    np.testing.assert_array_equal(ours.precision, ev.eval["precision"])
    np.testing.assert_array_equal(ours.recall, ev.eval["recall"])
    # per-class AP and PR curves as a plots issue would compute them from pycocotools
    p = ev.eval["precision"][:, :, :, 0, -1]
    valid = (p > -1).all(axis=(0, 1))
    np.testing.assert_array_equal(ours.per_class_ap(), np.where(valid, p.mean(axis=(0, 1)), -1))
    curves = ours.pr_curves()
    np.testing.assert_array_equal(curves["precision_50"], np.where(valid[:, None], p[0].T, -1))
    np.testing.assert_array_equal(curves["recall"], ev.params.recThrs)
    assert not valid[-1]          # the generator leaves the last category without GT


def test_edge_case_generator_really_has_the_edge_cases():
    gt, results = testing.random_coco(1, num_images=20, crowded_image=2)
    anns = gt["annotations"]
    assert any(a["iscrowd"] for a in anns)
    assert {1024.0, 9216.0} <= {a["area"] for a in anns}
    assert any(a["bbox"][2] == 0 for a in anns)
    per_group = {}
    for r in results:
        per_group[(r["image_id"], r["category_id"])] = per_group.get((r["image_id"], r["category_id"]), 0) + 1
    assert max(per_group.values()) > 100
    scores = [r["score"] for r in results]
    assert len(set(scores)) < len(scores) / 2                   # heavy ties
    img_with_gt = {a["image_id"] for a in anns}
    assert any(im["id"] not in img_with_gt for im in gt["images"])
    ids = [im["id"] for im in gt["images"]]
    assert ids != sorted(ids)


def test_gt_annotation_id_zero_quirk_is_reproduced(tmp_path):
    gt, results = testing.random_coco(3, num_images=10)
    gt["annotations"][0]["id"] = 0       # pycocotools reads a match to it as "unmatched"
    ev = reference.pycocotools_eval(gt, results)
    ours = _evaluate_in_memory(gt, results, tmp_path)
    np.testing.assert_array_equal(ours.precision, ev.eval["precision"])
    np.testing.assert_array_equal(ours.recall, ev.eval["recall"])


def test_no_detections_gives_zero_not_minus_one(tmp_path):
    gt, _ = testing.random_coco(4, num_images=8)
    stats = _evaluate_in_memory(gt, [], tmp_path).stats()
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_numpy_iou_is_bitwise_pycocotools_bbiou():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    g = np.round(np.concatenate([rng.uniform(0, 600, (60, 2)), rng.uniform(0, 200, (60, 2))], 1), 2)
    g[:5, 2] = 0.0                                                   # degenerate GT
    d = (g[rng.integers(0, 60, 300)] + rng.normal(0, 6, (300, 4))).astype(np.float32).astype(np.float64)
    crowd = rng.random(60) < 0.3
    ref = mask_utils.iou(d.tolist(), g.tolist(), crowd.astype(np.uint8).tolist())
    di, gi = np.meshgrid(np.arange(300), np.arange(60), indexing="ij")
    ours = bbox_iou(d[di.ravel()], g[gi.ravel()], crowd[gi.ravel()]).reshape(300, 60)
    assert (ref > 0.5).sum() > 100
    np.testing.assert_array_equal(ours, ref)
