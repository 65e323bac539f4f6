"""Per-image decode + augmentation + letterbox in numpy (OpenCV + albumentations).

This is the body of the pipeline's single ``tf.numpy_function`` per image
(``data.augment.backend: albumentations``).  The pure-TF equivalent lives in
:mod:`detector.data.augment_tf`.

Training chain (all bbox-aware; boxes that keep less than ``min_visibility`` of their
area are dropped and counted):

1. albumentations: ``HorizontalFlip(p=hflip)``, ``BBoxSafeRandomCrop(p=crop_prob)``
   (a random crop that contains every box);
2. zoom: resize so the longer side is ``S * U(scale)`` (OpenCV, exact box scaling);
3. albumentations: ``RandomBrightnessContrast``, ``HueSaturationValue``, then
   ``PadIfNeeded(S, S, top_left)`` + ``RandomCrop(S, S)`` (crops only when the zoomed
   image exceeds S; padding stays 0).

The record's image may also arrive decoded (uint8 ``[H, W, 3]`` pixels from
``data.cache_images: decoded``, EXIF already applied): then it is used as it is.

Evaluation: letterbox only (longer side = S, pad bottom/right with 0).

Output of :meth:`Processor.__call__` (``M = data.max_boxes``, ``S = data.image_size``):
``ok`` bool, ``image`` uint8 [S,S,3] RGB, ``boxes`` float32 [M,4] yxyx network pixels,
``boxes_xywh`` float64 [M,4], ``classes`` int32 [M] (-1 pad), ``is_crowd`` bool [M],
``area`` float64 [M], ``depth`` float32 [M], ``num_boxes`` int32, ``scale`` float32
(network px per source px), ``original_size`` int32 [2] (h, w).

Evaluation keeps ``boxes_xywh``/``area`` exactly as annotated (every annotation, file
order, also zero-size or outside ones: the COCO GT has them too; they cannot match an
anchor).  Training drops degenerate boxes and reports augmented boxes: ``boxes_xywh``
= network box / scale, ``area`` = annotated area times the share of the box kept,
``depth`` divided by the zoom factor when ``rescale_depth`` (an object shown k times
larger looks k times nearer to a pinhole camera).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from detector.data.records import PipelineStats, clip_xyxy

NO_READABLE_IMAGES = "no readable image"


class NoReadableImages(RuntimeError):
    """Every image of a repeated (training) split failed to decode; raised inside the pipeline."""


OUTPUT_DTYPES = (np.bool_, np.uint8, np.float32, np.float64, np.int32, np.bool_, np.float64,
                 np.float32, np.int32, np.float32, np.int32)


def letterbox(image: np.ndarray, size: int, scale: float) -> np.ndarray:
    """Resize by ``scale`` (rounded output size, capped at ``size``) and pad to ``size``."""
    h, w = image.shape[:2]
    nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out


_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def _imdecode(encoded: bytes, flags: int) -> np.ndarray | None:
    img = cv2.imdecode(np.frombuffer(encoded, np.uint8), flags)
    if img is None or img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        return None
    return img


def decode_checked(encoded: bytes, expected_hw: tuple[int, int] | None = None
                   ) -> tuple[np.ndarray | None, str]:
    """``(RGB uint8 [H, W, 3] or None, note)``: the one image decoder of the OpenCV path.

    The format comes from the bytes, not the file name (a PNG named ``.jpg`` is fine).
    Grayscale, RGBA/paletted PNG (alpha dropped), 16-bit and CMYK JPEG all give RGB.
    EXIF orientation is APPLIED (the image as viewers show it: the project's convention
    for annotations, docs/reliability.md).  When ``expected_hw`` (the annotated height,
    width) is given and differs from the decoded size but equals the size WITHOUT the
    EXIF rotation, the annotation was made on the stored pixels: those are used (note
    ``exif_ignored``).  Any other size mismatch returns None (the boxes would be wrong).
    A JPEG cut short at the end decodes as far as its data goes (the rest grey, as
    libjpeg, PIL and browsers show it; note ``truncated``).  None with the reason as the
    note when nothing can be decoded.
    """
    if not encoded:
        return None, "empty file (0 bytes)"
    flags = cv2.IMREAD_COLOR_RGB
    img, note = _imdecode(encoded, flags), ""
    if img is None and encoded[:2] == _JPEG_SOI and not encoded.rstrip(b"\0").endswith(_JPEG_EOI):
        encoded = encoded.rstrip(b"\0") + _JPEG_EOI   # lets libjpeg finish a truncated scan
        img, note = _imdecode(encoded, flags), "truncated"
    if img is None:
        return None, "not a decodable image (corrupt, truncated before any image data, or not an image)"
    if expected_hw and tuple(expected_hw) != img.shape[:2] and all(expected_hw):
        raw = _imdecode(encoded, flags | cv2.IMREAD_IGNORE_ORIENTATION)
        if raw is not None and raw.shape[:2] == tuple(expected_hw):
            return raw, ",".join(filter(None, (note, "exif_ignored")))
        return None, (f"decoded size {img.shape[1]}x{img.shape[0]} (w x h) differs from the annotated "
                      f"{expected_hw[1]}x{expected_hw[0]}; its boxes would be wrong")
    return img, note


def decode(encoded: bytes) -> np.ndarray | None:
    """RGB uint8 [H, W, 3], or None when the bytes are not a decodable image (see decode_checked)."""
    return decode_checked(encoded)[0]


class Processor:
    """Callable turning one canonical record into fixed-size network input (see module doc)."""

    def __init__(self, data_cfg, training: bool, stats: PipelineStats | None = None,
                 num_images: int | None = None):
        self.num_images = num_images      # elements per pass: to detect a split with no readable image
        self.size = data_cfg.image_size
        self.max_boxes = data_cfg.max_boxes
        self.aug = data_cfg.augment
        self.training = training and data_cfg.augment.backend != "none"
        self.stats = stats or PipelineStats()
        self._local = threading.local()

    # --------------------------------------------------------------- albumentations
    def _composes(self):
        # One pair per tf.data worker thread: re-seeding a shared Compose from two threads
        # would interleave their random draws and break determinism.
        if not hasattr(self._local, "pre"):
            import albumentations as A

            a, s = self.aug, self.size

            def params():
                # Filtering once at the end is enough (visibility compares the final
                # clipped box with the same box unclipped) and much cheaper.
                return A.BboxParams(format="pascal_voc", label_fields=["idx"], clip=True,
                                    check_each_transform=False, min_visibility=a.min_visibility,
                                    filter_invalid_bboxes=True)
            pre = [A.HorizontalFlip(p=a.hflip)]
            if a.crop_prob > 0:
                pre.append(A.BBoxSafeRandomCrop(p=a.crop_prob))
            post = []  # colour before padding, so the padding stays 0
            if a.brightness > 0 or a.contrast > 0:
                post.append(A.RandomBrightnessContrast(a.brightness, a.contrast, p=1.0))
            if a.hue_saturation > 0:
                post.append(A.HueSaturationValue(hue_shift_limit=90 * a.hue_saturation,
                                                 sat_shift_limit=255 * a.hue_saturation,
                                                 val_shift_limit=0, p=1.0))
            post += [A.PadIfNeeded(s, s, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0),
                     A.RandomCrop(s, s)]
            self._local.pre = A.Compose(pre, bbox_params=params())
            self._local.post = A.Compose(post, bbox_params=params())
        return self._local.pre, self._local.post

    # --------------------------------------------------------------- entry point
    def __call__(self, encoded, name, boxes, classes, is_crowd, area, depth, seed, size=None):
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        hw = tuple(int(v) for v in np.asarray(size).reshape(-1)[:2]) if size is not None else None
        try:
            if isinstance(encoded, np.ndarray) and encoded.ndim == 3:   # data.cache_images: decoded
                image, note = encoded, ""
            else:
                image, note = decode_checked(bytes(encoded), hw)
            if image is None:
                self._skip(name, note)
                return self._empty()
            for flag in filter(None, note.split(",")):
                self.stats.repaired(name, flag)
            self.stats.add(images_seen=1)
            boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
            # Non-finite or negative sizes cannot come from a validated file (converted sources only).
            nonfinite = ~np.isfinite(boxes).all(axis=1)
            negative = ~nonfinite & ((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
            bad = nonfinite | negative
            fields = [np.asarray(f)[~bad] for f in (boxes, classes, is_crowd, area, depth)]
            if bad.any():
                self.stats.add(boxes_invalid=int(nonfinite.sum()), boxes_degenerate=int(negative.sum()))
            if len(fields[1]) > self.max_boxes:
                self.stats.repaired(name, "too_many_boxes")
            if self.training:
                return self._train(image, *fields, int(seed))
            return self._eval(image, *fields)
        except NoReadableImages:
            raise
        except Exception as e:   # never a crash mid-epoch: the image is skipped, named and counted
            self._skip(name, f"cannot process it: {type(e).__name__}: {e}")
            return self._empty()

    def _skip(self, name: str, reason: str) -> None:
        self.stats.skip(name, reason)
        n = self.num_images
        # Training repeats the data forever: with no readable image the filter would spin.
        if n and self.stats.images_seen == 0 and self.stats.images_skipped >= 2 * n:
            raise NoReadableImages(f"{NO_READABLE_IMAGES}: none of the {n} images of the split could be "
                                   f"decoded ({self.stats.skipped_names()})")

    def _empty(self):
        m, s = self.max_boxes, self.size
        return (False, np.zeros((s, s, 3), np.uint8), np.zeros((m, 4), np.float32),
                np.zeros((m, 4), np.float64), np.full(m, -1, np.int32), np.zeros(m, bool),
                np.zeros(m, np.float64), np.full(m, -1, np.float32), np.int32(0),
                np.float32(1), np.zeros(2, np.int32))

    def _pack(self, image, yxyx, xywh, classes, crowd, area, depth, scale, hw):
        m = self.max_boxes
        n = len(classes)
        if n > m:
            self.stats.add(boxes_truncated=n - m)
            n = m
        out = self._empty()
        _, _, b, bx, c, cr, ar, d, _, _, _ = out
        b[:n], bx[:n], c[:n], cr[:n], ar[:n], d[:n] = (yxyx[:n], xywh[:n], classes[:n], crowd[:n],
                                                      area[:n], depth[:n])
        return (True, image, b, bx, c, cr, ar, d, np.int32(n), np.float32(scale),
                np.array(hw, np.int32))

    def _eval(self, image, boxes, classes, crowd, area, depth):
        h, w = image.shape[:2]
        s = self.size / max(h, w)
        xyxy = clip_xyxy(boxes, h, w) * s
        yxyx = xyxy[:, [1, 0, 3, 2]].astype(np.float32)
        return self._pack(letterbox(image, self.size, s), yxyx, boxes, classes, crowd, area,
                          depth, s, (h, w))

    def _train(self, image, boxes, classes, crowd, area, depth, seed):
        h, w = image.shape[:2]
        xyxy = clip_xyxy(boxes, h, w)
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        self.stats.add(boxes_degenerate=int((~keep).sum()))
        xyxy = xyxy[keep]
        idx = np.flatnonzero(keep)
        base_area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        pre, post = self._composes()
        pre.set_random_seed(seed)
        post.set_random_seed(seed + 1)
        r = pre(image=image, bboxes=xyxy, idx=np.arange(len(idx)))
        img, bb, kept = r["image"], np.asarray(r["bboxes"], np.float64).reshape(-1, 4), np.asarray(r["idx"], int)
        rng = np.random.default_rng(seed)
        ch, cw = img.shape[:2]
        s = self.size * rng.uniform(*self.aug.scale) / max(ch, cw)
        nh, nw = max(1, round(ch * s)), max(1, round(cw * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        bb = bb * np.array([nw / cw, nh / ch, nw / cw, nh / ch])
        r = post(image=img, bboxes=bb, idx=kept)
        bb, kept = np.asarray(r["bboxes"], np.float64).reshape(-1, 4), np.asarray(r["idx"], int)
        self.stats.add(boxes_cropped=len(idx) - len(kept))
        src = idx[kept]                           # indices into the record's annotations
        share = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1]) / (base_area[kept] * s * s)
        zoom = s * max(h, w) / self.size          # relative to the plain letterbox
        d = depth[src].astype(np.float32)
        if self.aug.rescale_depth:
            d = np.where(d > 0, d / np.float32(zoom), d)
        xywh = np.stack([bb[:, 0], bb[:, 1], bb[:, 2] - bb[:, 0], bb[:, 3] - bb[:, 1]], 1) / s
        return self._pack(r["image"], bb[:, [1, 0, 3, 2]].astype(np.float32), xywh, classes[src],
                          crowd[src], area[src] * np.minimum(share, 1.0), d, s, (h, w))
