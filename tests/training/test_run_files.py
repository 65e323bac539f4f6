"""Progress line, results.csv writer, run directory, strategy construction."""

import io

import pytest
import tensorflow as tf

from detector.config import DistributeConfig, from_dict, load_config
from detector.errors import UserError
from detector.training.progress import ProgressBar
from detector.training.results import ResultsWriter, find_resume_dir, new_run_dir, read_results
from detector.training.strategy import build_strategy, configure_devices, is_chief


def _cfg(tmp_path, **train):
    return from_dict({"name": "toy", "run_root": str(tmp_path), "data": {"classes": ["a", "b"]},
                      "train": train})


def test_progress_plain_lines_when_not_a_tty():
    out = io.StringIO()
    bar = ProgressBar(epoch=2, epochs=5, steps=4, stream=out, plain_every_s=1e9)
    for step in range(1, 5):
        bar.update(step, {"loss": 1.0 / step, "cls_loss": 0.5, "box_loss": 0.25}, images_per_s=12.34)
    bar.close("val: AP=0.5")
    lines = out.getvalue().splitlines()
    # first step, then nothing until the epoch's last step (throttled), then the message
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("epoch 2/5 [") and "1/4" in lines[0] and "ETA" in lines[0]
    assert "4/4  loss 0.2500  cls 0.5000  box 0.2500  12.3 img/s" in lines[1]
    assert lines[2] == "val: AP=0.5"


def test_results_writer_grows_columns_and_trims_on_resume(tmp_path):
    path = tmp_path / "results.csv"
    w = ResultsWriter(path)
    w.write({"epoch": 1, "step": 10, "loss": 2.0, "lr": 0.1, "images_per_s": 5.0})
    w.write({"epoch": 2, "step": 20, "loss": 1.5, "lr": 0.05, "val_AP": 0.25, "images_per_s": 6.0})
    w.write({"epoch": 3, "step": 30, "loss": 1.0, "lr": 0.01, "images_per_s": 7.0})
    rows = read_results(path)
    assert list(rows[0]) == ["epoch", "step", "loss", "lr", "val_AP", "images_per_s"]
    assert [r["val_AP"] for r in rows] == ["", "0.25", ""]
    resumed = ResultsWriter(path, keep_through_epoch=2)  # checkpoint was after epoch 2
    resumed.write({"epoch": 3, "step": 30, "loss": 0.9, "lr": 0.01, "images_per_s": 7.0})
    assert [(r["epoch"], r["loss"]) for r in read_results(path)] == [("1", "2"), ("2", "1.5"), ("3", "0.9")]


def test_run_dir_has_config_and_resume_finds_newest(tmp_path):
    cfg = _cfg(tmp_path, epochs=3)
    first = new_run_dir(cfg)
    assert first.parent == tmp_path and first.name.startswith("toy-")
    assert load_config(first / "config.yaml") == cfg
    with pytest.raises(UserError, match="no run of 'toy' with checkpoints"):
        find_resume_dir(cfg)
    (first / "checkpoints" / "last").mkdir(parents=True)
    assert find_resume_dir(cfg) == first
    with pytest.raises(UserError, match="already holds checkpoints"):
        new_run_dir(cfg, first)
    with pytest.raises(UserError, match="no checkpoints/last"):
        find_resume_dir(cfg, tmp_path / "elsewhere")


def test_strategies_from_config():
    assert build_strategy(DistributeConfig()).num_replicas_in_sync == 1
    configure_devices(DistributeConfig(strategy="mirrored", num_cpu_devices=2))  # conftest split: ok
    mirrored = build_strategy(DistributeConfig(strategy="mirrored", num_cpu_devices=2))
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2 and is_chief(mirrored)
    with pytest.raises(UserError, match="num_cpu_devices=4"):
        configure_devices(DistributeConfig(strategy="mirrored", num_cpu_devices=4))
