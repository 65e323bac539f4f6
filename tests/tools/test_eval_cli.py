"""tools/eval.py file mode: pycocotools-identical numbers, output format, bad input -> exit 2."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tool_runner import run_in_process

from detector.evaluation import reference, testing
from detector.evaluation.params import STAT_NAMES

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "eval.py"
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _write(tmp_path, gt, results):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    return str(tmp_path / "gt.json"), str(tmp_path / "dt.json")


def test_json_mode_subprocess_equals_pycocotools_without_tensorflow(tmp_path, coco_ref_dir):
    runs = [(str(coco_ref_dir / "instances_val2014_100.json"),
             str(coco_ref_dir / "instances_val2014_fakebbox100_results.json"), None)]
    for seed in (10, 11, 12):                      # edge-case data, as files
        gt, results = testing.random_coco(seed, num_images=20, crowded_image=2)
        d = tmp_path / str(seed)
        d.mkdir()
        runs.append((*_write(d, gt, results), (gt, results)))
    for gt_file, dt_file, data in runs:
        proc = subprocess.run([sys.executable, "-X", "importtime", str(TOOL), "--gt", gt_file,
                               "--detections", dt_file, "--json"], capture_output=True, text=True, env=ENV)
        assert proc.returncode == 0, proc.stderr[-2000:]
        stats = json.loads(proc.stdout)                         # exactly one JSON object
        assert list(stats) == list(STAT_NAMES) and proc.stdout.count("\n") == 1
        if data is None:
            data = (json.loads(Path(gt_file).read_text()), json.loads(Path(dt_file).read_text()))
        ref = reference.pycocotools_stats(*data)
        assert max(abs(stats[k] - ref[k]) for k in STAT_NAMES) <= 1e-12
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line}
        assert "numpy" in imported and not any(m.startswith("tensorflow") for m in imported)


def test_table_is_pycocotools_summarize_output(tmp_path):
    gt, results = testing.random_coco(20, num_images=12)
    code, out, _ = run_in_process("eval", ["--gt", *_write(tmp_path, gt, results)[:1],
                                    "--detections", str(tmp_path / "dt.json")])
    assert code == 0
    buf = io.StringIO()
    ev = reference.pycocotools_eval(gt, results)
    with contextlib.redirect_stdout(buf):
        ev.summarize()
    assert out.strip("\n").splitlines() == buf.getvalue().strip("\n").splitlines()


def test_ignore_unknown_categories_matches_pycocotools_dropping_them(tmp_path):
    gt, results = testing.random_coco(21, num_images=12)
    results[3]["category_id"] = 1000
    files = _write(tmp_path, gt, results)
    code, _, err = run_in_process("eval", ["--gt", files[0], "--detections", files[1], "--json"])
    assert code == 2 and "entry[3]" in err and "category_id 1000" in err
    code, out, err = run_in_process("eval", ["--gt", files[0], "--detections", files[1], "--json",
                                      "--ignore-unknown-categories"])
    assert code == 0 and "dropping 1 detections" in err
    ref = reference.pycocotools_stats(gt, results)
    stats = json.loads(out)
    assert max(abs(stats[k] - ref[k]) for k in STAT_NAMES) <= 1e-12


def _det(**kw):
    return {"image_id": 1, "category_id": 7, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5, **kw}


GOOD_GT = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 7, "name": "x"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4],
                            "area": 12.0, "iscrowd": 0}]}

BAD_DETECTIONS = [
    ("[{\"image_id\": 1,", "dt.json: not valid JSON"),
    ({"annotations": []}, "dt.json: expected a JSON list of detection results"),
    ([_det(), _det(image_id=99)], "dt.json: entry[1]: image_id 99 is not an image of the ground truth"),
    ([_det(), {"image_id": 1, "category_id": 7, "score": 0.1}], "dt.json: entry[1]: missing field 'bbox'"),
    ([_det(), _det(), _det(score=float("nan"))], "dt.json: entry[2]: 'score' is not finite"),
    ([_det(bbox=[1.0, 2.0, -3.0, 4.0])], "dt.json: entry[0]: 'bbox' [x, y, w, h] has a negative size"),
    ([_det(), _det(bbox=[1.0, 2.0, 3.0])], "dt.json: entry[1]: 'bbox' must be a list of 4 numbers"),
    ([_det(score="0.5")], "dt.json: entry[0]: 'score' must be a number"),
    ([_det(), _det(category_id=3)], "dt.json: entry[1]: category_id 3 is not a category of the ground truth"),
    ([_det(image_id=1.5)], "dt.json: entry[0]: 'image_id' must be an integer"),
    ([_det(), 5], "dt.json: entry[1] is not a JSON object"),
]


@pytest.mark.parametrize("detections, message", BAD_DETECTIONS)
def test_bad_detections_exit_2_naming_file_and_entry(tmp_path, detections, message):
    (tmp_path / "gt.json").write_text(json.dumps(GOOD_GT))
    text = detections if isinstance(detections, str) else json.dumps(detections)
    (tmp_path / "dt.json").write_text(text)
    code, out, err = run_in_process("eval", ["--gt", str(tmp_path / "gt.json"), "--detections",
                                      str(tmp_path / "dt.json"), "--json"])
    assert code == 2 and out == ""
    assert message in err, err


def _gt_with(**ann):
    gt = json.loads(json.dumps(GOOD_GT))
    gt["annotations"].append({"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5],
                              "area": 25.0, "iscrowd": 0, **ann})
    return gt


BAD_GT = [
    ({"images": [], "categories": []}, "gt.json: no 'annotations' list at the top level"),
    (_gt_with(image_id=5), "gt.json: annotations[1] (id 2): image_id 5 is not in 'images'"),
    (_gt_with(category_id=8), "gt.json: annotations[1] (id 2): category_id 8 is not in 'categories'"),
    (_gt_with(id=1), "gt.json: annotations[1]: duplicate annotation id 1 (also annotations[0])"),
    (_gt_with(area=None), "gt.json: annotations[1] (id 2): 'area' must be a number"),
    (_gt_with(bbox=[0, 0, 5, -1]), "gt.json: annotations[1] (id 2): 'bbox' [x, y, w, h] has a negative size"),
    (_gt_with(iscrowd=2), "gt.json: annotations[1] (id 2): 'iscrowd' must be 0 or 1, got 2"),
    ({**GOOD_GT, "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]}]},
     "gt.json: annotations[0] (id 1): missing field 'area'"),
    ({**GOOD_GT, "images": [{"id": 1}, {"id": 1}]}, "gt.json: images[1]: duplicate image id 1 (also images[0])"),
]


@pytest.mark.parametrize("gt, message", BAD_GT)
def test_bad_ground_truth_exit_2_naming_file_and_entry(tmp_path, gt, message):
    files = _write(tmp_path, gt, [_det()])
    code, out, err = run_in_process("eval", ["--gt", files[0], "--detections", files[1]])
    assert code == 2 and out == ""
    assert message in err, err


def test_missing_file_and_model_mode_exit_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--gt", str(tmp_path / "nope.json"),
                           "--detections", str(tmp_path / "dt.json")], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "nope.json: cannot read file" in proc.stderr
    assert "Traceback" not in proc.stderr
    code, _, err = run_in_process("eval", ["--config", "x.yaml", "--checkpoint", "ckpt", "--json"])
    assert code == 2 and "config file 'x.yaml' not found" in err
    code, _, err = run_in_process("eval", ["--gt", "gt.json"])
    assert code == 2 and "--detections" in err


def test_per_class_table(tmp_path):
    gt, results = testing.random_coco(22, num_images=12, num_classes=4)
    files = _write(tmp_path, gt, results)
    code, out, _ = run_in_process("eval", ["--gt", files[0], "--detections", files[1], "--per-class"])
    assert code == 0
    rows = out.split("depth err\n")[1].strip().splitlines()
    assert len(rows) == 4 and rows[-1].split()[2] == "-1.000"        # last category has no GT
    ap = np.array([float(r.split()[2]) for r in rows])
    assert np.all(ap[:-1] >= 0)
    from detector.evaluation import evaluate_files

    want = evaluate_files(files[0], files[1])[0].per_class_ap()
    np.testing.assert_allclose(ap, want, atol=5e-4)                  # printed with 3 decimals
    code, out, _ = run_in_process("eval", ["--gt", files[0], "--detections", files[1], "--per-class", "--json"])
    per_class = json.loads(out)["per_class"]
    np.testing.assert_array_equal([r["AP"] for r in per_class], want)
