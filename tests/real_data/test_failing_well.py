"""Without data or weights: exit code 2, a message that says what to do, and no run directory."""

from pathlib import Path

import pytest

from detector.config import load_config
from detector.errors import UserError
from tests.raccoon_mini import MINI
from tests.tools.tool_runner import run_in_process


@pytest.mark.parametrize("extra", [[], ["--set", "train.steps_per_epoch=5"]])
def test_coco_small_without_prepared_data(tmp_path, extra):
    data_dir = tmp_path / "tfds_nothing_here"
    code, out, err = run_in_process("train", ["--config", "coco_small.yaml", "--set", f"data.tfds_data_dir={data_dir}",
                                              "--set", f"run_root={tmp_path / 'runs'}", *extra])
    assert code == 2, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert "Traceback" not in err and "steps_per_epoch" not in err
    assert str(data_dir) in err                               # where it looked
    assert "download_and_prepare" in err                      # how to prepare on a connected machine
    assert "data.tfds_data_dir" in err                        # how to point at an existing one
    assert "docs/datasets.md" in err


def test_imagenet_weights_that_cannot_be_fetched(tmp_path, monkeypatch):
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    code, out, err = run_in_process("train", [
        "--config", "smoke.yaml", "--set", "model.backbone.name=mobilenet_v2", "--set", "model.backbone.alpha=0.35",
        "--set", "model.backbone.weights=imagenet", "--set", f"data.synthetic.cache_dir={tmp_path / 'syn'}",
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"run_root={tmp_path / 'runs'}"])
    assert code == 2, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert "ImageNet" in err and "model.backbone.weights" in err and "null" in err and "~/.keras/models" in err


def test_backbone_weights_from_a_local_file(tmp_path):
    import keras
    import numpy as np

    from detector.model.backbones import build_backbone

    ref = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None)
    ref.save_weights(tmp_path / "mnv2.weights.h5")
    cfg = load_config("smoke", ["model.backbone.name=mobilenet_v2", "model.backbone.alpha=0.35",
                                f"model.backbone.weights={tmp_path / 'mnv2.weights.h5'}"]).model.backbone
    model, _ = build_backbone(cfg, 64, 3, 5)
    trunk = next(layer for layer in model.layers if layer.name == "mobilenet_v2_trunk")
    np.testing.assert_array_equal(trunk.get_layer("Conv1").get_weights()[0], ref.get_layer("Conv1").get_weights()[0])
    missing = load_config("smoke", ["model.backbone.name=mobilenet_v2",
                                    f"model.backbone.weights={tmp_path / 'nope.h5'}"]).model.backbone
    with pytest.raises(UserError, match="neither 'imagenet', null, nor an existing weights file"):
        build_backbone(missing, 64, 3, 5)


def test_max_images_is_a_fixed_seeded_subset(tmp_path):
    from detector.data.sources import load_records

    def stems(seed, n=3):
        cfg = load_config("raccoon", [f"data.voc_root={MINI}", f"data.max_images={n}", f"data.max_images_seed={seed}"])
        return [Path(r.image).stem for r in load_records(cfg, "train")[0]]

    a = stems(0)
    assert len(a) == 3 and a == stems(0)
    order = (MINI / "ImageSets/Main/train.txt").read_text().split()
    assert a == [s for s in order if s in a]                  # file order kept
    assert {tuple(stems(s)) for s in range(6)} != {tuple(a)}  # the seed picks the subset
    assert len(stems(0, n=50)) == 4                           # more than there are: all
