"""Helpers shared by the data-pipeline tests (imported as a plain module)."""

import json
import struct
from pathlib import Path

import cv2
import numpy as np


def write_coco(root: Path, images: list[dict], anns: list[dict], categories: list[dict],
               name: str = "instances.json") -> Path:
    """Write a COCO-JSON file; images given as {"id", "file_name", "height", "width",
    optional "pixels" (uint8 HxWx3 BGR) or "raw" (bytes)}."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for im in images:
        path = root / "images" / im["file_name"]
        if "raw" in im:
            path.write_bytes(im["raw"])
        else:
            pixels = im.get("pixels")
            if pixels is None:
                pixels = np.full((im["height"], im["width"], 3), 90, np.uint8)
            cv2.imwrite(str(path), pixels)
        entries.append({k: im[k] for k in ("id", "file_name", "height", "width")})
    path = root / name
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return path


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1/Exif segment holding only the Orientation tag (0x0112) after SOI."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) \
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def colour_extent(image: np.ndarray, colour) -> tuple[np.ndarray | None, int]:
    """yxyx pixel extent (and pixel count) of the pixels closest to ``colour``: at least half
    intensity in its non-zero channels, below half in the others; ``(None, 0)`` if none."""
    c = np.array(colour) > 0
    mask = np.all(image[..., c] >= 128, -1) & np.all(image[..., ~c] < 128, -1)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None, 0
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], float), len(ys)
