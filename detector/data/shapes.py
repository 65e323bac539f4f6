"""Shape drawers for the synthetic dataset.

Every drawer renders one object inscribed in a circle of diameter ``size`` pixels
(the object's *apparent size*), centred at ``(cx, cy)`` and rotated by ``angle``
radians, into a single-channel mask with value 1 (``cv2.LINE_8``, no anti-aliasing,
so the mask is exactly the set of pixels the object covers in the image).

``PHYSICAL_SIZE`` is the diameter in metres of each class's circumscribed circle;
the generator derives ``size = focal * physical_size / depth`` (pinhole camera).
Shapes are chosen so that class is identifiable from the outline alone: colours are
random per object and never encode the class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

# Metres; spread so that classes have different apparent-size ranges at equal depth.
PHYSICAL_SIZE = {
    "circle": 1.0,
    "square": 1.2,
    "triangle": 1.4,
    "star": 1.8,
    "ring": 1.5,
    "cross": 0.8,
    "hexagon": 1.1,
}


def _polygon(mask: np.ndarray, cx: float, cy: float, radii: np.ndarray, angle: float) -> None:
    n = len(radii)
    t = angle + np.arange(n) * (2.0 * math.pi / n)
    pts = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)
    # 2 fractional bits: sub-pixel vertex placement keeps small shapes symmetric.
    cv2.fillPoly(mask, [np.round(pts * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)


def _circle(mask, cx, cy, r, angle):
    cv2.circle(mask, (round(cx * 4), round(cy * 4)), max(1, round(r * 4)), 1, -1, cv2.LINE_8, 2)


def _ring(mask, cx, cy, r, angle):
    # Thick outline: the hole shows the background, unlike a filled circle.
    thick = max(2, round(0.35 * r))
    rr = max(1.0, r - thick / 2.0)
    cv2.circle(mask, (round(cx * 4), round(cy * 4)), round(rr * 4), 1, thick, cv2.LINE_8, 2)


def _square(mask, cx, cy, r, angle):
    _polygon(mask, cx, cy, np.full(4, r), angle)


def _triangle(mask, cx, cy, r, angle):
    _polygon(mask, cx, cy, np.full(3, r), angle)


def _hexagon(mask, cx, cy, r, angle):
    _polygon(mask, cx, cy, np.full(6, r), angle)


def _star(mask, cx, cy, r, angle):
    _polygon(mask, cx, cy, np.tile([r, 0.42 * r], 5), angle)


def _cross(mask, cx, cy, r, angle):
    # Plus sign: 12 vertices, arm half-width a = 0.3 r.
    a = 0.3 * r
    xy = np.array([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a),
                   (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)])
    c, s = math.cos(angle), math.sin(angle)
    pts = np.stack([cx + c * xy[:, 0] - s * xy[:, 1], cy + s * xy[:, 0] + c * xy[:, 1]], 1)
    cv2.fillPoly(mask, [np.round(pts * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)


DRAWERS = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
    "cross": _cross,
    "hexagon": _hexagon,
}


def check_class_names(names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every class the generator cannot draw."""
    unknown = [n for n in names if n not in DRAWERS]
    if unknown:
        raise ValueError(
            f"data.classes: the synthetic generator cannot draw {unknown}; "
            f"known shapes: {sorted(DRAWERS)}")


def shape_mask(name: str, size: float, angle: float) -> np.ndarray:
    """uint8 mask ``[k, k]`` (``k = ceil(size) + 2``) of one shape centred in it."""
    k = int(math.ceil(size)) + 2
    mask = np.zeros((k, k), np.uint8)
    c = (k - 1) / 2.0
    DRAWERS[name](mask, c, c, size / 2.0, angle)
    return mask
