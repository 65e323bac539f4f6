"""``detector predict`` end to end on an untrained smoke-sized .keras model: annotated images
at the original (EXIF-applied) size, a valid COCO results file whose boxes are the model's
network boxes mapped back by hand, and user errors exiting 2."""

import json

import numpy as np
import pytest
from tool_runner import run_in_process

from detector.config import load_config

SETS = ["--config", "smoke.yaml", "--set", "eval.score_threshold=0.001"]   # untrained: scores ~0.01


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    from detector.model import build_detector

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("predict") / "model.keras"
    build_detector(load_config("smoke.yaml")).save(path)
    return path


def test_predict_writes_images_and_coco_json(model_file, tmp_path):
    import cv2
    from PIL import Image

    from detector.inference.preprocess import letterbox_image, read_image
    from detector.inference.runner import KerasRunner

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 150, 3), np.uint8)).save(src / "wide.png")
    tall = Image.fromarray(rng.integers(0, 255, (150, 90, 3), np.uint8))
    exif = tall.getexif()
    exif[0x0112] = 8                                        # rotate 90 degrees counter-clockwise: 90 x 150
    tall.save(src / "turned.jpg", exif=exif)
    out = tmp_path / "out"
    code, stdout, err = run_in_process("predict", ["--checkpoint", str(model_file), "--source", str(src), *SETS,
                                                   "--out", str(out), "--save-json", "--score", "0.005"])
    assert code == 0, err
    assert stdout.splitlines()[-1].startswith("speed: ") and "ms inference" in stdout
    for name in ("turned.jpg", "wide.jpg"):
        assert cv2.imread(str(out / name)).shape == (90, 150, 3)
    results = json.loads((out / "predictions.json").read_text())
    ids = json.loads((out / "image_ids.json").read_text())
    assert sorted(ids.values()) == [1, 2] and len(results) > 0
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score", "depth"}
    # the boxes are the runner's network boxes / scale, clipped to the original image
    cfg = load_config("smoke.yaml", ["eval.score_threshold=0.001"])
    import keras

    runner = KerasRunner(keras.saving.load_model(model_file), cfg.eval)
    image = read_image(src / "wide.png")
    boxed, scale = letterbox_image(image, 128)
    dets = runner(boxed[None])
    n = int(dets["num_detections"][0])
    y0, x0, y1, x1 = (dets["boxes"][0, :n] / scale).T
    want = np.stack([np.clip(x0, 0, 150), np.clip(y0, 0, 90), np.clip(x1, 0, 150) - np.clip(x0, 0, 150),
                     np.clip(y1, 0, 90) - np.clip(y0, 0, 90)], 1)
    got = [r for r in results if r["image_id"] == ids[str(src / "wide.png")]]
    assert len(got) == n
    np.testing.assert_allclose([r["bbox"] for r in got], want, rtol=1e-4, atol=1e-3)
    assert all(r["category_id"] == int(c) + 1 for r, c in zip(got, dets["classes"][0, :n]))
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 150 + 1e-6 for r in results)


def test_predict_user_errors(model_file, tmp_path):
    code, out, err = run_in_process("predict", ["--checkpoint", str(model_file), "--source", str(tmp_path / "no")])
    assert code == 2 and "no such file or directory" in err
    code, out, err = run_in_process("predict", ["--checkpoint", str(tmp_path), "--source", str(tmp_path)])
    assert code == 2 and "the directory has no images" in err
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    code, out, err = run_in_process("predict", ["--checkpoint", str(tmp_path / "none.keras"), "--source",
                                                str(tmp_path)])
    assert code == 2 and f"--checkpoint {tmp_path / 'none.keras'}: no such file" in err
