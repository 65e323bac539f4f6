"""End of a smoke training run (tensorboard on): the run directory gets every plot, the
per-class table equals the evaluator's per-class AP, and tb/ holds the image summaries."""

import csv

import numpy as np
import pytest

from detector.config import load_config

FILES = ("results.png", "pr_curve.png", "f1_curve.png", "confusion_matrix.png", "labels.png", "per_class.csv",
         "val_predictions.jpg")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from detector.training.detector_task import train

    tmp = tmp_path_factory.mktemp("run_plots")
    overrides = [f"data.synthetic.cache_dir={tmp / 'synthetic'}", f"data.cache_dir={tmp / 'cache'}",
                 "train.steps_per_epoch=2", "train.epochs=1", "eval.score_threshold=0.001",
                 "callbacks.tensorboard=true"]
    cfg = load_config("smoke.yaml", overrides)
    train(cfg, run_dir=tmp / "run", progress=False)
    return tmp / "run", cfg


def test_run_directory_has_every_plot(run):
    import cv2

    path, cfg = run
    for name in FILES:
        assert (path / name).is_file(), name
        if name.endswith((".png", ".jpg")):
            image = cv2.imread(str(path / name))
            assert image is not None and image.shape[0] > 200 and image.shape[1] > 400, name
    rows = list(csv.DictReader((path / "per_class.csv").open()))
    assert [r["name"] for r in rows] == list(cfg.data.classes)


def test_per_class_table_equals_the_evaluator(run):
    """Re-evaluate the saved model with DetectionEvaluator + EvalCollector: the table's AP is
    the evaluator metric's per_class_ap(), and per_class.csv holds the same values."""
    import keras
    import tensorflow as tf

    from detector.data import dataset_info, make_dataset
    from detector.evaluation.evaluator import DetectionEvaluator
    from detector.visualize.evaldata import EvalCollector
    from detector.visualize.per_class import per_class_table

    path, cfg = run
    model = keras.saving.load_model(path / "model.keras")
    info = dataset_info(cfg)
    evaluator = DetectionEvaluator(cfg, tf.distribute.get_strategy(), make_dataset(cfg, "val", training=False),
                                   info.num_val, progress=False)
    collector = EvalCollector()
    stats = evaluator(model, sink=collector)
    rows = per_class_table(collector.data(cfg.data.classes))
    np.testing.assert_array_equal([r["AP"] for r in rows], evaluator.metric.per_class_ap())
    valid = [r["AP"] for r in rows if r["AP"] > -1]
    assert np.mean(valid) == pytest.approx(stats["AP"], rel=1e-12)
    saved = list(csv.DictReader((path / "per_class.csv").open()))
    for r, s in zip(rows, saved):
        assert float(s["AP"]) == pytest.approx(r["AP"], rel=1e-5, abs=1e-12)
        assert int(s["gt"]) == r["gt"]


def test_tensorboard_has_image_summaries(run):
    import tensorflow as tf

    path, _ = run
    tags = {}
    for f in (path / "tb").glob("events.out.tfevents.*"):
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                if v.metadata.plugin_data.plugin_name == "images":
                    tags[v.tag] = tf.make_ndarray(v.tensor)
    assert set(tags) == {"eval/val_predictions", "eval/pr_curve"}
    for t in tags.values():
        w, h = int(t[0]), int(t[1])
        image = tf.io.decode_png(t[2]).numpy()
        assert image.shape[:2] == (h, w)


def test_runner_evaluation_equals_the_training_evaluation(run):
    """evaluate_runner (any model runner, e.g. TFLite later) with a KerasRunner gives the
    training-time evaluation of the final weights (results.csv, 6 digits)."""
    import keras

    from detector.data import make_dataset
    from detector.inference.evaluate import evaluate_runner
    from detector.inference.runner import KerasRunner
    from detector.training.results import read_results

    path, cfg = run
    runner = KerasRunner(keras.saving.load_model(path / "model.keras"), cfg.eval)
    stats, data = evaluate_runner(runner, make_dataset(cfg, "val", training=False), cfg.data.classes)
    row = read_results(path / "results.csv")[-1]
    for k in ("AP", "AP50", "AR100", "depth_error"):
        assert stats[k] == pytest.approx(float(row[f"val_{k}"]), rel=1e-4, abs=1e-9), k
    assert data.num_images == cfg.data.synthetic.num_val


def test_eval_tool_plots_and_per_class_json(run, tmp_path):
    """tools/eval.py model mode --plots DIR --per-class --json: the files, and the JSON's
    per-class list equals the run's per_class.csv (same model, same val split)."""
    import contextlib
    import io
    import json

    from detector.cli import run as run_command

    path, cfg = run
    overrides = (f"data.synthetic.cache_dir={cfg.data.synthetic.cache_dir}", f"data.cache_dir={cfg.data.cache_dir}",
                 "eval.score_threshold=0.001")
    sets = [a for o in overrides for a in ("--set", o)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_command("eval", ["--config", "smoke.yaml", *sets, "--checkpoint", str(path), "--json",
                                    "--per-class", "--plots", str(tmp_path / "plots"),
                                    "--save-detections", str(tmp_path / "dets.json")])
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    for name in FILES[1:]:
        assert (tmp_path / "plots" / name).is_file(), name
    saved = list(csv.DictReader((path / "per_class.csv").open()))
    assert [r["name"] for r in doc["per_class"]] == list(cfg.data.classes)
    for r, s in zip(doc["per_class"], saved):
        assert r["AP"] == pytest.approx(float(s["AP"]), rel=1e-5, abs=1e-12)
        assert (r["depth_error"] is None) == (s["depth_error"] == "")
