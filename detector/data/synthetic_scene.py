"""Scene generator of the synthetic dataset (one image + its COCO annotations).

Scene model (all drawn with OpenCV, one pass, seeded per image):

* Background: a two-colour linear gradient, low-frequency colour noise, blurred
  irregular blobs and thin lines (distractors that are not objects), per-pixel noise.
* Objects: shapes from :mod:`detector.data.shapes` with random colour and rotation;
  class ``i`` of ``C`` is drawn with probability ``∝ imbalance**(-i/(C-1))``.
  Pinhole camera: physical size ``PHYSICAL_SIZE[class] * (1 + N(0, 0.07))`` metres,
  depth log-uniform within ``DEPTH_RANGE`` (narrowed so the apparent size stays in
  ``[min_px, 0.7*min(H, W)]``), apparent size ``focal * physical / depth`` pixels with
  ``focal = 1.25 * width``; the depth draw is skewed towards near objects so that all
  three COCO area ranges are well populated.  Objects may overlap: they are placed
  near to far, each behind those already placed, and an object less than 60% visible
  is rejected; so an occluder is always nearer than what it hides.
* ``bbox`` is the tight integer box ``[x, y, w, h]`` of the object's VISIBLE pixels and
  ``area`` the visible pixel count (mask area, as in COCO), both integers.
  ``depth`` (metres, 4 decimals) is an extra annotation field.
* Some images are empty; some hold one crowd: 5-9 small same-class shapes in a tight
  cluster, annotated as ONE box with ``iscrowd=1`` (members are not annotated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from detector.config import SyntheticConfig
from detector.data.shapes import PHYSICAL_SIZE, shape_mask

FOCAL_PER_WIDTH = 1.25
DEPTH_RANGE = (2.0, 40.0)
SIZE_NOISE = 0.07
MIN_VISIBLE = 0.6
MAX_SIZE_FRAC = 0.7


def _background(rng, h: int, w: int) -> np.ndarray:
    c1, c2 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    theta = rng.uniform(0, 2 * math.pi)
    t = (np.arange(w, dtype=np.float32)[None, :] * math.cos(theta)
         + np.arange(h, dtype=np.float32)[:, None] * math.sin(theta))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c1.astype(np.float32) + t[..., None] * (c2 - c1).astype(np.float32)
    low = rng.normal(0, 22, (6, 6, 3)).astype(np.float32)
    img += cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255).astype(np.uint8)
    blobs = img.copy()
    for _ in range(rng.integers(2, 7)):  # irregular blobs: many-vertex, jagged outlines
        n = int(rng.integers(7, 13))
        r = rng.uniform(6, 0.2 * min(h, w)) * rng.uniform(0.3, 1.0, n)
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        c = rng.uniform(0, [w, h])
        pts = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1).astype(np.int32)
        cv2.fillPoly(blobs, [pts], rng.uniform(0, 255, 3).tolist())
    # Half-transparent, so distractors read as stains rather than solid shapes.
    img = cv2.addWeighted(img, 0.45, blobs, 0.55, 0.0)
    _lines(rng, img, rng.integers(3, 9))
    return cv2.GaussianBlur(img, (5, 5), 1.5)


def _lines(rng, img: np.ndarray, n: int) -> None:
    h, w = img.shape[:2]
    for _ in range(int(n)):
        p, q = rng.integers(0, [w, h], 2), rng.integers(0, [w, h], 2)
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q),
                 rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 3)))


def _colour(rng, ref: np.ndarray) -> np.ndarray:
    """A random colour far (mean abs difference > 60) from ``ref`` when possible."""
    for _ in range(6):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - ref).mean() > 60:
            return c
    return 255.0 - ref


class _Scene:
    """Label map of visible objects, filled near to far.

    Each new object lies BEHIND everything already placed: it only takes free pixels,
    and is rejected when less than ``MIN_VISIBLE`` of it would remain visible.
    """

    def __init__(self, h: int, w: int):
        self.label = np.zeros((h, w), np.uint8)
        self.regions: list[tuple[int, int, int, int]] = []

    def try_place(self, img, mask, y0: int, x0: int, colour) -> bool:
        k_h, k_w = mask.shape
        region = self.label[y0:y0 + k_h, x0:x0 + k_w]
        free = mask.astype(bool) & (region == 0)
        if len(self.regions) >= 254 or free.sum() < MIN_VISIBLE * mask.sum():
            return False
        self.regions.append((y0, x0, k_h, k_w))
        region[free] = len(self.regions)
        img[y0:y0 + k_h, x0:x0 + k_w][free] = colour
        return True

    def add_to_last(self, img, mask, y0: int, x0: int, colour) -> None:
        """Merge another mask into the most recent object (crowd members)."""
        k_h, k_w = mask.shape
        region = self.label[y0:y0 + k_h, x0:x0 + k_w]
        free = mask.astype(bool) & (region == 0)
        region[free] = len(self.regions)
        img[y0:y0 + k_h, x0:x0 + k_w][free] = colour
        ry, rx, rh, rw = self.regions[-1]
        ny, nx = min(ry, y0), min(rx, x0)
        self.regions[-1] = (ny, nx, max(ry + rh, y0 + k_h) - ny, max(rx + rw, x0 + k_w) - nx)

    def boxes(self) -> list[tuple[list[int], int]]:
        """Per object: tight ``[x, y, w, h]`` of its visible pixels and the pixel count."""
        out = []
        for j, (y0, x0, kh, kw) in enumerate(self.regions):
            ys, xs = np.nonzero(self.label[y0:y0 + kh, x0:x0 + kw] == j + 1)
            if len(ys) == 0:
                out.append(None)
                continue
            out.append(([int(x0 + xs.min()), int(y0 + ys.min()), int(xs.max() - xs.min() + 1),
                         int(ys.max() - ys.min() + 1)], int(len(ys))))
        return out


def _sample_object(rng, name: str, h: int, w: int, far: bool = False):
    """Physical size, depth and apparent size (pixels) of one object of class ``name``."""
    focal = FOCAL_PER_WIDTH * w
    min_px = max(8.0, 10.0 * min(h, w) / 256.0)
    max_px = 14.0 if far else MAX_SIZE_FRAC * min(h, w)
    phys = PHYSICAL_SIZE[name] * float(np.clip(1 + rng.normal(0, SIZE_NOISE), 0.8, 1.2))
    lo = max(DEPTH_RANGE[0], focal * phys / max_px)
    hi = min(DEPTH_RANGE[1], focal * phys / min_px)
    # u**1.6 skews log-depth towards near (large) objects; uniform would leave few large.
    u = rng.uniform() ** 1.6
    depth = float(math.exp(math.log(lo) + u * (math.log(max(lo, hi)) - math.log(lo))))
    # lo > hi for large far objects (crowds): stay in DEPTH_RANGE, the size gives way.
    depth = min(max(depth, DEPTH_RANGE[0]), DEPTH_RANGE[1])
    return phys, depth, focal * phys / depth


def generate_image(rng: np.random.Generator, class_names: Sequence[str],
                   s: SyntheticConfig) -> tuple[np.ndarray, list[dict]]:
    """One image (uint8 BGR ``[H, W, 3]``) and its COCO annotation dicts (no ids).

    ``s`` is a :class:`~detector.config.SyntheticConfig`.  Category ids are
    ``class_index + 1``.
    """
    h, w = s.height, s.width
    img = _background(rng, h, w)
    scene = _Scene(h, w)
    meta: list[tuple[int, float, int]] = []  # class index, depth, iscrowd
    c = len(class_names)
    probs = s.imbalance ** (-np.arange(c) / max(c - 1, 1))
    probs /= probs.sum()
    empty = rng.uniform() < s.empty_fraction
    n_obj = 0 if empty else int(rng.integers(1, s.max_objects + 1))
    objs = []
    for k in rng.choice(c, size=n_obj, p=probs):
        _, depth, size = _sample_object(rng, class_names[int(k)], h, w)
        objs.append((depth, size, int(k)))
    for depth, size, k in sorted(objs):  # near to far: each new one goes behind
        mask = shape_mask(class_names[k], size, rng.uniform(0, 2 * math.pi))
        if mask.shape[0] >= min(h, w):
            continue
        for _try in range(8):
            y0, x0 = (int(v) for v in rng.integers(0, [h - mask.shape[0], w - mask.shape[1]]))
            ref = img[y0:y0 + mask.shape[0]:3, x0:x0 + mask.shape[1]:3].reshape(-1, 3).mean(0)
            if scene.try_place(img, mask, y0, x0, _colour(rng, ref)):
                meta.append((k, depth, 0))
                break
    if not empty and rng.uniform() < s.crowd_fraction:
        _place_crowd(rng, img, scene, meta, class_names, probs)
    _lines(rng, img, rng.integers(0, 4))  # clutter drawn over the objects
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(3, 9))
    img = cv2.add(img, noise, dtype=cv2.CV_8U)  # saturating add
    anns = []
    for (k, depth, crowd), box in zip(meta, scene.boxes()):
        if box is None:
            continue
        anns.append({"category_id": k + 1, "bbox": box[0], "area": box[1], "iscrowd": crowd,
                     "depth": round(depth, 4)})
    return img, anns


def _place_crowd(rng, img, scene: _Scene, meta, class_names, probs) -> None:
    h, w = img.shape[:2]
    k = int(rng.choice(len(class_names), p=probs))
    _, depth, size = _sample_object(rng, class_names[k], h, w, far=True)
    spread = 1.6 * size
    for _try in range(8):  # the crowd goes behind the objects: look for a free spot
        cy, cx = rng.uniform(spread + size, [h - spread - size, w - spread - size])
        y0, x0 = int(cy - size / 2), int(cx - size / 2)
        if not scene.label[y0:y0 + int(size), x0:x0 + int(size)].any():
            break
    colour = _colour(rng, img[int(cy), int(cx)].astype(np.float64))
    members = int(rng.integers(5, 10))
    placed = False
    for _ in range(members):
        mask = shape_mask(class_names[k], size * rng.uniform(0.85, 1.15), rng.uniform(0, 2 * math.pi))
        y0 = int(np.clip(cy + rng.uniform(-spread, spread) - mask.shape[0] / 2, 0, h - mask.shape[0]))
        x0 = int(np.clip(cx + rng.uniform(-spread, spread) - mask.shape[1] / 2, 0, w - mask.shape[1]))
        if placed:
            scene.add_to_last(img, mask, y0, x0, colour)
        elif scene.try_place(img, mask, y0, x0, colour):
            meta.append((k, depth, 1))
            placed = True
