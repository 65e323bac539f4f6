"""Matching: IoU, thresholds, ignore band, crowd, force match, empty ground truth."""

import numpy as np

from detector.config import MatchingConfig
from detector.targets import box_coder
from detector.targets.assign import assign_targets, iou

CFG = MatchingConfig(positive_iou=0.5, negative_iou=0.4, force_match=True)


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 5]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10]], np.float32)
    m = iou(a, b).numpy()
    np.testing.assert_allclose(m[0], [25 / 175, 1.0], rtol=1e-6)
    np.testing.assert_allclose(m[1], [0.0, 0.0])  # degenerate box -> 0, not NaN


def _anchors():
    return np.array([
        [0, 0, 10, 10],     # 0: IoU 1.0 with gt0
        [0, 2, 10, 12],     # 1: IoU 8/12 = 0.667 with gt0 -> positive
        [0, 4, 10, 14],     # 2: IoU 6/14 = 0.4286 -> ignore band
        [0, 6, 10, 16],     # 3: IoU 4/16 = 0.25 -> negative
        [50, 50, 60, 60],   # 4: far away -> negative, but best for tiny gt1 -> forced
        [100, 100, 110, 110],  # 5: overlaps the crowd box -> ignore
    ], np.float32)


def test_labels_and_codes():
    gt = np.array([[0, 0, 10, 10], [54, 54, 56, 56], [100, 100, 110, 110]], np.float32)
    t = assign_targets(_anchors(), gt, np.array([3, 1, 2], np.int32), np.array([False, False, True]),
                       np.array([5.0, -1.0, 7.0], np.float32), CFG, (10, 10, 5, 5))
    np.testing.assert_array_equal(t["cls"].numpy(), [3, 3, -2, -1, 1, -2])
    expected = box_coder.encode(gt[[0, 0]], _anchors()[[0, 1]], (10, 10, 5, 5)).numpy()
    np.testing.assert_allclose(t["box"].numpy()[:2], expected, atol=1e-6)
    assert np.all(t["box"].numpy()[2:4] == 0)
    # depth: log(5) for the two anchors of gt0, the forced tiny box has no depth label
    np.testing.assert_allclose(t["depth"].numpy(), [np.log(5), np.log(5), 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(t["depth_mask"].numpy(), [1, 1, 0, 0, 0, 0])


def test_no_force_match_leaves_tiny_box_unmatched():
    gt = np.array([[54, 54, 56, 56]], np.float32)
    cfg = MatchingConfig(positive_iou=0.5, negative_iou=0.4, force_match=False)
    t = assign_targets(_anchors(), gt, np.array([1]), np.array([False]), np.array([3.0]), cfg)
    np.testing.assert_array_equal(t["cls"].numpy(), [-1] * 6)


def test_empty_and_padded_ground_truth():
    t = assign_targets(_anchors(), np.zeros([0, 4], np.float32), np.zeros([0], np.int32),
                       np.zeros([0], bool), np.zeros([0], np.float32), CFG)
    np.testing.assert_array_equal(t["cls"].numpy(), [-1] * 6)
    pad = assign_targets(_anchors(), np.zeros([3, 4], np.float32), -np.ones([3], np.int32),
                         np.zeros([3], bool), np.zeros([3], np.float32), CFG)
    np.testing.assert_array_equal(pad["cls"].numpy(), [-1] * 6)
    assert float(np.abs(pad["box"].numpy()).sum()) == 0.0


def test_shared_best_anchor_goes_to_later_box():
    anchors = np.array([[0, 0, 100, 100], [200, 200, 210, 210]], np.float32)
    gt = np.array([[0, 0, 5, 5], [90, 90, 95, 95]], np.float32)   # both tiny, same best anchor 0
    t = assign_targets(anchors, gt, np.array([0, 1]), np.array([False, False]),
                       np.array([1.0, 2.0], np.float32), CFG)
    assert t["cls"].numpy()[0] == 1
    np.testing.assert_allclose(t["depth"].numpy()[0], np.log(2.0), rtol=1e-6)


def test_force_match_top_k_claims_more_anchors_for_small_boxes_only():
    # Box [50,50,58,58] has IoU 0.64 with anchor 4 (positive by IoU), 0.444 with anchor 6
    # (ignore band), 0.209 with anchor 7 and 0.0016 with anchor 8; gt0 = anchor 0 exactly.
    anchors = np.concatenate([_anchors(), np.array([[48, 48, 60, 60], [52, 52, 64, 64],
                                                    [0, 0, 200, 200]], np.float32)])
    gt = np.array([[0, 0, 10, 10], [50, 50, 58, 58]], np.float32)
    ious = iou(anchors, gt).numpy()[:, 1]
    order = np.argsort(-ious, kind="stable")
    for k, n_small in ((1, 1), (2, 2), (3, 3)):
        cfg = MatchingConfig(positive_iou=0.5, negative_iou=0.4, force_match=True, force_match_top_k=k)
        t = assign_targets(anchors, gt, np.array([3, 1]), np.array([False, False]),
                           np.array([5.0, 2.0], np.float32), cfg)
        cls = t["cls"].numpy()
        assert sorted(np.flatnonzero(cls == 1)) == sorted(order[:n_small])
        # gt0's positives are unchanged: anchor 0 and 1 (IoU >= 0.5), never stolen
        np.testing.assert_array_equal(cls[:2], [3, 3])
    # an extra claim never overrides an IoU positive of another box
    cfg = MatchingConfig(positive_iou=0.5, negative_iou=0.4, force_match=True, force_match_top_k=9)
    t = assign_targets(anchors, gt, np.array([3, 1]), np.array([False, False]),
                       np.array([5.0, 2.0], np.float32), cfg)
    cls = t["cls"].numpy()
    np.testing.assert_array_equal(cls[:2], [3, 3])
    assert set(np.flatnonzero(cls == 1)) == set(np.flatnonzero(ious > 0)) - {0, 1}


def _numpy_atss(anchors, gt, level_sizes, k):
    """Reference ATSS, box by box: (labels with 0 = positive / -1, match)."""
    n = len(anchors)
    a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2
    overlaps = iou(anchors, gt).numpy()
    best = np.full(n, -1.0)
    match = np.zeros(n, int)
    for j, box in enumerate(gt):
        dist = np.linalg.norm(a_ctr - (box[:2] + box[2:]) / 2, axis=1)
        cand, start = [], 0
        for size in level_sizes:
            cand += list(start + np.argsort(dist[start:start + size], kind="stable")[:k])
            start += size
        cand = np.array(cand)
        thr = overlaps[cand, j].mean() + overlaps[cand, j].std()
        for i in cand:
            inside = box[0] < a_ctr[i, 0] < box[2] and box[1] < a_ctr[i, 1] < box[3]
            if inside and overlaps[i, j] >= thr and overlaps[i, j] > 0 and overlaps[i, j] > best[i]:
                best[i], match[i] = overlaps[i, j], j
    return np.where(best > 0, 0, -1), match


def test_atss_matches_a_numpy_reference():
    from detector.targets.anchors import generate_anchors

    anchors = generate_anchors(64, 3, 4, 2, [1.0], 3.0)             # 8x8x2 + 4x4x2 anchors
    level_sizes = [128, 32]
    rng = np.random.default_rng(0)
    cfg = MatchingConfig(method="atss", atss_top_k=5, force_match=False)
    for _ in range(5):
        yx = rng.uniform(0, 48, (4, 2))
        gt = np.concatenate([yx, yx + rng.uniform(3, 30, (4, 2))], 1).astype(np.float32)
        t = assign_targets(anchors, gt, np.arange(4, dtype=np.int32), np.zeros(4, bool), np.full(4, 2.0),
                           cfg, level_sizes=level_sizes)
        labels, match = _numpy_atss(anchors, gt, level_sizes, 5)
        cls = t["cls"].numpy()
        np.testing.assert_array_equal(cls >= 0, labels == 0)
        np.testing.assert_array_equal(cls[cls >= 0], match[labels == 0])      # class id = box index here
        assert set(np.unique(cls)) <= {-1, 0, 1, 2, 3}                        # no ignore band


def test_atss_gives_a_small_box_positives_without_force_match():
    from detector.targets.anchors import generate_anchors

    anchors = generate_anchors(64, 3, 4, 1, [1.0], 4.0)             # 32 px anchors at stride 8
    gt = np.array([[20, 20, 31, 31]], np.float32)                   # 11 px: IoU < 0.15 with any anchor
    iou_cfg = MatchingConfig(force_match=False)
    t = assign_targets(anchors, gt, np.array([2]), np.array([False]), np.array([1.0]), iou_cfg)
    assert not (t["cls"].numpy() >= 0).any()
    atss = MatchingConfig(method="atss", force_match=False)
    t = assign_targets(anchors, gt, np.array([2]), np.array([False]), np.array([1.0]), atss,
                       level_sizes=[64, 16])
    positive = t["cls"].numpy() == 2
    assert positive.sum() >= 1
    ctr = (anchors[positive, :2] + anchors[positive, 2:]) / 2
    assert ((ctr > gt[0, :2]) & (ctr < gt[0, 2:])).all()


def _numpy_assign(anchors, gt, classes, crowd, depth, cfg, factors):
    """Reference IoU matching, anchor by anchor and box by box: the targets dict as numpy."""
    n = len(anchors)
    overlaps = iou(anchors, gt).numpy() if len(gt) else np.zeros([n, 0])
    regular = (classes >= 0) & ~crowd
    reg = np.where(regular[None, :], overlaps, -1.0)
    best = reg.max(1, initial=-1.0)
    match = reg.argmax(1) if len(gt) else np.zeros(n, int)
    labels = np.where(best >= cfg.positive_iou, 0, -1)
    labels[(labels == -1) & (best >= cfg.negative_iou)] = -2
    crowd_iou = np.where((crowd & (classes >= 0))[None, :], overlaps, 0.0).max(1, initial=0.0)
    labels[(labels == -1) & (crowd_iou >= cfg.negative_iou)] = -2
    for ranks in ([1, cfg.force_match_top_k], [0, 1]) if cfg.force_match else ():
        owner = np.full(n, -1)
        for j in np.flatnonzero(regular):
            for i in np.argsort(-reg[:, j], kind="stable")[ranks[0]:ranks[1]]:
                if reg[i, j] > 0:
                    owner[i] = max(owner[i], j)
        claimed = (owner >= 0) & ((labels != 0) if ranks[0] else True)
        match[claimed], labels[claimed] = owner[claimed], 0
    pos = labels == 0
    cls = np.where(pos, classes[match] if len(gt) else 0, labels)
    box = np.zeros([n, 4], np.float32)
    if pos.any():
        box[pos] = box_coder.encode(gt[match[pos]], anchors[pos], factors).numpy()
    d = depth[match] if len(gt) else np.zeros(n)
    has = pos & (d > 0)
    return {"cls": cls, "box": box, "depth": np.where(has, np.log(np.maximum(d, 1e-6)), 0.0), "depth_mask": has}


def test_iou_matching_equals_a_numpy_reference_on_random_images():
    from detector.targets.anchors import generate_anchors
    from detector.targets.assign import prepare_anchors

    anchors = generate_anchors(96, 3, 5, 3, [0.5, 1.0, 2.0], 4.0)
    prepared = prepare_anchors(anchors)
    rng = np.random.default_rng(3)
    for trial in range(40):
        m = int(rng.integers(0, 9))
        yx = rng.uniform(-4, 90, (m, 2))
        gt = np.concatenate([yx, yx + rng.uniform(1, 60, (m, 2))], 1).astype(np.float32)
        if m > 2:
            gt[2] = gt[1]                                    # duplicate boxes compete for anchors
        classes = rng.integers(0, 4, m).astype(np.int32)
        classes[rng.random(m) < 0.1] = -1                    # padding rows
        crowd = rng.random(m) < 0.15
        depth = rng.uniform(-2, 30, m).astype(np.float32)
        cfg = MatchingConfig(positive_iou=0.5, negative_iou=0.4, force_match=trial % 4 != 0,
                             force_match_top_k=1 + trial % 3)
        ref = _numpy_assign(anchors, gt, classes, crowd, depth, cfg, (10, 10, 5, 5))
        for a in (anchors, prepared):
            t = assign_targets(a, gt, classes, crowd, depth, cfg, (10, 10, 5, 5))
            np.testing.assert_array_equal(t["cls"].numpy(), ref["cls"], err_msg=f"trial {trial}")
            np.testing.assert_allclose(t["box"].numpy(), ref["box"], atol=1e-5)
            np.testing.assert_allclose(t["depth"].numpy(), ref["depth"], atol=1e-6)
            np.testing.assert_array_equal(t["depth_mask"].numpy(), ref["depth_mask"])
