"""Properties of the embedded synthetic dataset (generator + cache)."""

import json
from collections import Counter

import numpy as np
import pytest

from detector.config import load_config
from detector.data.shapes import PHYSICAL_SIZE
from detector.data.synthetic import dataset_dir, ensure_synthetic
from detector.data.synthetic_scene import DEPTH_RANGE, FOCAL_PER_WIDTH, SIZE_NOISE


def _cfg(cache, *extra):
    return load_config("synthetic", [f"data.synthetic.cache_dir={cache}", "data.synthetic.num_train=150",
                                     "data.synthetic.num_val=10", *extra])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synth")
    cfg = _cfg(cache)
    root = ensure_synthetic(cfg, progress=False)
    return cfg, root, json.loads((root / "instances_train.json").read_text())


def test_layout_and_categories(generated):
    cfg, root, doc = generated
    assert [c["name"] for c in doc["categories"]] == list(cfg.data.classes)
    assert [c["id"] for c in doc["categories"]] == list(range(1, 7))
    assert len(doc["images"]) == 150
    assert all((root / "train" / im["file_name"]).is_file() for im in doc["images"])
    assert len(json.loads((root / "instances_val.json").read_text())["images"]) == 10
    # Atomic write: no temporary folder left next to the dataset.
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_class_imbalance_at_least_10_to_1(generated):
    _, _, doc = generated
    counts = Counter(a["category_id"] for a in doc["annotations"] if not a["iscrowd"])
    assert set(counts) == set(range(1, 7))
    assert counts[1] / counts[6] >= 10.0
    assert counts[1] > counts[2] > counts[3]  # frequency falls with the class index


def test_area_ranges_empty_images_and_crowds(generated):
    _, _, doc = generated
    area = np.array([a["area"] for a in doc["annotations"]])
    assert (area < 32**2).sum() >= 50
    assert ((area >= 32**2) & (area < 96**2)).sum() >= 50
    assert (area >= 96**2).sum() >= 20
    with_objects = {a["image_id"] for a in doc["annotations"]}
    assert 3 <= 150 - len(with_objects) <= 40           # ~8% empty images
    crowds = [a for a in doc["annotations"] if a["iscrowd"]]
    assert len(crowds) >= 2
    # A crowd box encloses several small shapes: wider than one member (<= 14 px + 15%).
    assert all(max(a["bbox"][2], a["bbox"][3]) > 17 for a in crowds)


def test_boxes_are_exact_integers_inside_the_image(generated):
    _, _, doc = generated
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, int) for v in a["bbox"]) and isinstance(a["area"], int)
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= 256 and y + h <= 256
        assert a["area"] <= w * h                          # mask pixels inside their box
        assert min(w, h) >= 4 or a["iscrowd"]


def test_depth_follows_the_pinhole_model(generated):
    _, _, doc = generated
    focal = FOCAL_PER_WIDTH * 256
    names = {c["id"]: c["name"] for c in doc["categories"]}
    depth = np.array([a["depth"] for a in doc["annotations"]])
    assert depth.min() >= DEPTH_RANGE[0] - 1e-3 and depth.max() <= DEPTH_RANGE[1] + 1e-3
    # Circles: the box side is the apparent diameter = focal * size / depth, with the
    # physical size jittered by N(0, SIZE_NOISE) (clipped to +-20%) and occlusion only
    # shrinking the visible box.
    ratios = np.array([max(a["bbox"][2], a["bbox"][3]) * a["depth"] / (focal * PHYSICAL_SIZE["circle"])
                       for a in doc["annotations"]
                       if names[a["category_id"]] == "circle" and not a["iscrowd"] and a["area"] > 400])
    assert len(ratios) > 50
    assert 0.95 <= np.median(ratios) <= 1.05
    assert ratios.max() <= 1.2 + 0.1                       # noise clip + 1-2 px rasterisation
    assert np.percentile(ratios, 75) - np.percentile(ratios, 25) <= 4 * SIZE_NOISE


def test_deterministic_and_parameter_hashed(tmp_path, generated):
    cfg, root, doc = generated
    cfg2 = _cfg(tmp_path / "again")
    root2 = ensure_synthetic(cfg2, progress=False)
    assert root2.name == root.name
    assert json.loads((root2 / "instances_train.json").read_text()) == doc
    for name in ("000001.jpg", "000077.jpg", "000150.jpg"):
        assert (root2 / "train" / name).read_bytes() == (root / "train" / name).read_bytes()
    assert dataset_dir(_cfg(tmp_path, "data.synthetic.seed=1")).name != root.name
    assert dataset_dir(_cfg(tmp_path, "data.synthetic.imbalance=12.0")).name != root.name


def test_unknown_class_name_is_rejected(tmp_path):
    cfg = _cfg(tmp_path, "data.classes=[circle, dodecahedron]")
    with pytest.raises(ValueError, match="dodecahedron"):
        ensure_synthetic(cfg, progress=False)
