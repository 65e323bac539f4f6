"""Anchor best possible recall: a hand-computed case, brute force agreement, advice and fitting."""

import numpy as np
import pytest

from detector.config import load_config
from detector.targets.anchor_fit import advice, anchor_recall, best_anchor_iou, fit_anchors, recall_report
from detector.targets.anchors import generate_anchors


def test_hand_computed_recall():
    # image 64, level 5 only (stride 32, centres 16 and 48), one 32x32 anchor per location
    boxes = np.array([[0, 0, 32, 32],     # the anchor at (16, 16) itself: IoU 1
                      [0, 0, 16, 16],     # inside it: 256 / 1024 = 0.25
                      [8, 8, 40, 40],     # shifted by 8: 576 / (2048 - 576) = 0.3913
                      [0, 0, 32, 48]],    # 32 x 48 around it: 1024 / 1536 = 0.6667
                     np.float64)
    best = best_anchor_iou(boxes, 64, 5, 5, 1, (1.0,), 1.0)
    np.testing.assert_allclose(best, [1.0, 0.25, 576 / 1472, 1024 / 1536])
    r = recall_report(best, boxes, 0.5)
    assert r.recall == 0.5 and r.num_boxes == 4
    # areas 1024 (medium: 32**2 is not small), 256 (small), 1024, 1536 (medium)
    assert r.buckets["small"] == (1, 0.0)
    assert r.buckets["medium"] == (3, pytest.approx(2 / 3))
    assert r.buckets["large"] == (0, None)


def test_agrees_with_brute_force_over_generated_anchors():
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 256, (300, 2))
    hw = np.exp(rng.uniform(np.log(4), np.log(300), (300, 2)))
    boxes = np.concatenate([c - hw / 2, c + hw / 2], 1)
    for layout in [(3, 5, 3, (0.5, 1.0, 2.0), 4.0), (2, 6, 2, (0.7, 1.4), 3.0)]:
        fast = best_anchor_iou(boxes, 256, *layout)
        a = generate_anchors(256, *layout).astype(np.float64)
        ih = np.maximum(np.minimum(boxes[:, None, 2], a[None, :, 2]) - np.maximum(boxes[:, None, 0], a[None, :, 0]), 0)
        iw = np.maximum(np.minimum(boxes[:, None, 3], a[None, :, 3]) - np.maximum(boxes[:, None, 1], a[None, :, 1]), 0)
        inter = ih * iw
        area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        union = area_b[:, None] + ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[None] - inter
        np.testing.assert_allclose(fast, (inter / union).max(1), atol=1e-6)


def test_advice_names_the_settings_and_fit_improves_recall():
    cfg = load_config("smoke")    # 128 px, levels 3..5, anchor_size 4: 32..64 px anchors
    tiny = np.array([[10, 10, 16, 16], [40, 40, 47, 45], [70, 20, 78, 29]], np.float64)
    report = anchor_recall(tiny, cfg)
    assert report.recall == 0.0
    text = advice(report, cfg)
    assert "model.anchors.anchor_size" in text and "model.min_level" in text and "--fit-anchors" in text
    assert "force_match is on: each of those boxes still trains its 1 best anchor" in text
    assert "force_match" not in advice(report, load_config("smoke", ["matching.force_match=false"]))
    best = fit_anchors(tiny, 128, 0.5)[0]
    assert best.recall == 1.0 and best.min_level == 2
    assert f"model.min_level={best.min_level}" in best.overrides()
    assert advice(anchor_recall(np.array([[0, 0, 40, 40]], float), cfg), cfg) is None
