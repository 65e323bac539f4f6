"""Depth error on matched detections (hand case), padded-image box conversion, and the
anchor-level classification metrics of the train step (single device and 2 replicas)."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from detector.evaluation.depth import DepthError, depth_error_sums, match_image
from detector.evaluation.evaluator import network_to_original_xywh
from detector.training.detector_task import AnchorMetrics

PAD = [0.0, 0.0, 0.0, 0.0]


def _hand_case():
    """3 images (the last a valid=False padding image); expected pairs worked out below."""
    gt = {  # image 0: g0, g1 class 0; g2 class 1; g3 class-0 crowd; g4 class 1 without depth
        "boxes_xywh": np.array([[[0, 0, 10, 10], [20, 0, 10, 10], [0, 20, 10, 10], [40, 0, 10, 10],
                                 [20, 20, 10, 10], PAD],
                                [[0, 0, 10, 10], [50, 50, 10, 10], PAD, PAD, PAD, PAD],
                                [[0, 0, 10, 10], PAD, PAD, PAD, PAD, PAD]], np.float64),
        "classes": np.array([[0, 0, 1, 0, 1, -1], [2, 2, -1, -1, -1, -1], [0, -1, -1, -1, -1, -1]], np.int32),
        "is_crowd": np.array([[0, 0, 0, 1, 0, 0], [0] * 6, [0] * 6], bool),
        "depth": np.array([[10, 20, 5, 8, -1, -1], [2, 4, -1, -1, -1, -1], [7, -1, -1, -1, -1, -1]],
                          np.float32),
    }
    dets = {
        "boxes_xywh": np.array([
            [[0, 0, 10, 10],    # s0 0.90 cls0: IoU 1 with g0, but s1 (higher score) took it -> none
             [2, 0, 10, 10],    # s1 0.95 cls0: g0 (IoU 80/120)           -> |12-10|/10 = 0.2
             [40, 0, 10, 10],   # s2 0.70 cls0: only the crowd box         -> none
             [0, 20, 10, 10],   # s3 0.85 cls0: g2's box but g2 is class 1 -> none
             [0, 22, 10, 10],   # s4 0.60 cls1: g2 (IoU 80/120)           -> |4-5|/5 = 0.2
             [20, 20, 10, 10],  # s5 0.50 cls1: g4, depth unknown          -> matched, not counted
             [20, 0, 10, 10],   # s6 0.50 cls0: g1 (IoU 1)                 -> |30-20|/20 = 0.5
             [21, 0, 10, 10],   # s7 0.50 cls0: same score, later slot: g1 already taken -> none
             PAD],
            [[0, 0, 5, 10],     # cls2: IoU exactly 0.5 with g0            -> |2.5-2|/2 = 0.25
             [50, 50, 10, 4.9],  # cls2: IoU 0.49 with g1                  -> none
             *[PAD] * 7],
            [[0, 0, 10, 10], *[PAD] * 8]], np.float32),
        "scores": np.array([[0.9, 0.95, 0.7, 0.85, 0.6, 0.5, 0.5, 0.5, 0.0],
                            [0.8, 0.7, *[0.0] * 7], [0.9, *[0.0] * 8]], np.float32),
        "classes": np.array([[0, 0, 0, 0, 1, 1, 0, 0, -1], [2, 2, *[-1] * 7], [0, *[-1] * 8]], np.int32),
        "depth": np.array([[11, 12, 8, 5, 4, 3, 30, 20, 0], [2.5, 4, *[0] * 7], [100, *[0] * 8]],
                          np.float32),
    }
    return gt, dets, np.array([True, True, False])


def test_depth_error_hand_case():
    gt, dets, valid = _hand_case()
    match = match_image(dets["boxes_xywh"][0], dets["scores"][0], dets["classes"][0],
                        gt["boxes_xywh"][0], gt["classes"][0], gt["is_crowd"][0])
    assert match.tolist() == [-1, 0, -1, -1, 2, 4, 1, -1, -1]
    total, count = depth_error_sums(gt, dets, valid)
    assert count == 4
    assert total == pytest.approx(0.2 + 0.2 + 0.5 + 0.25, abs=1e-6)
    acc = DepthError()
    acc.update({k: v[:1] for k, v in gt.items()}, {k: v[:1] for k, v in dets.items()})
    acc.update({k: v[1:] for k, v in gt.items()}, {k: v[1:] for k, v in dets.items()}, valid[1:])
    assert acc.count == 4 and acc.result() == pytest.approx(1.15 / 4, abs=1e-7)
    # the padding image would add a pair (error 100/7 - 1) if it were counted
    assert depth_error_sums(gt, dets)[1] == 5
    acc.reset()
    assert acc.count == 0 and np.isnan(acc.result())


def test_network_to_original_xywh_padded_images_no_warning():
    boxes = np.array([[[6.4, 12.8, 32.0, 51.2]], [[1.0, 2.0, 3.0, 4.0]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # "invalid value encountered in divide" used to fire
        out = network_to_original_xywh(boxes, np.array([0.64, 0.0], np.float32),
                                       np.array([[200, 100], [0, 0]], np.int32))
    np.testing.assert_allclose(out[0, 0], [20.0, 10.0, 60.0, 40.0], rtol=1e-6)
    assert out.dtype == np.float32 and np.all(out[1] == 0.0)


def _anchor_batch(seed=0, batch=4, anchors=50, classes=3):
    rng = np.random.default_rng(seed)
    cls = rng.choice([-2, -1, -1, -1, 0, 1, 2], size=(batch, anchors)).astype(np.int32)
    logits = rng.normal(0.0, 2.0, size=(batch, anchors, classes)).astype(np.float32)
    return cls, logits


def _reference(cls, logits, classes=3):
    prob = tf.sigmoid(logits).numpy()          # the same float32 probabilities the metric sees
    keep = cls != -2
    y = (cls[..., None] == np.arange(classes))[keep].ravel()
    p = prob[keep].ravel()
    recall = np.sum(y & (p >= 0.5)) / np.sum(y)
    f1 = []
    for t in np.linspace(0.0, 1.0, 21).astype(np.float32):
        tp, fp, fn = np.sum(y & (p >= t)), np.sum(~y & (p >= t)), np.sum(y & (p < t))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return recall, max(f1)


def _run_update(strategy, metrics, cls, logits):
    n = strategy.num_replicas_in_sync
    size = cls.shape[0] // n

    def values(ctx):
        lo = ctx.replica_id_in_sync_group * size
        return {"targets": {"cls": tf.constant(cls[lo:lo + size])}}, \
            {"cls_logits": tf.constant(logits[lo:lo + size])}

    batch, outputs = strategy.experimental_distribute_values_from_function(values)
    tf.function(lambda b, o: strategy.run(metrics.update, args=(b, o)))(batch, outputs)


@pytest.mark.parametrize("replicas", [1, 2])
def test_anchor_metrics_global_values(replicas, request):
    strategy = (request.getfixturevalue("two_replica_strategy") if replicas == 2
                else tf.distribute.get_strategy())
    with strategy.scope():
        metrics = AnchorMetrics(num_classes=3, sample_images=4)   # every image of the batch
    cls, logits = _anchor_batch()
    ref_recall, ref_f1 = _reference(cls, logits)
    assert 0.2 < ref_recall < 0.8 and 0.1 < ref_f1 < 0.9     # a non-trivial case
    for _ in range(2):   # reset between "epochs" gives the same values again
        with strategy.scope():
            metrics.reset()
        _run_update(strategy, metrics, cls, logits)
        with strategy.scope():
            got = metrics.results()
        assert got["anchor_recall"] == pytest.approx(ref_recall, abs=1e-6)
        assert got["anchor_best_f1"] == pytest.approx(ref_f1, abs=1e-6)


def test_anchor_metrics_sample_the_first_images_of_a_batch():
    metrics = AnchorMetrics(num_classes=3, sample_images=1)
    cls, logits = _anchor_batch()
    _run_update(tf.distribute.get_strategy(), metrics, cls, logits)
    ref_recall, ref_f1 = _reference(cls[:1], logits[:1])
    got = metrics.results()
    assert got["anchor_recall"] == pytest.approx(ref_recall, abs=1e-6)
    assert got["anchor_best_f1"] == pytest.approx(ref_f1, abs=1e-6)
