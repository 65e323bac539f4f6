"""Pure-TF decode + augmentation + letterbox (``data.augment.backend: tf`` or ``none``).

Runs entirely inside the tf.data graph (no Python), so it works where a
``tf.numpy_function`` cannot, e.g. input pipelines on TPU hosts.  Same chain and output
fields as :mod:`detector.data.augment` (see there), with stateless random ops seeded
per element:

1. horizontal flip (p = hflip);
2. box-safe random crop (p = crop_prob): a crop that contains the union of all boxes;
3. zoom: longer side -> ``S * U(scale)`` (bilinear);
4. colour: brightness/contrast ``x * alpha + beta * 255`` (alpha ~ 1 ± contrast, beta ~ ±
   brightness, as albumentations' ``RandomBrightnessContrast``), saturation ``1 ± hue_saturation``
   and hue ``± hue_saturation / 2`` of the colour circle, applied together as one affine map per
   pixel (saturation and hue as a scaling and rotation of the YIQ chroma plane: 5x cheaper than
   the HSV round trip, and the same kind of jitter);
5. random S x S crop when larger, pad bottom/right with 0 when smaller; boxes clipped,
   those keeping less than ``min_visibility`` of their area dropped.

``encoded`` may also be decoded uint8 ``[H, W, 3]`` pixels (``data.cache_images: decoded``,
EXIF already applied): then nothing is decoded.

Undecodable images (and images whose decoded size differs from the annotated one)
raise inside the graph; the pipeline drops them with ``ignore_errors`` (logged by TF at
each visit; not counted in :class:`PipelineStats`: that is the albumentations path).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detector.config import DataConfig


def decode(encoded: tf.Tensor, size: tf.Tensor | None = None) -> tf.Tensor:
    """uint8 ``[H, W, 3]`` RGB from JPEG/PNG/BMP/GIF bytes (format sniffed from the bytes).

    Grayscale, RGBA (alpha dropped) and CMYK JPEG give RGB.  A JPEG cut short at the
    end decodes as far as it goes (``try_recover_truncated``; no warning is possible in
    the graph).  EXIF orientation is NOT applied (TensorFlow cannot): the stored pixels
    are used.  With ``size`` (annotated h, w; zeros = unknown) a decoded size that
    differs raises, so the pipeline drops the image (its boxes would be wrong), e.g. a
    phone photo rotated 90 degrees by EXIF; use the albumentations backend for those.
    """
    img = tf.cond(tf.io.is_jpeg(encoded),
                  lambda: tf.io.decode_jpeg(encoded, channels=3, try_recover_truncated=True,
                                            acceptable_fraction=0.0),
                  lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    img.set_shape([None, None, 3])
    if size is not None:
        size = tf.cast(size, tf.int32)
        known = tf.reduce_all(size > 0)
        same = tf.reduce_all(tf.equal(tf.shape(img)[:2], size))
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_or(tf.logical_not(known), same),
                                                          ["decoded size differs from the annotated size",
                                                           tf.shape(img)[:2], size])]):
            img = tf.identity(img)
    return img


def pixels(image: tf.Tensor, size: tf.Tensor | None = None) -> tf.Tensor:
    """uint8 ``[H, W, 3]``: ``image`` itself when already decoded (uint8 pixels from
    ``data.cache_images: decoded``), else :func:`decode` of its bytes."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return image
    return decode(image, size)


def _clip_xyxy(boxes, h, w):
    b = tf.reshape(tf.cast(boxes, tf.float64), [-1, 4])
    x0 = tf.clip_by_value(b[:, 0], 0.0, w)
    y0 = tf.clip_by_value(b[:, 1], 0.0, h)
    x1 = tf.clip_by_value(b[:, 0] + b[:, 2], 0.0, w)
    y1 = tf.clip_by_value(b[:, 1] + b[:, 3], 0.0, h)
    return tf.stack([x0, y0, x1, y1], 1)


def _letterbox(img, size: int, scale, h, w):
    nh = tf.minimum(size, tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32)))
    nw = tf.minimum(size, tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32)))
    img = tf.image.resize(tf.cast(img, tf.float32), tf.stack([nh, nw]))
    return tf.image.pad_to_bounding_box(img, 0, 0, size, size), nh, nw


def _pack(image, xyxy, xywh, classes, crowd, area, depth, scale, hw, max_boxes: int, size: int):
    n = tf.minimum(tf.shape(xyxy)[0], max_boxes)
    pad = max_boxes - n

    def fit(x, value):
        x = x[:n]
        x = tf.pad(x, [[0, pad]] + [[0, 0]] * (len(x.shape) - 1), constant_values=value)
        return tf.ensure_shape(x, [max_boxes] + x.shape.as_list()[1:])

    out = {
        "ok": tf.constant(True),
        "image": tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8),
        "boxes": fit(tf.cast(tf.gather(xyxy, [1, 0, 3, 2], axis=1), tf.float32), 0.0),
        "boxes_xywh": fit(tf.cast(xywh, tf.float64), 0.0),
        "classes": fit(tf.cast(classes, tf.int32), -1),
        "is_crowd": fit(tf.cast(crowd, tf.bool), False),
        "area": fit(tf.cast(area, tf.float64), 0.0),
        "depth": fit(tf.cast(depth, tf.float32), -1.0),
        "num_boxes": n,
        "scale": tf.cast(scale, tf.float32),
        "original_size": tf.ensure_shape(tf.cast(hw, tf.int32), [2]),
    }
    out["image"] = tf.ensure_shape(out["image"], [size, size, 3])
    return out


def tf_eval(encoded: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor, crowd: tf.Tensor, area: tf.Tensor,
            depth: tf.Tensor, data_cfg: DataConfig, size: tf.Tensor | None = None) -> dict:
    """Letterbox only; every annotation kept as annotated (see augment.py)."""
    img = pixels(encoded, size)
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
    s = data_cfg.image_size / tf.maximum(hf, wf)
    boxes = tf.reshape(tf.cast(boxes, tf.float64), [-1, 4])
    # negative sizes, NaN/inf: converted sources only
    ok = (boxes[:, 2] >= 0) & (boxes[:, 3] >= 0) & tf.reduce_all(tf.math.is_finite(boxes), 1)
    boxes, classes, crowd, area, depth = (tf.boolean_mask(t, ok) for t in (boxes, classes, crowd, area, depth))
    out, _, _ = _letterbox(img, data_cfg.image_size, s, h, w)
    xyxy = _clip_xyxy(boxes, hf, wf) * s
    return _pack(out, xyxy, boxes, classes, crowd, area, depth, s, tf.stack([h, w]),
                 data_cfg.max_boxes, data_cfg.image_size)


def _uniform(seed, i, lo=0.0, hi=1.0):
    return tf.random.stateless_uniform([], seed=seed + tf.constant([0, 1], tf.int64) * i,
                                       minval=lo, maxval=hi, dtype=tf.float64)


def tf_train(encoded: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor, crowd: tf.Tensor, area: tf.Tensor,
             depth: tf.Tensor, seed: tf.Tensor, data_cfg: DataConfig, size: tf.Tensor | None = None) -> dict:
    """Augmented training example; ``seed`` int64 [2] makes it reproducible."""
    annotated_size = size
    a, size = data_cfg.augment, data_cfg.image_size
    seed = tf.cast(seed, tf.int64)
    img = pixels(encoded, annotated_size)
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
    xyxy = _clip_xyxy(boxes, hf, wf)
    finite = tf.reduce_all(tf.math.is_finite(tf.reshape(tf.cast(boxes, tf.float64), [-1, 4])), 1)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]) & finite
    xyxy, classes, crowd, area, depth = (tf.boolean_mask(t, keep) for t in (xyxy, classes, crowd, area, depth))
    base_area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    if a.hflip > 0:
        flip = _uniform(seed, 1) < a.hflip
        img = tf.cond(flip, lambda: tf.reverse(img, [1]), lambda: img)
        xyxy = tf.cond(flip, lambda: tf.stack([wf - xyxy[:, 2], xyxy[:, 1], wf - xyxy[:, 0], xyxy[:, 3]], 1),
                       lambda: xyxy)
    # Box-safe crop: corners drawn between the image border and the union of all boxes.
    n = tf.shape(xyxy)[0]
    do_crop = (_uniform(seed, 2) < a.crop_prob) & (n > 0)
    ux0 = tf.where(n > 0, tf.reduce_min(tf.concat([xyxy[:, 0], [wf]], 0)), 0.0)
    uy0 = tf.where(n > 0, tf.reduce_min(tf.concat([xyxy[:, 1], [hf]], 0)), 0.0)
    ux1 = tf.where(n > 0, tf.reduce_max(tf.concat([xyxy[:, 2], [0.0]], 0)), wf)
    uy1 = tf.where(n > 0, tf.reduce_max(tf.concat([xyxy[:, 3], [0.0]], 0)), hf)
    cx0 = tf.where(do_crop, tf.floor(_uniform(seed, 3) * ux0), 0.0)
    cy0 = tf.where(do_crop, tf.floor(_uniform(seed, 4) * uy0), 0.0)
    cx1 = tf.where(do_crop, tf.math.ceil(ux1 + _uniform(seed, 5) * (wf - ux1)), wf)
    cy1 = tf.where(do_crop, tf.math.ceil(uy1 + _uniform(seed, 6) * (hf - uy1)), hf)
    img = img[tf.cast(cy0, tf.int32):tf.cast(cy1, tf.int32), tf.cast(cx0, tf.int32):tf.cast(cx1, tf.int32)]
    xyxy = xyxy - tf.stack([cx0, cy0, cx0, cy0])[None]
    ch, cw = cy1 - cy0, cx1 - cx0
    # Zoom.
    s = size * _uniform(seed, 7, a.scale[0], a.scale[1]) / tf.maximum(ch, cw)
    nh = tf.maximum(1, tf.cast(tf.round(ch * s), tf.int32))
    nw = tf.maximum(1, tf.cast(tf.round(cw * s), tf.int32))
    img = tf.image.resize(tf.cast(img, tf.float32), tf.stack([nh, nw]))
    sx, sy = tf.cast(nw, tf.float64) / cw, tf.cast(nh, tf.float64) / ch
    xyxy = xyxy * tf.stack([sx, sy, sx, sy])[None]
    img = _colour(img, seed, a)
    # Random S x S window (only where larger), then pad bottom/right with 0.
    oy = tf.cast(tf.floor(_uniform(seed, 8) * tf.cast(tf.maximum(nh - size, 0) + 1, tf.float64)), tf.int32)
    ox = tf.cast(tf.floor(_uniform(seed, 9) * tf.cast(tf.maximum(nw - size, 0) + 1, tf.float64)), tf.int32)
    img = img[oy:oy + size, ox:ox + size]
    vh, vw = tf.shape(img)[0], tf.shape(img)[1]
    img = tf.image.pad_to_bounding_box(img, 0, 0, size, size)
    off = tf.cast(tf.stack([ox, oy, ox, oy]), tf.float64)[None]
    raw = xyxy - off
    lim = tf.cast(tf.stack([vw, vh, vw, vh]), tf.float64)[None]
    clipped = tf.clip_by_value(raw, 0.0, lim)
    area_raw = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    area_new = tf.maximum(clipped[:, 2] - clipped[:, 0], 0.0) * tf.maximum(clipped[:, 3] - clipped[:, 1], 0.0)
    keep = (area_new > 0) & (area_new >= a.min_visibility * area_raw)
    xyxy, classes, crowd, area, depth, base_area, area_new = (
        tf.boolean_mask(t, keep) for t in (clipped, classes, crowd, area, depth, base_area, area_new))
    share = tf.minimum(area_new / (base_area * s * s), 1.0)
    zoom = s * tf.maximum(hf, wf) / size
    depth = tf.cast(depth, tf.float32)
    if a.rescale_depth:
        depth = tf.where(depth > 0, depth / tf.cast(zoom, tf.float32), depth)
    xywh = tf.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1) / s
    return _pack(img, xyxy, xywh, classes, crowd, tf.cast(area, tf.float64) * share, depth, s,
                 tf.stack([h, w]), data_cfg.max_boxes, size)


# RGB <-> YIQ (NTSC): Y is the luma, (I, Q) the chroma plane, so a saturation change scales
# (I, Q) and a hue shift rotates it.  Both are then one 3 x 3 matrix on the RGB pixels.
# numpy, not tf.constant: a TensorFlow op at import would initialise TensorFlow's context
# before a program can configure it (MultiWorkerMirroredStrategy must come first).
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.595716, -0.274453, -0.321263],
                        [0.211456, -0.522591, 0.311135]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def hue_saturation_matrix(saturation: tf.Tensor, hue: tf.Tensor) -> tf.Tensor:
    """3 x 3 float32 matrix ``T`` with ``rgb_out = T @ rgb_in``: chroma scaled by ``saturation``
    (1 = unchanged, 0 = grey) and rotated by ``hue`` turns of the colour circle.

    A linear approximation of the HSV-space shift (exact for the grey axis, which it keeps):
    one matrix product per pixel instead of two colour-space conversions."""
    angle = 2.0 * 3.141592653589793 * tf.cast(hue, tf.float32)
    c, s = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    # the sign of HSV: a positive hue shift goes red -> yellow -> green
    chroma = tf.stack([tf.stack([1.0, 0.0, 0.0]), tf.stack([0.0, c, s]), tf.stack([0.0, -s, c])])
    return tf.constant(_YIQ_TO_RGB) @ chroma @ tf.constant(_RGB_TO_YIQ)


def _colour(img, seed, a):
    """Colour jitter on float32 0..255 RGB ``[H, W, 3]`` (before padding, so the padding stays 0).

    Brightness/contrast ``x * alpha + beta * 255`` (``alpha ~ 1 +- contrast``, ``beta ~ +-
    brightness``), saturation ``1 +- hue_saturation`` and hue ``+- hue_saturation / 2`` turns
    (:func:`hue_saturation_matrix`), all in ONE affine map per pixel,
    ``clip(alpha * T @ x + 255 * beta)`` (``T`` keeps grey grey, so the order does not matter)."""
    alpha, beta = tf.constant(1.0), tf.constant(0.0)
    if a.brightness > 0 or a.contrast > 0:
        alpha = tf.cast(_uniform(seed, 10, 1.0 - a.contrast, 1.0 + a.contrast), tf.float32)
        beta = tf.cast(_uniform(seed, 11, -a.brightness, a.brightness), tf.float32)
    if a.hue_saturation > 0:
        sat = tf.cast(_uniform(seed, 12, 1.0 - a.hue_saturation, 1.0 + a.hue_saturation), tf.float32)
        hue = tf.cast(_uniform(seed, 13, -a.hue_saturation / 2, a.hue_saturation / 2), tf.float32)
        img = tf.tensordot(img, alpha * hue_saturation_matrix(sat, hue), [[2], [1]])
    else:
        img = img * alpha
    return tf.clip_by_value(img + beta * 255.0, 0.0, 255.0)
