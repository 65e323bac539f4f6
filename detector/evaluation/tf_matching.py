"""pycocotools' per-image matching for one padded batch, in TensorFlow (static shapes, XLA-able).

Same semantics as :mod:`detector.evaluation.matching` (docs/coco_eval.md §2,
§4.3): float64 ``bbIou`` in maskApi's operation order, stable (-score, slot) order,
per-(image, class) ``maxDets[-1]`` truncation, greedy matching with the closed-form
GT choice (regular GT first, largest IoU, ties to the later GT slot; crowd GT reusable).

Shapes: B images, M GT slots, D detection slots, K classes, T = 10 IoU thresholds,
A = 4 area ranges.  Class index 0..K-1, -1 = padding (no background slot).  Boxes are
``[x, y, w, h]`` in original-image pixels.  The (t, a) outcome of a detection is packed
into bit ``t * A + a`` of an int64.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detector.evaluation.params import AREA_RNG, IOU_THRS_EFF, MAX_DETS, NUM_AREA, NUM_IOU

NUM_BITS = NUM_IOU * NUM_AREA          # 40 bits used of the int64
_SLOT_BITS = 9                         # GT slot index bits in the matching key (M <= 511)
_HALF_BITS = np.float64(0.5).view(np.int64)
_BIT_WEIGHTS = (np.int64(1) << np.arange(NUM_BITS, dtype=np.int64)).reshape(NUM_IOU, NUM_AREA)


def bbox_iou(det_xywh: tf.Tensor, gt_xywh: tf.Tensor, gt_crowd: tf.Tensor) -> tf.Tensor:
    """maskApi ``bbIou``: float64 [B, D, 4], float64 [B, M, 4], bool [B, M] -> float64 [B, D, M]."""
    d = det_xywh[:, :, None, :]
    g = gt_xywh[:, None, :, :]
    dx, dy, dw, dh = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    gx, gy, gw, gh = g[..., 0], g[..., 1], g[..., 2], g[..., 3]
    w = tf.minimum(dw + dx, gw + gx) - tf.maximum(dx, gx)
    h = tf.minimum(dh + dy, gh + gy) - tf.maximum(dy, gy)
    # XLA's CPU backend contracts a*b + c into an FMA (1 rounding instead of 2), which
    # changed ~10% of IoUs by an ulp; multiply_no_nan (= where(y == 0, 0, x*y), same
    # value for finite inputs) puts a select between each product and its sum.
    inter = tf.math.multiply_no_nan(w, h)
    da = tf.math.multiply_no_nan(dw, dh)
    ga = tf.math.multiply_no_nan(gw, gh)
    union = tf.where(gt_crowd[:, None, :], da, (da + ga) - inter)
    overlap = (w > 0) & (h > 0)
    safe = tf.where(overlap, union, tf.ones_like(union))    # pycocotools never divides there
    return tf.where(overlap, inter / safe, tf.zeros_like(inter))


def _ranks(scores: tf.Tensor, classes: tf.Tensor, valid: tf.Tensor):
    """Stable (-score, slot) order within each image.

    Returns int32 [B, D] rank within (image, class) (counting valid detections),
    bool [B, D] keep (valid and rank < maxDets[-1]), and bool [B, D, D]
    ``before[b, i, j]``: valid detection j precedes detection i.
    """
    d = tf.shape(scores)[1]
    slot = tf.range(d)
    s_i, s_j = scores[:, :, None], scores[:, None, :]
    before = (s_j > s_i) | ((s_j == s_i) & (slot[None, None, :] < slot[None, :, None]))  # [B,i,j]
    before &= valid[:, None, :]
    same = classes[:, :, None] == classes[:, None, :]
    rank = tf.reduce_sum(tf.cast(before & same, tf.int32), axis=2)
    keep = valid & (rank < MAX_DETS[-1])
    return rank, keep, before


def match_batch(gt: dict, detections: dict, valid_images: tf.Tensor, num_classes: int) -> dict:
    """Match one batch; see the module docstring for shapes.

    Args:
      gt: ``boxes_xywh`` float64 [B,M,4], ``classes`` int32 [B,M], ``is_crowd`` bool [B,M],
        ``area`` float64 [B,M], ``num_boxes`` int32 [B] (``image_id`` is not used here).
      detections: ``boxes_xywh`` float32 [B,D,4], ``scores`` float32 [B,D], ``classes`` int32 [B,D].
      valid_images: bool [B]; invalid images contribute nothing.
      num_classes: K; classes outside 0..K-1 are treated as padding.

    Returns dict of ``keep`` bool [B,D] (detections to record), ``rank`` int32 [B,D]
    (within (image, class)), ``tp_bits`` / ``fp_bits`` int64 [B,D], ``npig`` int64 [K, A].
    """
    g_cls = tf.cast(gt["classes"], tf.int32)
    m = tf.shape(g_cls)[1]
    g_valid = ((g_cls >= 0) & (g_cls < num_classes) & valid_images[:, None]
               & (tf.range(m)[None, :] < tf.cast(gt["num_boxes"], tf.int32)[:, None]))
    g_crowd = tf.cast(gt["is_crowd"], tf.bool)
    g_area = tf.cast(gt["area"], tf.float64)
    lo, hi = tf.constant(AREA_RNG[:, 0]), tf.constant(AREA_RNG[:, 1])
    g_ig = g_crowd[:, None, :] | (g_area[:, None, :] < lo[None, :, None]) | (
        g_area[:, None, :] > hi[None, :, None])                                     # [B,A,M]
    npig = tf.math.unsorted_segment_sum(
        tf.cast(tf.reshape(tf.transpose(~g_ig & g_valid[:, None, :], [0, 2, 1]), [-1, NUM_AREA]), tf.int64),
        tf.reshape(tf.where(g_valid, g_cls, num_classes), [-1]), num_classes + 1)[:num_classes]

    d_cls = tf.cast(detections["classes"], tf.int32)
    d_valid = (d_cls >= 0) & (d_cls < num_classes) & valid_images[:, None]
    scores = tf.cast(detections["scores"], tf.float32)
    rank, keep, before = _ranks(scores, d_cls, d_valid)

    d_box = tf.cast(tf.cast(detections["boxes_xywh"], tf.float32), tf.float64)   # as loadRes sees them
    iou = bbox_iou(d_box, tf.cast(gt["boxes_xywh"], tf.float64), g_crowd)
    cand = (d_cls[:, :, None] == g_cls[:, None, :]) & g_valid[:, None, :] & keep[:, :, None]
    cand_iou = tf.where(cand, iou, tf.constant(-1.0, tf.float64))                     # [B,D,M]

    # only detections with some candidate (IoU >= 0.5) can match or change ``used``;
    # the loop visits just those, in (-score, slot) order
    active = keep & tf.reduce_any(cand_iou >= IOU_THRS_EFF.min(), axis=-1)
    order = tf.reduce_sum(tf.cast(before & active[:, None, :], tf.int32), axis=2)
    tp_bits, ig_bits = _greedy(cand_iou, order, active, g_crowd, g_ig)
    d_area = d_box[..., 2] * d_box[..., 3]
    d_out = (d_area[..., None] < lo) | (d_area[..., None] > hi)                       # [B,D,A]
    out_bits = tf.reduce_sum(tf.where(d_out, tf.constant(_BIT_WEIGHTS.sum(axis=0)), tf.constant(0, tf.int64)),
                             axis=-1)                                                # all t of area a
    all_bits = tf.constant((1 << NUM_BITS) - 1, tf.int64)
    fp_bits = tf.bitwise.bitwise_and(tf.bitwise.invert(tp_bits | ig_bits | out_bits), all_bits)
    zero = tf.zeros_like(tp_bits)
    return {"keep": keep, "rank": rank, "tp_bits": tf.where(keep, tp_bits, zero),
            "fp_bits": tf.where(keep, fp_bits, zero), "npig": npig}


def _pack(flags: tf.Tensor) -> tf.Tensor:
    """bool [..., T, A] -> int64 [...] with bit t*A + a."""
    return tf.reduce_sum(tf.where(flags, tf.constant(_BIT_WEIGHTS), tf.constant(0, tf.int64)), axis=[-2, -1])


def _greedy(cand_iou, order, active, g_crowd, g_ig):
    """Greedy matching in per-image (-score, slot) order of the ``active`` detections.

    One loop step handles the i-th active detection of every image; different classes
    never share a GT, so one per-image order equals pycocotools' per-(image, class) order.
    The GT choice (regular before ignored, then largest IoU, then largest slot) is one
    max over an int64 key: [1 bit regular][53 bits IoU][9 bits slot].  An IoU in
    [0.5, 2) is a positive float64 whose bit pattern minus that of 0.5 is below 2**53
    and ordered like the value (IoU can exceed 1 by a few ulps, e.g. crowd GT).
    Returns int64 [B, D] packed TP bits and packed "matched an ignored GT" bits, by slot.
    """
    b, d, m = tf.shape(cand_iou)[0], tf.shape(cand_iou)[1], tf.shape(cand_iou)[2]
    m_static = cand_iou.shape[2]
    if m_static is None or m_static >= 2 ** _SLOT_BITS:
        raise ValueError(f"COCO matching supports at most {2 ** _SLOT_BITS - 1} static GT slots, got {m_static}")
    # slot of the i-th active detection (inactive slots sort last)
    perm = tf.argsort(tf.where(active, order, d + tf.range(d)[None, :]), axis=1, stable=True)
    n_steps = tf.reduce_max(tf.reduce_sum(tf.cast(active, tf.int32), axis=1))
    thr = tf.constant(IOU_THRS_EFF)[None, :, None]                                     # [1,T,1]
    m_idx = tf.range(m, dtype=tf.int64)
    # slot ids that a pick consumes; crowd GT can be matched again (-2 never equals a pick)
    consumable = tf.where(g_crowd, tf.constant(-2, tf.int64), m_idx)[:, None, None, :]  # [B,1,1,M]
    regular_bit = tf.where(g_ig, tf.constant(0, tf.int64), tf.constant(1 << 62, tf.int64))  # [B,A,M]
    key_base = regular_bit + m_idx                                                     # [B,A,M]
    slots = tf.range(d)[None, :]

    def body(i, free, tp_sorted, ig_sorted):
        x = tf.gather(cand_iou, perm[:, i], axis=1, batch_dims=1)                     # [B,M]
        iou_key = tf.clip_by_value(tf.bitcast(x, tf.int64) - _HALF_BITS, 0, 2 ** 53 - 1)
        key = key_base + tf.bitwise.left_shift(iou_key, _SLOT_BITS)[:, None, :]       # [B,A,M]
        elig = (x[:, None, :] >= thr)[:, :, None, :] & free                           # [B,T,A,M]
        best = tf.reduce_max(tf.where(elig, key[:, None], tf.constant(-1, tf.int64)), axis=-1)  # [B,T,A]
        hit = best >= 0
        pick = tf.bitwise.bitwise_and(best, 2 ** _SLOT_BITS - 1)                  # no hit: 511 >= M
        taken = tf.equal(consumable, pick[..., None])
        regular = best >= (1 << 62)
        at_i = tf.equal(slots, i)
        tp_sorted = tf.where(at_i, _pack(regular)[:, None], tp_sorted)
        ig_sorted = tf.where(at_i, _pack(hit & ~regular)[:, None], ig_sorted)
        return i + 1, free & ~taken, tp_sorted, ig_sorted

    free0 = tf.ones(tf.stack([b, NUM_IOU, NUM_AREA, m]), tf.bool)
    zeros = tf.zeros(tf.stack([b, d]), tf.int64)
    _, _, tp_sorted, ig_sorted = tf.while_loop(
        lambda i, *_: i < n_steps, body, (tf.constant(0), free0, zeros, zeros),
        maximum_iterations=d)
    # back to slot order: active slot s was processed at step order[s]
    idx = tf.where(active, order, 0)
    zero = tf.zeros_like(tp_sorted)
    tp = tf.where(active, tf.gather(tp_sorted, idx, axis=1, batch_dims=1), zero)
    ig = tf.where(active, tf.gather(ig_sorted, idx, axis=1, batch_dims=1), zero)
    return tp, ig
