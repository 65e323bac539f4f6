"""decode_detections against a numpy reference (top-k, decode, clip, greedy NMS)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from detector.config import EvalConfig
from detector.model import decode_detections
from detector.model.postprocess import infer_image_size, merge_candidates, select_detections, top_candidates
from detector.targets.anchors import generate_anchors

SIZE = 64
SCALES = (10.0, 10.0, 5.0, 5.0)
ANCHORS = generate_anchors(SIZE, 3, 4, 2, (0.5, 1.0, 2.0), 4.0)  # 64*6 + 16*6 = 480 anchors


def _np_decode(codes, anchors):
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    yca, xca = anchors[:, 0] + ha / 2, anchors[:, 1] + wa / 2
    ty, tx, th, tw = (codes[:, i] / SCALES[i] for i in range(4))
    clip = np.log(1000 / 16)
    h, w = np.exp(np.minimum(th, clip)) * ha, np.exp(np.minimum(tw, clip)) * wa
    yc, xc = ty * ha + yca, tx * wa + xca
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)


def _np_iou(box, boxes):
    ih = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iw = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ih * iw
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def _np_greedy_nms(boxes, scores, iou_thr):
    """Indices kept by greedy NMS, in descending score order."""
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        i = order.pop(0)
        keep.append(i)
        if order:
            ious = _np_iou(boxes[i], boxes[order])
            order = [j for j, v in zip(order, ious) if v <= iou_thr]
    return keep


def _np_vote(kept_box, boxes, scores, vote_iou):
    """Box voting: the score-weighted mean of the candidates overlapping the kept box."""
    w = np.where(_np_iou(kept_box, boxes) >= vote_iou, scores, 0.0)
    return (w[:, None] * boxes).sum(0) / w.sum()


def _np_reference(outputs, cfg):
    res = {"boxes": [], "scores": [], "classes": [], "depth": [], "num_detections": []}
    d = cfg.max_detections
    for b in range(outputs["cls_logits"].shape[0]):
        logits = outputs["cls_logits"][b].astype(np.float64)
        num_classes = logits.shape[1]
        flat = (1 / (1 + np.exp(-logits))).reshape(-1)
        top = np.argsort(-flat, kind="stable")[: cfg.pre_nms_top_k]
        top = top[flat[top] > cfg.score_threshold]
        anchor, cls, score = top // num_classes, top % num_classes, flat[top]
        boxes = np.clip(_np_decode(outputs["box"][b][anchor].astype(np.float64), ANCHORS[anchor]), 0, SIZE)
        if cfg.class_agnostic_nms:
            kept = _np_greedy_nms(boxes, score, cfg.nms_iou)
        else:
            kept = [i for c in range(num_classes) for i in
                    np.flatnonzero(cls == c)[_np_greedy_nms(boxes[cls == c], score[cls == c], cfg.nms_iou)]]
            kept = sorted(kept, key=lambda i: -score[i])
        kept = kept[:d]
        n, pad = len(kept), d - len(kept)
        kept_boxes = boxes[kept]
        if cfg.box_voting_iou is not None:   # candidates of the kept box's class
            kept_boxes = np.array([_np_vote(boxes[i], boxes[cls == cls[i]], score[cls == cls[i]], cfg.box_voting_iou)
                                   for i in kept]).reshape(-1, 4)
        res["boxes"].append(np.concatenate([kept_boxes, np.zeros((pad, 4))]))
        res["scores"].append(np.concatenate([score[kept], np.zeros(pad)]))
        res["classes"].append(np.concatenate([cls[kept], -np.ones(pad, int)]))
        depth = outputs["depth"][b]
        log_depth = depth[anchor[kept], cls[kept]] if depth.ndim == 2 else depth[anchor[kept]]
        res["depth"].append(np.concatenate([np.exp(log_depth), np.zeros(pad)]))
        res["num_detections"].append(n)
    return {k: np.array(v) for k, v in res.items()}


def _outputs(seed, b=3, c=4, depth_per_class=False):
    rng = np.random.default_rng(seed)
    n = ANCHORS.shape[0]
    return {"cls_logits": (rng.normal(-1.0, 1.5, (b, n, c))).astype(np.float32),
            "box": (rng.normal(size=(b, n, 4)) * 1.5).astype(np.float32),
            "depth": rng.normal(2.0, 0.7, (b, n, c) if depth_per_class else (b, n)).astype(np.float32)}


@pytest.mark.parametrize("seed,agnostic,depth_per_class", [(0, False, False), (1, False, True), (2, True, False),
                                                           (3, True, True)])
def test_matches_numpy_reference(seed, agnostic, depth_per_class):
    cfg = EvalConfig(score_threshold=0.05, pre_nms_top_k=300, nms_iou=0.5, max_detections=40,
                     class_agnostic_nms=agnostic)
    outputs = _outputs(seed, depth_per_class=depth_per_class)
    got = {k: v.numpy() for k, v in decode_detections(outputs, ANCHORS, cfg, SCALES).items()}
    ref = _np_reference(outputs, cfg)
    np.testing.assert_array_equal(got["num_detections"], ref["num_detections"])
    assert (ref["num_detections"] > 5).all()  # the comparison is not vacuous
    np.testing.assert_array_equal(got["classes"], ref["classes"])
    np.testing.assert_allclose(got["scores"], ref["scores"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["boxes"], ref["boxes"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["depth"], ref["depth"], rtol=1e-5)


def test_padding_threshold_and_static_shapes():
    cfg = EvalConfig(score_threshold=0.6, pre_nms_top_k=200, max_detections=100)
    outputs = _outputs(4, b=2)
    outputs["cls_logits"][1] = -20.0  # second image: nothing above threshold
    fn = tf.function(lambda o: decode_detections(o, ANCHORS, cfg, SCALES), input_signature=[{
        "cls_logits": tf.TensorSpec([None, ANCHORS.shape[0], 4]), "box": tf.TensorSpec([None, ANCHORS.shape[0], 4]),
        "depth": tf.TensorSpec([None, ANCHORS.shape[0]])}])
    got = {k: v.numpy() for k, v in fn(outputs).items()}
    assert got["boxes"].shape == (2, 100, 4) and got["classes"].shape == (2, 100)
    n = got["num_detections"]
    assert 0 < n[0] < 100 and n[1] == 0
    assert (got["scores"][0, : n[0]] > 0.6).all() and np.all(np.diff(got["scores"][0, : n[0]]) <= 0)
    assert (got["classes"][0, n[0]:] == -1).all() and (got["classes"][1] == -1).all()
    assert (got["scores"][0, n[0]:] == 0).all() and (got["depth"][1] == 0).all() and (got["boxes"][1] == 0).all()
    # boxes are clipped to the image
    assert got["boxes"].min() >= 0 and got["boxes"].max() <= SIZE


def test_fewer_candidates_than_max_detections():
    cfg = dataclasses.replace(EvalConfig(), pre_nms_top_k=1000, max_detections=100, score_threshold=0.0)
    anchors = ANCHORS[:10]
    rng = np.random.default_rng(5)
    outputs = {"cls_logits": rng.normal(size=(1, 10, 2)).astype(np.float32),
               "box": np.zeros((1, 10, 4), np.float32), "depth": np.zeros((1, 10), np.float32)}
    got = decode_detections(outputs, anchors, cfg, SCALES, image_size=SIZE)
    assert got["boxes"].shape == (1, 100, 4)
    assert int(got["num_detections"][0]) <= 20
    np.testing.assert_allclose(got["depth"].numpy()[0, : int(got["num_detections"][0])], 1.0)


def test_image_size_inferred_from_anchors():
    assert infer_image_size(ANCHORS) == SIZE
    assert infer_image_size(tf.constant(ANCHORS)) == SIZE
    assert infer_image_size(generate_anchors(256, 3, 7, 3, (0.5, 1.0, 2.0), 4.0)) == 256


@pytest.mark.parametrize("seed,agnostic,vote_iou", [(6, False, 0.7), (7, True, 0.5)])
def test_box_voting_matches_numpy_reference(seed, agnostic, vote_iou):
    cfg = EvalConfig(score_threshold=0.05, pre_nms_top_k=300, nms_iou=0.5, max_detections=40,
                     class_agnostic_nms=agnostic, box_voting_iou=vote_iou)
    outputs = _outputs(seed)
    got = {k: v.numpy() for k, v in decode_detections(outputs, ANCHORS, cfg, SCALES).items()}
    ref = _np_reference(outputs, cfg)
    np.testing.assert_array_equal(got["num_detections"], ref["num_detections"])
    np.testing.assert_array_equal(got["classes"], ref["classes"])
    np.testing.assert_allclose(got["scores"], ref["scores"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["boxes"], ref["boxes"], rtol=1e-4, atol=1e-3)
    # voting moved boxes (the comparison is not the plain NMS one)
    plain = decode_detections(outputs, ANCHORS, dataclasses.replace(cfg, box_voting_iou=None), SCALES)
    assert np.abs(plain["boxes"].numpy() - got["boxes"]).max() > 0.5


def test_merged_candidates_are_one_decode_over_the_joined_anchors():
    """Candidates of two passes (every (anchor, class) pair kept: pre_nms_top_k >= N x C), the
    second at twice the input side and its boxes halved into the first's frame, give the
    detections of one decode over both passes' outputs with the second pass's anchors halved
    (box codes are relative to their anchor)."""
    big = generate_anchors(2 * SIZE, 3, 4, 2, (0.5, 1.0, 2.0), 4.0)
    cfg = EvalConfig(score_threshold=0.05, pre_nms_top_k=10_000, nms_iou=0.5, max_detections=60, box_voting_iou=0.6)
    a, b = _outputs(8, b=2), _outputs(9, b=2)
    b = {k: np.concatenate([v, v[:, :len(big) - len(ANCHORS)]], axis=1) for k, v in b.items()}   # N of big
    cand_a = top_candidates(a, ANCHORS, cfg, SCALES, SIZE)
    cand_b = top_candidates(b, big, cfg, SCALES, 2 * SIZE)
    cand_b = {**cand_b, "boxes": cand_b["boxes"] * 0.5}
    got = {k: v.numpy() for k, v in select_detections(merge_candidates([cand_a, cand_b]), cfg, SIZE).items()}
    joined = {k: np.concatenate([a[k], b[k]], axis=1) for k in a}
    want = {k: v.numpy() for k, v in decode_detections(joined, np.concatenate([ANCHORS, big * 0.5]), cfg, SCALES,
                                                         image_size=SIZE).items()}
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    np.testing.assert_allclose(got["boxes"], want["boxes"], rtol=1e-5, atol=1e-4)
    assert (got["num_detections"] > 20).all()
