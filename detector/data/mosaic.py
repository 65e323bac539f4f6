"""Batch mosaic (``data.augment.mosaic``): four augmented training images in one, batched TF ops.

Runs on a group of ``B`` per-image training elements, already augmented and letterboxed
by either backend (before target assignment), with no Python in the loop.  Output ``i``
is, with probability ``augment.mosaic``, a mosaic of elements ``i, i+1, i+2, i+3``
(indices mod ``B``) of the group, otherwise element ``i`` unchanged:

1. the four ``S x S`` images tile a ``2S x 2S`` canvas (``i`` top left, ``i+1`` top
   right, ``i+2`` bottom left, ``i+3`` bottom right), their boxes shifted with them;
2. a square window of side ``c = S * U(augment.mosaic_window)`` (``1 <= c/S <= 2``)
   that contains the canvas centre (so all four images show) is cut out and resized to
   ``S x S`` (bilinear): objects shrink by ``S / c``;
3. boxes are clipped to the window; those keeping less than ``augment.min_visibility`` of
   their area are dropped; the first ``data.max_boxes`` kept (quadrant order) are kept.

Each image of the group appears in up to four outputs (at different places and sizes), so
the mosaic costs one resize per mosaic output and no extra decoding or augmentation.  The
randomness is drawn from the group's first element's seed (``aug_seed``), so a seeded
stream stays reproducible.

Element fields (``M = data.max_boxes``): ``image`` uint8 ``[B,S,S,3]``, ``boxes`` float32
``[B,M,4]`` yxyx network pixels, ``classes`` int32 ``[B,M]`` (-1 pad), ``is_crowd`` bool,
``depth`` float32 (-1 unknown; divided by the zoom ``S / c`` when ``rescale_depth``),
``area`` float64 (times the share of the box kept), ``boxes_xywh`` float64 (the source
image's, unchanged), ``num_boxes`` int32 ``[B]``, ``aug_seed`` int64 ``[B]``; other fields
(``scale``, ``original_size``, ``image_id``, ...) are element ``i``'s.
"""

from __future__ import annotations

import tensorflow as tf

_BOX_FIELDS = {"boxes": 0.0, "boxes_xywh": 0.0, "classes": -1, "is_crowd": False, "area": 0.0, "depth": -1.0}


def mosaic_window(y0: tf.Tensor, x0: tf.Tensor, side: tf.Tensor, canvas: int, size: int) -> tf.Tensor:
    """``tf.image.crop_and_resize`` boxes ``[B, 4]`` that map the pixel-edge window
    ``[y0, y0 + side] x [x0, x0 + side]`` of a ``canvas``-square image onto ``size x size``
    exactly (output pixel centre ``r + 0.5`` samples input ``y0 + (r + 0.5) * side / size``)."""
    step = side / size
    a_y, a_x = y0 + 0.5 * step - 0.5, x0 + 0.5 * step - 0.5
    span = (size - 1) * step
    return tf.stack([a_y, a_x, a_y + span, a_x + span], 1) / (canvas - 1)


def mosaic_batch(e: dict, probability: float, window: tuple[float, float], min_visibility: float,
                 rescale_depth: bool) -> dict:
    """The group ``e`` (batched element fields, see the module docstring) with mosaics."""
    img = e["image"]
    b = tf.shape(img)[0]
    s = int(img.shape[1])
    m = int(e["boxes"].shape[1])
    seed = tf.stack([e["aug_seed"][0], tf.constant(0x6D6F73, tf.int64)])
    u = tf.random.stateless_uniform([b, 4], seed=seed, dtype=tf.float32)
    use = u[:, 0] < probability
    side = s * (window[0] + u[:, 1] * (window[1] - window[0]))             # [B] canvas px
    lo, hi = tf.maximum(0.0, s - side), tf.minimum(float(s), 2.0 * s - side)
    y0, x0 = lo + u[:, 2] * (hi - lo), lo + u[:, 3] * (hi - lo)

    # Only the outputs that become mosaics are computed (their pixels are most of the cost),
    # then scattered over the group; the others keep their element as it is.
    mixed = tf.cast(tf.where(use)[:, 0], tf.int32)                                       # [N]
    y0, x0, side = (tf.gather(v, mixed) for v in (y0, x0, side))                          # [N]

    def tile(x, q):   # element (i + q) mod B of every mosaic output i
        return tf.gather(x, (mixed + q) % b)

    canvas = tf.concat([tf.concat([tile(img, 0), tile(img, 1)], 2),
                        tf.concat([tile(img, 2), tile(img, 3)], 2)], 1)                  # [N, 2S, 2S, 3]
    pixels = tf.image.crop_and_resize(canvas, mosaic_window(y0, x0, side, 2 * s, s),   # uint8 in, float32 out
                                      tf.range(tf.size(mixed)), [s, s])
    pixels = tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)

    # Boxes of the four quadrants: [N, 4M, 4] canvas px, and which are real.
    slots = tf.range(m)[None]
    fields = {k: tf.concat([tile(e[k], q) for q in range(4)], 1) for k in _BOX_FIELDS}
    offsets = tf.constant([[0, 0], [0, s], [s, 0], [s, s]], tf.float32)                 # (dy, dx)
    shift = tf.repeat(tf.tile(offsets, [1, 2]), m, axis=0)[None]                          # [1, 4M, 4]
    valid = tf.concat([slots < tile(e["num_boxes"], q)[:, None] for q in range(4)], 1)  # [N, 4M]
    zoom = s / side                                                                       # [N]
    corner = tf.stack([y0, x0, y0, x0], 1)[:, None]
    raw = (fields["boxes"] + shift - corner) * zoom[:, None, None]
    clipped = tf.clip_by_value(raw, 0.0, float(s))
    area_raw = (raw[..., 2] - raw[..., 0]) * (raw[..., 3] - raw[..., 1])
    area_new = tf.maximum(clipped[..., 2] - clipped[..., 0], 0.0) * tf.maximum(clipped[..., 3] - clipped[..., 1], 0.0)
    keep = valid & (area_new > 0) & (area_new >= min_visibility * area_raw)
    fields["boxes"] = clipped
    fields["area"] = fields["area"] * tf.cast(tf.math.divide_no_nan(area_new, area_raw), tf.float64)
    if rescale_depth:
        d = fields["depth"]
        fields["depth"] = tf.where(d > 0, d / zoom[:, None], d)

    # The first M kept boxes of each mosaic, padded; scattered over the group.
    order = tf.argsort(tf.cast(tf.logical_not(keep), tf.int32), axis=1, stable=True)[:, :m]
    num = tf.minimum(tf.reduce_sum(tf.cast(keep, tf.int32), 1), m)
    present = slots < num[:, None]
    at = mixed[:, None]
    out = dict(e)
    for k, pad in _BOX_FIELDS.items():
        g = tf.gather(fields[k], order, batch_dims=1)
        mask = present[..., None] if g.shape.rank == 3 else present
        out[k] = tf.tensor_scatter_nd_update(e[k], at, tf.where(mask, g, tf.cast(pad, g.dtype)))
    out["image"] = tf.tensor_scatter_nd_update(img, at, pixels)
    out["num_boxes"] = tf.tensor_scatter_nd_update(e["num_boxes"], at, num)
    return out
