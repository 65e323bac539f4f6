"""Boxes, labels and image grids drawn with OpenCV (uint8 BGR images).

Box arguments are ``[x0, y0, x1, y1]`` pixels of the image being drawn on (callers
convert from the network's ``[ymin, xmin, ymax, xmax]`` or COCO ``[x, y, w, h]``);
class indices ``0..K-1`` index ``class_names``; depth in metres (``<= 0`` or NaN:
not printed).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from detector.visualize.style import class_colour_bgr

FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(cls: int, class_names, score=None, depth=None) -> str:
    name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
    parts = [name]
    if score is not None:
        parts.append(f"{score:.2f}")
    if depth is not None and np.isfinite(depth) and depth > 0:
        parts.append(f"{depth:.1f}m")
    return " ".join(parts)


def draw_boxes(image: np.ndarray, boxes_xyxy, classes, class_names, scores=None, depths=None,
               crowd=None, thickness: int | None = None, font_scale: float | None = None) -> np.ndarray:
    """Draw boxes with "class [score] [depth]" labels on ``image`` (uint8 BGR [H, W, 3], in place).

    Args:
      boxes_xyxy: float [n, 4] image pixels; classes: int [n]; scores / depths: optional
        float [n]; crowd: optional bool [n] (drawn dashed-grey, labelled "crowd").
      thickness / font_scale: default scale with the image size.
    Returns ``image``.
    """
    h, w = image.shape[:2]
    t = thickness or max(1, int(round(min(h, w) / 300)))
    fs = font_scale or max(0.35, min(h, w) / 900)
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    order = np.argsort(np.asarray(scores))[::-1] if scores is not None else range(len(boxes))
    for i in list(order)[::-1]:                   # highest score drawn last (on top)
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        k = int(classes[i])
        is_crowd = crowd is not None and bool(crowd[i])
        colour = (160, 160, 160) if is_crowd else class_colour_bgr(k)
        cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, t, cv2.LINE_AA)
        text = "crowd" if is_crowd else _label(k, class_names, None if scores is None else float(scores[i]),
                                               None if depths is None else float(depths[i]))
        (tw, th), base = cv2.getTextSize(text, FONT, fs, 1)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(h - 1, y0 + th + base + 2)
        tx = min(max(0, x0), max(0, w - tw - 2))
        cv2.rectangle(image, (tx, ty - th - base), (tx + tw + 2, ty + 1), colour, -1)
        lum = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
        cv2.putText(image, text, (tx + 1, ty - base + 1), FONT, fs, (0, 0, 0) if lum > 140 else (255, 255, 255),
                    1, cv2.LINE_AA)
    return image


def caption(image: np.ndarray, text: str, height: int = 22) -> np.ndarray:
    """``image`` with a white text bar of ``height`` px on top (new array)."""
    bar = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, height - 7), FONT, height / 40, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def grid(tiles: list[np.ndarray], cols: int, pad: int = 4, fill: int = 255) -> np.ndarray:
    """Tiles (uint8 BGR, any sizes) in a row-major grid of ``cols`` columns."""
    if not tiles:
        return np.full((16, 16, 3), fill, np.uint8)
    rows = math.ceil(len(tiles) / cols)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    out = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), fill, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        out[y:y + t.shape[0], x:x + t.shape[1]] = t
    return out


def _yxyx_to_xyxy(b) -> np.ndarray:
    return np.asarray(b, np.float64).reshape(-1, 4)[:, [1, 0, 3, 2]]


def prediction_grid(images, extent_hw, gt: dict, preds: dict, class_names, score_threshold: float,
                    max_images: int = 8, tile: int = 320, pairs_per_row: int = 2,
                    max_predictions: int = 30) -> np.ndarray:
    """Val images with ground truth (left) beside predictions (right), as one BGR grid.

    Args:
      images: float or uint8 [B, S, S, 3] RGB letterboxed network input.
      extent_hw: [B, 2] the image part of each input (network px; the rest is padding).
      gt: ``boxes`` [B, M, 4] yxyx network px, ``classes`` [B, M] (-1 pad), ``depth``
        [B, M] metres, ``is_crowd`` [B, M], ``image_id`` [B]; ``valid`` [B] optional.
      preds: ``boxes`` [B, D, 4] yxyx network px, ``classes`` [B, D] (-1 pad),
        ``scores`` [B, D], ``depth`` [B, D] metres.
      score_threshold: predictions below it are not drawn (stated in the caption); at most
        ``max_predictions`` per image are drawn (the best-scoring; the caption says so).
    """
    images = np.asarray(images)
    valid = np.asarray(gt.get("valid", np.ones(len(images), bool)), bool)
    tiles = []
    for b in np.flatnonzero(valid)[:max_images]:
        eh, ew = (max(1, int(round(float(v)))) for v in extent_hw[b])
        rgb = np.clip(images[b, :eh, :ew], 0, 255).astype(np.uint8)
        zoom = tile / max(eh, ew)
        base = cv2.cvtColor(cv2.resize(rgb, (max(1, round(ew * zoom)), max(1, round(eh * zoom))),
                                       interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2BGR)
        g = np.flatnonzero(np.asarray(gt["classes"][b]) >= 0)
        left = draw_boxes(base.copy(), _yxyx_to_xyxy(gt["boxes"][b][g]) * zoom, gt["classes"][b][g], class_names,
                          depths=gt["depth"][b][g], crowd=gt["is_crowd"][b][g])
        p = np.flatnonzero((np.asarray(preds["classes"][b]) >= 0) & (np.asarray(preds["scores"][b]) >= score_threshold))
        shown = p[np.argsort(-np.asarray(preds["scores"][b])[p], kind="stable")][:max_predictions]
        right = draw_boxes(base.copy(), _yxyx_to_xyxy(preds["boxes"][b][shown]) * zoom, preds["classes"][b][shown],
                           class_names, scores=preds["scores"][b][shown], depths=preds["depth"][b][shown])
        image_id = int(gt["image_id"][b]) if "image_id" in gt else int(b)
        tiles.append(caption(left, f"id {image_id}: ground truth ({len(g)})"))
        count = f"{len(p)}" if len(shown) == len(p) else f"best {len(shown)} of {len(p)}"
        tiles.append(caption(right, f"predicted, score >= {score_threshold:.2f} ({count})"))
    return grid(tiles, cols=2 * pairs_per_row)
