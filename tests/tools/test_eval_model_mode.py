"""tools/eval.py model mode on a smoke run (configs/smoke.yaml, 1 epoch of 2 steps):
JSON stats equal pycocotools on the saved detections and the training-time val row,
depth error equals a recomputation from the saved files, run dir / checkpoint prefix
agree, user errors exit 2, and model.keras reloads in a fresh process with identical
outputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tool_runner import load_tool, run_in_process

from detector.config import load_config
from detector.evaluation import reference
from detector.evaluation.depth import depth_error_sums
from detector.evaluation.params import STAT_NAMES
from detector.training.results import read_results

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "eval.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(run dir, --set overrides) of a finished 1-epoch smoke run."""
    from detector.training.detector_task import train

    tmp = tmp_path_factory.mktemp("eval_model_mode")
    # an untrained head scores ~prior_probability (0.01): keep its detections
    overrides = [f"data.synthetic.cache_dir={tmp / 'synthetic'}", f"data.cache_dir={tmp / 'cache'}",
                 "train.steps_per_epoch=2", "train.epochs=1", "eval.score_threshold=0.001"]
    train(load_config("smoke.yaml", overrides), run_dir=tmp / "run", progress=False)
    sets = [a for o in overrides for a in ("--set", o)]
    return tmp / "run", sets


@pytest.fixture(scope="module")
def run_dir_result(smoke):
    run, sets = smoke
    code, out, err = run_in_process("eval", ["--config", "smoke.yaml", *sets, "--checkpoint", str(run), "--json",
                           "--verify-pycocotools"])
    assert code == 0, err
    return out, err


def _gt_arrays(gt_doc, category_ids, image_id):
    """One image of the GT file as the padded arrays depth_error_sums takes (file order)."""
    anns = [a for a in gt_doc["annotations"] if a["image_id"] == image_id]
    index = {c: k for k, c in enumerate(category_ids)}
    return {"boxes_xywh": np.array([a["bbox"] for a in anns], np.float64).reshape(1, -1, 4),
            "classes": np.array([[index[a["category_id"]] for a in anns]], np.int32).reshape(1, -1),
            "is_crowd": np.array([[bool(a["iscrowd"]) for a in anns]]).reshape(1, -1),
            "depth": np.array([[a.get("depth", -1.0) for a in anns]], np.float32).reshape(1, -1)}


def test_run_dir_json_equals_pycocotools_and_training_val(smoke, run_dir_result):
    from detector.data import dataset_info

    run, _ = smoke
    out, err = run_dir_result
    stats = json.loads(out)                                   # exactly one JSON object on stdout
    assert list(stats) == [*STAT_NAMES, "depth_error"] and out.count("\n") == 1
    assert "pycocotools agrees on all 12 stats" in err
    saved = json.loads((run / "detections_val.json").read_text())   # the default location
    cfg = load_config(run / "config.yaml")
    info = dataset_info(cfg)
    gt_doc = json.loads(Path(info.gt_json).read_text())
    assert len(saved) > 0 and {d["category_id"] for d in saved} <= set(info.category_ids)
    assert {d["image_id"] for d in saved} <= {im["id"] for im in gt_doc["images"]}
    ref = reference.pycocotools_stats(gt_doc, saved)
    assert max(abs(stats[k] - ref[k]) for k in STAT_NAMES) <= 1e-12
    assert 0.0 <= stats["AR100"] <= 1.0 and stats["AR100"] > 0      # some detections are right
    # the training-time evaluation of the same final weights (results.csv: 6 digits)
    row = read_results(run / "results.csv")[0]
    for k in STAT_NAMES:
        assert stats[k] == pytest.approx(float(row[f"val_{k}"]), rel=1e-5, abs=1e-9), k
    # depth error: recomputed from the saved detections (file order = slot order) and GT file
    total, count = 0.0, 0
    for image_id in sorted({d["image_id"] for d in saved}):
        dets = [d for d in saved if d["image_id"] == image_id]
        det = {"boxes_xywh": np.array([[d["bbox"] for d in dets]], np.float32),
               "scores": np.array([[d["score"] for d in dets]], np.float32),
               "classes": np.array([[info.category_ids.index(d["category_id"]) for d in dets]], np.int32),
               "depth": np.array([[d["depth"] for d in dets]], np.float32)}
        s, n = depth_error_sums(_gt_arrays(gt_doc, info.category_ids, image_id), det)
        total, count = total + s, count + n
    assert count > 0 and stats["depth_error"] == pytest.approx(total / count, rel=1e-12)
    assert float(row["val_depth_error"]) == pytest.approx(stats["depth_error"], rel=1e-5)
    # issue 5: anchor-level metrics of the classification head in the epoch row
    assert 0.0 <= float(row["anchor_recall"]) <= 1.0 and 0.0 < float(row["anchor_best_f1"]) <= 1.0


def test_checkpoint_prefix_gives_the_same_result(smoke, run_dir_result, tmp_path):
    import tensorflow as tf

    run, sets = smoke
    prefix = tf.train.latest_checkpoint(str(run / "checkpoints" / "last"))
    code, out, err = run_in_process("eval", ["--config", "smoke.yaml", *sets, "--checkpoint", prefix, "--json",
                           "--save-detections", str(tmp_path / "dets.json")])
    assert code == 0, err
    assert json.loads(out) == json.loads(run_dir_result[0])
    assert json.loads((tmp_path / "dets.json").read_text()) == \
        json.loads((run / "detections_val.json").read_text())


def test_user_errors_exit_2_naming_the_path(smoke, tmp_path):
    run, sets = smoke
    base = ["--config", "smoke.yaml", *sets]
    code, out, err = run_in_process("eval", [*base, "--checkpoint", str(tmp_path / "nope")])
    assert code == 2 and out == "" and f"--checkpoint {tmp_path / 'nope'}: no such file" in err
    last = run / "checkpoints" / "last"
    code, _, err = run_in_process("eval", [*base, "--set", "model.fpn_channels=32", "--checkpoint", str(last)])
    assert code == 2 and f"checkpoint {last}/ckpt-" in err and "does not match the model" in err
    code, _, err = run_in_process("eval", [*base, "--set", "data.image_size=160",
                                           "--checkpoint", str(run / "model.keras")])
    assert code == 2 and "model.keras: the model was built for data.image_size = 128" in err
    code, _, err = run_in_process("eval", [*base, "--checkpoint", str(run / "config.yaml")])
    assert code == 2 and "config.yaml: not a .keras file" in err
    code, _, err = run_in_process("eval", [*base, "--checkpoint", str(run), "--gt", "gt.json"])
    assert code == 2 and "not both" in err
    code, _, err = run_in_process("eval", ["--checkpoint", str(run)])
    assert code == 2 and "needs both --config" in err


def test_verify_reports_every_differing_stat(smoke, run_dir_result, capsys):
    from detector.data import dataset_info

    run, _ = smoke
    stats = json.loads(run_dir_result[0])
    gt_json = dataset_info(load_config(run / "config.yaml")).gt_json
    tool = load_tool("eval")
    dets = run / "detections_val.json"
    assert tool.verify_pycocotools(gt_json, dets, stats) == 0
    capsys.readouterr()
    bad = {**stats, "AP": stats["AP"] + 1e-9, "ARm": stats["ARm"] - 0.25}
    assert tool.verify_pycocotools(gt_json, dets, bad) == 1
    err = capsys.readouterr().err
    assert "PYCOCOTOOLS MISMATCH: 2 of 12 stats" in err
    assert "  AP: ours" in err and "  ARm: ours" in err and "AP50" not in err


FRESH = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, keras
import detector.model  # registers the detector's serialisable classes
model = keras.saving.load_model(sys.argv[2], safe_mode=True)
out = model(np.load(sys.argv[3]), training=False)
np.savez(sys.argv[4], **{k: np.asarray(v) for k, v in out.items()})
"""


def test_saved_keras_model_reloads_in_a_fresh_process(smoke, tmp_path):
    import tensorflow as tf

    from detector.model import build_detector
    from detector.training.checkpoints import restore_model

    run, _ = smoke
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    proc = subprocess.run([sys.executable, "-c", FRESH, str(ROOT), str(run / "model.keras"),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npz")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = np.load(tmp_path / "y.npz")
    # the trained weights as the run left them (last checkpoint = final weights)
    model = build_detector(load_config(run / "config.yaml"))
    restore_model(model, tf.train.latest_checkpoint(str(run / "checkpoints" / "last")))
    here = model(images, training=False)
    assert sorted(fresh.files) == ["box", "cls_logits", "depth"]
    for k in fresh.files:
        np.testing.assert_allclose(fresh[k], np.asarray(here[k]), rtol=0, atol=1e-6, err_msg=k)
    # and the weights really are trained ones, not a fresh initialisation
    untrained = build_detector(load_config(run / "config.yaml"))(images, training=False)
    assert not np.allclose(np.asarray(untrained["cls_logits"]), fresh["cls_logits"], atol=1e-6)
