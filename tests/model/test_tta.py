"""Test-time augmentation over input scales (+ flip, box voting): the merged detections against
one decode over all passes' outputs, computed independently; the twins follow the weights."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from detector.config import ConfigError, EvalConfig, load_config
from detector.model import build_detector, decode_detections
from detector.model.flip_test import flip_averaged_outputs, mirror_permutation
from detector.model.tta import TestTimeAugmentation

# every (anchor, class) pair is a candidate, so one NMS over the joined passes is the reference
EVAL = EvalConfig(score_threshold=0.0, pre_nms_top_k=100_000, max_detections=50)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg = load_config("smoke", [f"data.synthetic.cache_dir={tmp_path_factory.mktemp('cache')}"])
    tf.keras.utils.set_random_seed(5)
    return cfg, build_detector(cfg)


def _reference(cfg, model, images, eval_cfg):
    """Outputs of each scale from a separately built model at that side (weights copied, input
    resized), flip-averaged when on; anchors scaled into the S-pixel frame; one decode."""
    size, outs, anchors = cfg.data.image_size, [], []
    for f in eval_cfg.test_scales:
        side = round(size * f)
        net = model
        if side != size:
            net = build_detector(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=side)))
            net.set_weights(model.get_weights())
        x = tf.image.resize(images, [side, side]) if side != size else tf.constant(images)
        a = net.anchors()
        out = (flip_averaged_outputs(net, x, tf.constant(mirror_permutation(a, side))) if eval_cfg.flip_test
               else net(x, training=False))
        outs.append({k: v.numpy() for k, v in out.items()})
        anchors.append(a * (size / side))
    joined = {k: np.concatenate([o[k] for o in outs], axis=1) for k in outs[0]}
    dets = decode_detections(joined, np.concatenate(anchors), eval_cfg, cfg.model.box_scale_factors, image_size=size)
    return {k: v.numpy() for k, v in dets.items()}


@pytest.mark.parametrize("flip,vote", [(False, None), (True, 0.7)])
def test_scales_merge_like_one_decode_over_all_passes(smoke, flip, vote):
    cfg, model = smoke
    eval_cfg = dataclasses.replace(EVAL, test_scales=(1.0, 1.5), flip_test=flip, box_voting_iou=vote)
    images = np.random.default_rng(1).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    tta = TestTimeAugmentation(model, eval_cfg)
    assert [side for side, *_ in tta.passes] == [128, 192] and len(tta.twins) == 1
    got = {k: v.numpy() for k, v in tta(tf.constant(images)).items()}
    want = _reference(cfg, model, images, eval_cfg)
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-2)
    # the second scale matters: without it the detections differ
    alone = TestTimeAugmentation(model, dataclasses.replace(eval_cfg, test_scales=(1.0,)))(tf.constant(images))
    assert not np.allclose(alone["boxes"].numpy(), got["boxes"], atol=1e-2)


def test_plain_settings_are_decode_detections(smoke):
    cfg, model = smoke
    images = tf.constant(np.random.default_rng(2).uniform(0, 255, (2, 128, 128, 3)), tf.float32)
    got = TestTimeAugmentation(model, EVAL)(images)
    want = decode_detections(model(images, training=False), model.anchors(), EVAL, cfg.model.box_scale_factors)
    for k in want:
        np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(), err_msg=k)


def test_sync_copies_new_weights_into_the_twins(smoke):
    cfg, model = smoke
    tta = TestTimeAugmentation(model, dataclasses.replace(EVAL, test_scales=(1.0, 0.5)))
    twin = tta.twins[0]
    saved = model.get_weights()
    try:
        model.set_weights([w + 0.01 for w in saved])
        assert not np.allclose(twin.get_weights()[0], model.get_weights()[0])
        tta.sync()
        for a, b in zip(twin.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
    finally:
        model.set_weights(saved)


def test_config_rejects_scales_off_the_anchor_grid():
    with pytest.raises(ConfigError, match=r"eval.test_scales.*factor 1.1 gives an input side of 141 px"):
        load_config("smoke", ["eval.test_scales=[1.0, 1.1]"])
    with pytest.raises(ConfigError, match="eval.box_voting_iou"):
        load_config("smoke", ["eval.box_voting_iou=0"])
    assert load_config("smoke", ["eval.test_scales=[1.0, 1.5]"]).eval.test_scales == (1.0, 1.5)


def test_evaluator_detections_follow_the_weights_with_twins(smoke, two_replica_strategy):
    """DetectionEvaluator under test scales + flip + voting, on two replicas, gives KerasRunner's
    detections, also after the weights change between evaluations (the twins are re-synced)."""
    from detector.data import make_dataset
    from detector.evaluation.evaluator import DetectionEvaluator
    from detector.inference.runner import KerasRunner

    cfg, _ = smoke
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, test_scales=(1.0, 1.5), flip_test=True,
                                                            box_voting_iou=0.8, steps=1, score_threshold=0.0))
    strategy = two_replica_strategy
    with strategy.scope():
        tf.keras.utils.set_random_seed(6)
        model = build_detector(cfg)
    val = make_dataset(cfg, "val", training=False)
    images = np.clip(np.round(next(iter(val))["images"].numpy()), 0, 255)
    evaluator = DetectionEvaluator(cfg, strategy, val, progress=False)
    saved = model.get_weights()
    for step in range(2):
        seen = []
        evaluator(model, sink=lambda gt, dets, seen=seen: seen.append(dets))
        want = KerasRunner(model, cfg.eval)(images)
        assert (want["scores"] > 0).any()
        np.testing.assert_allclose(seen[0]["scores"], want["scores"], atol=1e-5, err_msg=f"evaluation {step}")
        model.set_weights([w * 1.05 for w in saved])
