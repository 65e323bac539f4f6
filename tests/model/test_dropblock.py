"""DropBlock2D: whole b x b blocks inside the map, the dropped share, the rescaling, identity at
inference; the small_cnn option end to end (inference unchanged, saved and reloaded, exported)."""

import keras
import numpy as np
import pytest

from detector.config import from_dict
from detector.errors import UserError
from detector.model import build_detector
from detector.model.dropblock import DropBlock2D


def _zeros_of(layer, x):
    return np.asarray(layer(x, training=True)) == 0


def test_identity_at_inference_and_at_rate_zero():
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(DropBlock2D(0.3, 3)(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(DropBlock2D(0.3, 3)(x)), x)
    np.testing.assert_array_equal(np.asarray(DropBlock2D(0.0, 3)(x, training=True)), x)


def test_drops_whole_blocks_inside_the_map():
    keras.utils.set_random_seed(1)
    layer = DropBlock2D(0.02, 5)                      # gamma ~ 0.0013: mostly 0 or 1 block per map
    zeros = _zeros_of(layer, np.ones((400, 16, 16, 1), np.float32))[..., 0]
    single = 0
    for z in zeros:
        if not z.any():
            continue
        assert z.sum() >= 25                          # never a block cut by the border
        rows, cols = np.nonzero(z)
        if z.sum() == 25:                             # one block: a full 5 x 5 square
            assert rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4
            single += 1
    assert single >= 20                               # expected ~ 400 * 144 * 0.0013 ~ 60


@pytest.mark.parametrize("size,block", [(24, 5), (12, 4), (12, 3)])
def test_dropped_share_and_rescaling(size, block):
    keras.utils.set_random_seed(0)
    rate = 0.1
    x = np.ones((64, size, size, 32), np.float32)
    y = np.asarray(DropBlock2D(rate, block)(x, training=True))
    share = (y == 0).mean()
    # Closed form for independent centres: each cell is dropped unless none of the
    # centres whose block covers it fired; interior cells have b*b such centres.
    valid = size - block + 1
    gamma = rate / block**2 * size**2 / valid**2
    cover = np.zeros((size, size))
    for i in range(valid):
        for j in range(valid):
            cover[i:i + block, j:j + block] += 1
    expected = 1 - np.mean((1 - gamma) ** cover)
    assert share == pytest.approx(expected, abs=0.01)
    kept = y[y != 0]
    np.testing.assert_allclose(kept, y.size / kept.size, rtol=1e-5)   # sum of the map kept
    assert y.mean() == pytest.approx(1.0, abs=1e-5)


def _config(drop_block):
    model_cfg = {"backbone": {"width": 8, "drop_block": drop_block, "drop_block_size": 3},
                 "fpn_channels": 16, "head_channels": 16}
    return from_dict({"data": {"classes": ["a"], "image_size": 64}, "model": model_cfg})


def test_small_cnn_option_changes_training_only_and_is_saved(tmp_path):
    keras.utils.set_random_seed(0)
    model, plain = build_detector(_config(0.2)), build_detector(_config(0.0))
    names = [layer.name for layer in model.backbone.layers if isinstance(layer, DropBlock2D)]
    assert names == ["stage4_dropblock", "stage5_dropblock"]
    assert not any(isinstance(layer, DropBlock2D) for layer in plain.backbone.layers)
    weights = {v.path: v for v in model.weights}
    for v in plain.weights:
        v.assign(weights[v.path])
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    infer = model(x, training=False)["cls_logits"].numpy()
    np.testing.assert_allclose(plain(x, training=False)["cls_logits"].numpy(), infer, atol=1e-6)
    # In training (batch statistics in both) only the dropped blocks differ.
    assert not np.allclose(model(x, training=True)["cls_logits"].numpy(),
                           plain(x, training=True)["cls_logits"].numpy(), atol=1e-4)
    model.save(tmp_path / "det.keras")                  # (the training calls moved the BN statistics)
    loaded = keras.models.load_model(tmp_path / "det.keras")
    np.testing.assert_allclose(loaded(x, training=False)["cls_logits"].numpy(),
                               model(x, training=False)["cls_logits"].numpy(), atol=1e-6)


@pytest.mark.parametrize("backbone,key", [({"drop_block": 1.0}, "drop_block"), ({"drop_block": -0.1}, "drop_block"),
                                          ({"drop_block_size": 0}, "drop_block_size"),
                                          ({"name": "mobilenet_v2", "drop_block": 0.1}, "drop_block")])
def test_config_rejects_bad_values(backbone, key):
    with pytest.raises(UserError, match=f"model.backbone.{key}"):
        from_dict({"data": {"classes": ["a"]}, "model": {"backbone": backbone}})


def test_float_tflite_export_is_the_inference_model(tmp_path):
    from detector.export.converter import convert_float
    from detector.export.graph import write_saved_model
    from detector.export.tflite_runner import TFLiteDetector

    keras.utils.set_random_seed(0)
    cfg = _config(0.2)
    model = build_detector(cfg)
    path = tmp_path / "raw.tflite"
    path.write_bytes(convert_float(write_saved_model(model, cfg, tmp_path / "sm", "none")))
    runner = TFLiteDetector(path, metadata={})
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    ref = model(x.astype(np.float32), training=False)
    for i in range(len(x)):
        got = runner(x[i])
        for k in ("cls_logits", "box"):
            np.testing.assert_allclose(got[k], ref[k][i].numpy(), atol=1e-4, rtol=0, err_msg=k)
