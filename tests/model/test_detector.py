"""Detector: output shapes vs anchors, anchor order, prior bias, config round trip, fit smoke."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.config import from_dict, to_dict
from detector.errors import UserError
from detector.model import AnchorPredictor, Detector, HeadTower, build_detector
from detector.targets.anchors import anchors_for_config, generate_anchors

TINY = {"backbone": {"width": 8}, "fpn_channels": 16, "head_channels": 16}


def _cfg(size=64, model=None, loss=None, classes=("a", "b", "c")):
    return from_dict({"data": {"classes": list(classes), "image_size": size},
                      "model": {**TINY, **(model or {})}, "loss": loss or {}})


def _images(b, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (b, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("model_cfg", [
    {},                                                          # small_cnn, levels 3-5
    {"min_level": 3, "max_level": 7, "separable": False},       # extra stride-2 levels 6, 7
    {"min_level": 2, "max_level": 4, "depth_head": "own_tower", "activation": "swish"},
    {"depth_per_class": True},                                   # depth [B, N, C]
    {"backbone": {"name": "mobilenet_v2", "alpha": 0.35, "weights": None}},
])
def test_output_shapes_match_anchors(model_cfg):
    cfg = _cfg(128, model_cfg)
    model = build_detector(cfg)
    out = model(_images(2, 128), training=False)
    n = anchors_for_config(cfg).shape[0]
    assert out["cls_logits"].shape == (2, n, 3)
    assert out["box"].shape == (2, n, 4)
    assert out["depth"].shape == ((2, n, 3) if model_cfg.get("depth_per_class") else (2, n))
    assert all(v.dtype == tf.float32 for v in out.values())
    np.testing.assert_array_equal(model.anchors(), anchors_for_config(cfg))


def test_scratch_application_trunk_uses_fast_bn_momentum():
    """A keras.applications trunk from random weights gets BN momentum 0.9 (its own 0.999
    lags a short run so far that inference collapses); the detector's own BN has 0.9 too."""
    from detector.model.backbones import SCRATCH_BN_MOMENTUM

    cfg = _cfg(64, {"backbone": {"name": "mobilenet_v2", "alpha": 0.35, "weights": None}})
    model = build_detector(cfg)
    bns = [la for la in model._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) > 50 and all(la.momentum <= SCRATCH_BN_MOMENTUM for la in bns)


@pytest.mark.slow  # ~5 s to build ResNet50; run with -m slow
def test_resnet50_backbone_levels():
    cfg = _cfg(64, {"backbone": {"name": "resnet50"}, "min_level": 3, "max_level": 6})
    out = build_detector(cfg)(_images(1, 64))
    assert out["cls_logits"].shape[1] == anchors_for_config(cfg).shape[0]


def test_prior_bias_and_depth_prior():
    cfg = _cfg(64, {"prior_probability": 0.01, "depth_prior": 20.0})
    out = build_detector(cfg)(_images(2, 64), training=False)
    probs = tf.sigmoid(out["cls_logits"]).numpy()
    np.testing.assert_allclose(probs.mean(), 0.01, atol=1e-3)
    assert probs.max() < 0.02
    np.testing.assert_allclose(np.exp(out["depth"].numpy()).mean(), 20.0, rtol=0.05)


def test_depth_per_class_adds_one_learned_offset_per_class():
    """depth [B, N, C] = the shared per-anchor prediction + offset[c]; offsets start at 0."""
    cfg = _cfg(64, {"depth_per_class": True, "depth_prior": 20.0})
    model = build_detector(cfg)
    x = _images(2, 64)
    depth = model(x, training=False)["depth"].numpy()
    np.testing.assert_allclose(depth - depth[..., :1], 0.0, atol=1e-6)        # offsets start equal (0)
    np.testing.assert_allclose(np.exp(depth).mean(), 20.0, rtol=0.05)
    model.depth_class_offset.offset.assign([0.0, np.log(2.0), -1.0])
    moved = model(x, training=False)["depth"].numpy()
    np.testing.assert_allclose(moved - depth, np.broadcast_to([0.0, np.log(2.0), -1.0], depth.shape), atol=1e-5)
    assert "detector/depth_class_offset/offset" in {w.path for w in model.trainable_weights}


def test_predictor_flattening_follows_anchor_order():
    """Feed per-level maps holding each cell's centre; row n must land on anchor n's centre."""
    size, levels, ratios, num_scales = 64, (3, 4), (0.5, 1.0, 2.0), 2
    a = num_scales * len(ratios)
    feats = []
    for lvl in levels:
        stride, h = 2**lvl, size // 2**lvl
        c = stride / 2 + stride * np.arange(h, dtype=np.float32)
        cy, cx = np.meshgrid(c, c, indexing="ij")
        # channel k*2 + j: (anchor k, output j in [yc, xc + 1000*k]) so the anchor slot is encoded too
        feats.append(np.stack([v for k in range(a) for v in (cy, cx + 1000 * k)], -1)[None])
    pred = AnchorPredictor(a, 2, separable=False)
    pred(feats)  # build
    kernel = np.zeros((3, 3, 2 * a, 2 * a), np.float32)
    kernel[1, 1] = np.eye(2 * a)  # centre tap identity: output = input
    pred.conv.set_weights([kernel, np.zeros(2 * a, np.float32)])
    out = pred(feats).numpy()[0]
    anchors = generate_anchors(size, levels[0], levels[-1], num_scales, ratios, 4.0)
    yc, xc = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    slot = np.concatenate([np.tile(np.arange(a), (size // 2**lvl) ** 2) for lvl in levels])
    np.testing.assert_allclose(out[:, 0], yc, atol=1e-4)
    np.testing.assert_allclose(out[:, 1], xc + 1000 * slot, atol=1e-3)


def test_config_round_trip_and_keras_file(tmp_path):
    cfg = _cfg(64, {"depth_head": "own_tower", "head_norm": "group"}, {"weighting": "uncertainty", "huber_delta": 0.5})
    model = build_detector(cfg)
    model.task_uncertainty.log_variance.assign([0.1, 0.2, 0.3])
    clone = Detector.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.config_tree.model == cfg.model and clone.config_tree.loss == cfg.loss
    assert [v.shape for v in clone.weights] == [v.shape for v in model.weights]
    path = tmp_path / "det.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _images(2, 64, 1)
    for k, v in model(x).items():
        np.testing.assert_allclose(loaded(x)[k].numpy(), v.numpy(), atol=1e-6)
    np.testing.assert_allclose(loaded.task_uncertainty.log_variance.numpy(), [0.1, 0.2, 0.3])


def test_group_norm_head_normalises_each_group_of_each_image():
    """``model.head_norm: group``: every tower norm is a GroupNormalization of gcd(16, channels)
    groups, so (gamma 1, beta 0 at the start) each image's group of channels has mean 0 and
    variance 1 over its locations, and training mode changes nothing (no batch statistics)."""
    model = build_detector(_cfg(128, {"head_norm": "group", "head_channels": 24}))
    towers = [model.cls_tower, model.box_tower]
    assert all(isinstance(n, keras.layers.GroupNormalization) and n.groups == 8 for t in towers for n in t.norms)
    assert not [w for t in towers for w in t.weights if "moving" in w.path]
    tower = HeadTower(num_levels=2, num_convs=1, channels=32, separable=False, activation="linear", norm="group")
    rng = np.random.default_rng(0)
    feats = [rng.normal(3.0, 2.0, (2, 8, 8, 16)).astype(np.float32),
             rng.normal(-1.0, 5.0, (2, 4, 4, 16)).astype(np.float32)]
    inference = tower(feats, training=False)
    for y, y_train in zip(inference, tower(feats, training=True)):
        np.testing.assert_allclose(y_train.numpy(), y.numpy(), atol=1e-6)
        b, h, w, c = y.shape
        groups = y.numpy().reshape(b, h * w, 16, c // 16)   # 16 groups of 2 channels
        np.testing.assert_allclose(groups.mean(axis=(1, 3)), 0.0, atol=1e-4)
        np.testing.assert_allclose(groups.var(axis=(1, 3)), 1.0, atol=1e-2)


def test_from_config_never_downloads_weights():
    cfg = _cfg(64)
    model_config = to_dict(cfg.model)
    model_config["backbone"]["weights"] = "imagenet"  # small_cnn would raise if this were used
    config = {"name": "det", "class_names": ["a"], "image_size": 64, "model_config": model_config}
    assert Detector.from_config(config).config_tree.model.backbone.weights is None


def test_stem_activation_applies_to_the_two_stem_convs_only(tmp_path):
    model = build_detector(_cfg(64, {"activation": "swish", "backbone": {"width": 8, "stem_activation": "relu"}}))
    acts = {layer.name: layer.activation.__name__ for layer in model.backbone.layers
            if isinstance(layer, keras.layers.Activation)}
    assert acts.pop("stem1_act") == acts.pop("stem2_act") == "relu"
    assert acts and set(acts.values()) == {"silu"}             # every block of stages 3-5
    model.save(tmp_path / "det.keras")                          # the key survives a reload
    loaded = keras.models.load_model(tmp_path / "det.keras")
    x = _images(2, 64, 1)
    np.testing.assert_allclose(loaded(x)["cls_logits"].numpy(), model(x)["cls_logits"].numpy(), atol=1e-6)


def test_small_cnn_has_no_pretrained_weights():
    with pytest.raises(UserError, match="model.backbone.weights"):
        build_detector(_cfg(64, {"backbone": {"width": 8, "weights": "imagenet"}}))


def _random_targets(model, b, seed=0):
    n = model.anchors().shape[0]
    rng = np.random.default_rng(seed)
    cls = rng.choice([-2, -1, 0, 1, 2], size=(b, n), p=[0.05, 0.85, 0.04, 0.03, 0.03]).astype(np.int32)
    return {"cls": cls, "box": rng.normal(size=(b, n, 4)).astype(np.float32),
            "depth": rng.normal(2, 0.5, (b, n)).astype(np.float32),
            "depth_mask": (cls >= 0).astype(np.float32)}


def test_two_step_fit():
    model = build_detector(_cfg(64, loss={"weighting": "uncertainty"}))
    x, t = _images(4, 64), _random_targets(model, 4)
    ds = tf.data.Dataset.from_tensor_slices((x, t)).batch(2)
    model.compile(optimizer=keras.optimizers.SGD(0.05))  # SGD: cheaper to trace than Adam
    before = [np.asarray(w) for w in model.trainable_weights]
    history = model.fit(ds, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0).history
    for key in ("loss", "cls_loss", "box_loss", "depth_loss"):
        assert np.isfinite(history[key][0]) and history[key][0] > 0, key
    unchanged = [w.path for a, w in zip(before, model.trainable_weights) if np.array_equal(a, np.asarray(w))]
    assert not unchanged  # every variable (log-variances included) received a gradient
    assert any("log_variance" in v.path for v in model.trainable_variables)
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["cls_loss"] > 0


def test_compute_loss_accepts_pipeline_dicts():
    """fit() on make_dataset's dicts: Keras passes the whole dict as x and y=None."""
    model = build_detector(_cfg(64))
    x, t = _images(2, 64), _random_targets(model, 2, seed=3)
    batch = {"images": x, "targets": t, "gt": {"image_id": np.arange(2)}}
    from_dict_loss = model.compute_loss(x=batch, y=None, y_pred=model(batch, training=False))
    from_tuple_loss = model.compute_loss(x=x, y=t, y_pred=model(x, training=False))
    np.testing.assert_allclose(from_dict_loss.numpy(), from_tuple_loss.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        model.compute_loss(x=x, y=None, y_pred=model(x))


def test_freeze_bn_freezes_backbone_norms_only():
    model = build_detector(_cfg(64, {"backbone": {"width": 8, "freeze_bn": True}}))
    bn = [layer for layer in model.backbone._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
               for layer in model.fpn._flatten_layers())
