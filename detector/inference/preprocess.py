"""Reading images and letterboxing them exactly like the val pipeline; mapping boxes back.

* :func:`read_image`: RGB uint8 [H, W, 3] from a file.  OpenCV applies the EXIF
  orientation tag (a phone photo taken upright is returned upright), the same decoder
  the training / val pipeline uses (:func:`detector.data.augment.decode`), so a photo
  looks to the model as it did in training.
* :func:`letterbox_image`: scale ``s = S / max(H, W)``, resize to ``round(H s) x
  round(W s)`` (at most S), place at the top-left of an S x S black canvas: the val
  pipeline's :func:`detector.data.augment.letterbox`.
* :func:`boxes_to_original`: network ``[ymin, xmin, ymax, xmax]`` px -> original-image
  ``[x0, y0, x1, y1]`` and COCO ``[x, y, w, h]`` px (divide by ``s``, clip to the image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.data.augment import decode, letterbox
from detector.errors import UserError


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] (EXIF orientation applied); :class:`UserError` if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read file: {e.strerror or e}") from None
    image = decode(data)
    if image is None:
        raise UserError(f"{path}: not a decodable image")
    return image


def letterbox_image(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``(uint8 [size, size, 3], scale)``: network px per original px (see module doc)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return letterbox(image, size, scale), scale


def boxes_to_original(boxes_yxyx, scale: float, original_hw) -> tuple[np.ndarray, np.ndarray]:
    """``(xyxy float64 [n, 4], xywh float64 [n, 4])`` in original-image px, clipped to it.

    Args:
      boxes_yxyx: [n, 4] network-input px of the letterboxed image.
      scale: network px per original px (from :func:`letterbox_image`).
      original_hw: (H, W) of the original image.
    """
    b = np.asarray(boxes_yxyx, np.float64).reshape(-1, 4) / float(scale)
    h, w = float(original_hw[0]), float(original_hw[1])
    x0, x1 = np.clip(b[:, 1], 0, w), np.clip(b[:, 3], 0, w)
    y0, y1 = np.clip(b[:, 0], 0, h), np.clip(b[:, 2], 0, h)
    xyxy = np.stack([x0, y0, x1, y1], axis=1)
    return xyxy, np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
