"""End to end on configs/smoke.yaml (tiny synthetic data): `detector train` in-process;
resume and the detection task under a 2-replica MirroredStrategy are marked slow
(each run traces the model and the COCO metric again: ~10-20 s on 2 cores)."""


import keras
import numpy as np
import pytest

from detector.config import load_config
from detector.evaluation.evaluator import STAT_NAMES, network_to_original_xywh
from detector.training.results import read_results


def _tool():
    from detector.commands import train

    return train


def _sets(tmp_path):
    return ["--set", f"data.synthetic.cache_dir={tmp_path / 'synthetic'}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.steps_per_epoch=2",
            # an untrained head scores ~prior_probability (0.01): keep its detections so the
            # COCO metric has something to rank
            "--set", "eval.score_threshold=0.001"]


def test_network_to_original_xywh():
    # image 200x100 (h, w) letterboxed into 128 px: scale 0.64; box yxyx in network px
    boxes = np.array([[[6.4, 12.8, 32.0, 51.2], [0.0, 60.0, 140.0, 128.0]]])
    out = network_to_original_xywh(boxes, np.array([0.64]), np.array([[200, 100]]))
    np.testing.assert_allclose(out[0, 0], [20.0, 10.0, 60.0, 40.0], rtol=1e-6)
    # clipped to the original image (x <= 100 wide, y <= 200 high)
    np.testing.assert_allclose(out[0, 1], [93.75, 0.0, 6.25, 200.0], rtol=1e-6)


def test_train_tool_runs(tmp_path, capsys):
    tool = _tool()
    run = tmp_path / "run"
    args = ["--config", "smoke.yaml", *_sets(tmp_path), "--set", "train.epochs=1",
            "--run-dir", str(run), "--quiet"]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    assert f"run directory: {run}" in out and "final val: AP=" in out
    rows = read_results(run / "results.csv")
    assert len(rows) == 1 and rows[0]["step"] == "2"
    for key in ["loss", "cls_loss", "box_loss", "depth_loss", "lr", "images_per_s", "input_wait_share",
                *(f"val_{k}" for k in STAT_NAMES), "val_loss", "val_depth_abs_rel"]:
        assert rows[0][key] != "", key
    assert float(rows[0]["images_per_s"]) > 0
    assert (run / "checkpoints" / "last" / "checkpoint").is_file()
    assert (run / "checkpoints" / "best" / "checkpoint").is_file()
    model = keras.models.load_model(run / "model.keras")
    assert model.image_size == 128


@pytest.mark.slow
def test_train_tool_resume(tmp_path):
    tool = _tool()
    run = tmp_path / "run"
    assert tool.main(["--config", "smoke.yaml", *_sets(tmp_path), "--set", "train.epochs=1",
                      "--run-dir", str(run), "--quiet"]) == 0
    # one more epoch from the checkpoint, reusing the run's config.yaml
    assert tool.main(["--resume", "--run-dir", str(run), "--set", "train.epochs=2", "--quiet"]) == 0
    rows = read_results(run / "results.csv")
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("2", "4")]
    assert load_config(run / "config.yaml").train.epochs == 2
    # the same weights as an uninterrupted 2-epoch run (per-epoch data seeds, optimizer state)
    full = tmp_path / "full"
    assert tool.main(["--config", "smoke.yaml", *_sets(tmp_path), "--set", "train.epochs=2",
                      "--run-dir", str(full), "--quiet"]) == 0
    a = keras.models.load_model(run / "model.keras").get_weights()
    b = keras.models.load_model(full / "model.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


def test_train_tool_user_errors(tmp_path, capsys):
    tool = _tool()
    with pytest.raises(Exception, match="train.best_metric: unknown metric 'val_mAP'"):
        tool.main(["--config", "smoke.yaml", *_sets(tmp_path), "--set", "train.best_metric=val_mAP",
                   "--run-dir", str(tmp_path / "r")])
    with pytest.raises(Exception, match="--config is required"):
        tool.main([])


@pytest.mark.slow
def test_detection_task_two_replicas(tmp_path, two_replica_strategy):
    from detector.training.detector_task import train

    cfg = load_config("smoke.yaml", [f"data.synthetic.cache_dir={tmp_path / 'synthetic'}",
                                     f"data.cache_dir={tmp_path / 'cache'}", "train.steps_per_epoch=2",
                                     "eval.score_threshold=0.001",
                                     "train.epochs=1", "callbacks.tensorboard=true",
                                     "callbacks.gradient_monitor.enabled=true",
                                     "callbacks.gradient_monitor.every_n_steps=1"])
    outcome = train(cfg, run_dir=tmp_path / "run", strategy=two_replica_strategy, progress=False)
    r = outcome.result
    assert r.step == 2 and r.epochs_done == 1
    assert np.isfinite(r.logs["loss"]) and -1.0 <= r.logs["val_AP"] <= 1.0
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_time_limit_budgets_the_schedule_on_one_worker_only():
    from detector.training.detector_task import build_callbacks

    cfg = load_config("smoke.yaml", ["train.time_limit_minutes=2"])
    cos = build_callbacks(cfg, None, steps=10)[0]
    assert cos.time_budget_s == 120 and cos.checkpoint_state is not None
    assert build_callbacks(cfg, None, steps=10, multi_worker=True)[0].time_budget_s is None
    off = load_config("smoke.yaml", ["train.time_limit_minutes=2", "train.fit_schedule_to_time_limit=false"])
    assert build_callbacks(off, None, steps=10)[0].checkpoint_state is None
