"""Config: every kind of user mistake is rejected with a message naming the file and key."""

from pathlib import Path

import pytest
import yaml

from detector.config import ConfigError, load_config, resolve_config_path, save_config, to_dict


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


BASE = "data:\n  classes: [a, b]\n"


@pytest.mark.parametrize("text, key, fragment", [
    (BASE + "train:\n  epochz: 3\n", "train.epochz", "unknown key"),
    (BASE + "bogus: 1\n", "bogus", "unknown key"),
    (BASE + "train:\n  epochs: three\n", "train.epochs", "expected an integer"),
    (BASE + "train:\n  epochs: 2.5\n", "train.epochs", "expected an integer"),
    (BASE + "train:\n  learning_rate: fast\n", "train.learning_rate", "expected a number"),
    (BASE + "callbacks:\n  tensorboard: 1\n", "callbacks.tensorboard", "expected true or false"),
    (BASE + "train:\n  batch_size: -4\n", "train.batch_size", "must be positive"),
    (BASE + "train:\n  epochs: 0\n", "train.epochs", "must be positive"),
    (BASE + "data:\n  classes: []\n", "data.classes", "empty"),
    ("data:\n  classes: [a, a]\n", "data.classes", "unique"),
    (BASE.replace("[a, b]", "[a, b]\n  image_size: 200"), "data.image_size", "multiple of the largest stride"),
    (BASE.replace("[a, b]", "[a, b]\n  image_size: -32"), "data.image_size", "must be positive"),
    (BASE + "distribute:\n  strategy: magic\n", "distribute.strategy", "expected one of"),
    (BASE + "matching:\n  positive_iou: 0.3\n  negative_iou: 0.4\n", "matching.negative_iou",
     "negative_iou <= positive_iou"),
    (BASE + "model:\n  anchors:\n    aspect_ratios: 1.0\n", "model.anchors.aspect_ratios", "expected list"),
    (BASE + "model:\n  box_scale_factors: [1, 2]\n", "model.box_scale_factors", "expected list of 4"),
    (BASE + "train: 5\n", "train", "expected a mapping"),
    (BASE + "  augment:\n    mosaic_off_last: 1.0\n", "data.augment.mosaic_off_last", "must be in [0, 1)"),
    (BASE.replace("[a, b]", "[a, b]\n  source: coco_json"), "data.train_json",
     "required when data.source is coco_json"),
])
def test_bad_values_name_file_and_key(tmp_path, text, key, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert key in msg, msg
    assert fragment in msg, msg


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config.yaml")


def test_bare_name_resolves_in_configs_dir():
    assert resolve_config_path("synthetic.yaml").parent.name == "configs"
    assert resolve_config_path("synthetic").name == "synthetic.yaml"


def test_overrides_parse_yaml_scalars_and_validate(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["train.epochs=3", "train.learning_rate=1e-3", "train.steps_per_epoch=null",
                             "model.anchors.aspect_ratios=[1.0, 2.0]", "data.augment.backend=tf"])
    assert cfg.train.epochs == 3 and cfg.train.learning_rate == 1e-3
    assert cfg.train.steps_per_epoch is None
    assert cfg.model.anchors.aspect_ratios == (1.0, 2.0)
    assert cfg.data.augment.backend == "tf"
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(path, ["train.epochs=lots"])
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_config(path, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, ["train.epochs"])


def test_every_shipped_config_loads_and_round_trips(tmp_path):
    for p in sorted(Path(resolve_config_path("synthetic.yaml").parent).glob("*.yaml")):
        cfg = load_config(p)
        out = tmp_path / p.name
        save_config(cfg, out)
        again = load_config(out)
        assert again == cfg, p.name
        assert yaml.safe_load(out.read_text()) == to_dict(cfg)
