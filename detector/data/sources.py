"""Dispatch on ``data.source``: records, dataset info, and the canonical element stream.

Canonical tf.data element (one image, ``n`` annotations in file order)::

    {"image": string (encoded bytes), "name": string (file name, for messages),
     "image_id": int64, "boxes": float64 [n, 4] xywh original pixels,
     "classes": int32 [n] (0..C-1), "is_crowd": bool [n], "area": float64 [n],
     "depth": float32 [n] metres (-1 unknown),
     "size": int32 [2] annotated (h, w); optional (file sources), checked against the decoded image}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from detector.config import Config
from detector.data.coco_json import load_coco_json
from detector.data.records import DatasetInfo, ImageRecord, count_degenerate, write_coco_gt
from detector.data.sampling import record_repeat_factors
from detector.data.voc import load_voc
from detector.errors import UserError

log = logging.getLogger("detector.data")


def _split_name(cfg, split: str) -> str:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return cfg.data.train_split if split == "train" else cfg.data.val_split


def load_records(cfg: Config, split: str) -> tuple[list[ImageRecord], dict]:
    """Records of a file-based source (synthetic, coco_json, voc) for ``split``.

    Parsed once per process and data config (``data.seed`` aside): the training and
    evaluation pipelines, inspection and the anchor report all ask for them, and a
    COCO-sized JSON takes seconds to parse.  With ``data.max_images =
    N`` a fixed random subset of N images (drawn with ``data.max_images_seed``, kept in
    file order) stands for the split; ``notes["subset"]`` is then True.
    """
    records, notes = _load_records(dataclasses.replace(cfg.data, seed=None), split)
    return list(records), dict(notes)


def _subset(records: list[ImageRecord], n: int | None, seed: int) -> list[ImageRecord]:
    if n is None or n >= len(records):
        return records
    pick = np.sort(np.random.default_rng(seed).choice(len(records), n, replace=False))
    return [records[i] for i in pick]


@functools.lru_cache(maxsize=8)
def _load_records(d, split: str) -> tuple[list[ImageRecord], dict]:
    cfg = SimpleNamespace(data=d)   # the helpers below read only cfg.data
    if d.source == "synthetic":
        from detector.data.synthetic import ensure_synthetic

        try:
            root = ensure_synthetic(cfg)
        except ValueError as e:
            raise UserError(str(e)) from None
        records, notes = load_coco_json(root / f"instances_{split}.json", root / split, d.classes)
        notes = dict(notes, gt_json=str(root / "instances_val.json"))
    elif d.source == "coco_json":
        js, im = (d.train_json, d.train_images) if split == "train" else (d.val_json, d.val_images)
        records, notes = load_coco_json(js, im, d.classes, d.unknown_classes)
        notes = dict(notes, gt_json=str(Path(js).expanduser()))
    elif d.source == "voc":
        records, notes = load_voc(d.voc_root, _split_name(cfg, split), d.classes, d.unknown_classes)
    else:
        raise ValueError(f"load_records does not handle data.source={d.source!r}")
    if d.max_images is not None and d.max_images < len(records):
        records, notes = _subset(records, d.max_images, d.max_images_seed), dict(notes, subset=True)
    return records, notes


def _written_gt(cfg, records: list[ImageRecord], category_ids, tag: str) -> str:
    key = hashlib.sha256(repr((tag, cfg.data.classes, tuple(category_ids), cfg.data.max_boxes,
                               [(r.image, r.image_id, r.height, r.width, r.boxes.tobytes(),
                                 r.classes.tobytes()) for r in records])).encode())
    path = Path(cfg.data.cache_dir).expanduser() / "gt" / f"{cfg.data.source}-{key.hexdigest()[:12]}.json"
    if not path.is_file():
        write_coco_gt(records, cfg.data.classes, path, category_ids, max_boxes=cfg.data.max_boxes)
    return str(path)


def _decodable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _decodable_file(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=65536)
def _decodable_file(path: str, mtime_ns: int, size: int) -> bool:
    from detector.data.augment import decode

    try:
        with open(path, "rb") as f:
            return decode(f.read()) is not None
    except OSError:
        return False


def _eval_view(cfg, records: list[ImageRecord]) -> tuple[list[ImageRecord], dict]:
    """The val records exactly as the evaluation sees them, and what was left out.

    The input pipeline skips images it cannot decode and keeps the first
    ``data.max_boxes`` boxes of an image; the GT file for pycocotools must leave out the
    same, or the two would score different ground truth.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:   # OpenCV decodes without the GIL
        ok = list(pool.map(_decodable, [r.image for r in records]))
    for r, good in zip(records, ok):
        if not good:
            log.warning("val image %s (id %d) cannot be decoded: left out of evaluation and the GT file",
                        r.image, r.image_id)
    kept = [r for r, good in zip(records, ok) if good]
    over = sum(max(0, len(r.classes) - cfg.data.max_boxes) for r in kept)
    return kept, {"undecodable": len(records) - len(kept), "boxes_over_max": over}


def _report_eval_drops(cfg, drops: dict, gt_json: str | None) -> None:
    parts = []
    if drops.get("missing_images"):
        parts.append(f"{drops['missing_images']} val images missing")
    if drops.get("undecodable"):
        parts.append(f"{drops['undecodable']} val images undecodable")
    if drops.get("boxes_over_max"):
        parts.append(f"{drops['boxes_over_max']} val boxes beyond data.max_boxes={cfg.data.max_boxes} "
                     "(raise data.max_boxes to keep them)")
    if parts:
        log.warning("evaluation leaves out %s; the metric and the GT file for pycocotools (%s) both "
                    "leave them out", ", ".join(parts), gt_json or "written on request")


def dataset_info(cfg: Config) -> DatasetInfo:
    """Class names, split sizes and the val GT file for pycocotools (generates synthetic data).

    For tfds sources this checks that the dataset is prepared (a :class:`UserError`
    otherwise) and leaves ``gt_json`` None: :func:`with_val_gt` writes it on request.
    For file-based sources the GT file is the original annotation file when the
    evaluation sees all of it, else a written copy with exactly what it sees (an image
    subset, a class subset with the original category ids, no missing or undecodable
    images, at most ``data.max_boxes`` boxes per image).
    """
    d = cfg.data
    if d.source == "tfds":
        from detector.data.tfds_source import tfds_category_ids, tfds_split_sizes

        n_train, n_val = tfds_split_sizes(cfg)
        return DatasetInfo(tuple(d.classes), n_train, n_val, None, tfds_category_ids(cfg), d.source)
    train, _ = load_records(cfg, "train")
    val, notes = load_records(cfg, "val")
    for name, recs in (("train", train), ("val", val)):
        n_bad = count_degenerate(recs)
        if n_bad:
            log.warning("%s split: %d boxes are degenerate (w or h <= 0 after clipping to the "
                        "image); they are left out of training targets", name, n_bad)
    cat_ids = tuple(notes.get("category_ids") or range(1, len(d.classes) + 1))
    seen, drops = _eval_view(cfg, val)
    drops["missing_images"] = notes.get("missing_images", 0)
    original = ("gt_json" in notes and not notes.get("skipped_annotations") and not notes.get("subset")
                and not any(drops.values()) and all(c > 0 for c in cat_ids))
    gt_json = notes["gt_json"] if original else _written_gt(cfg, seen, cat_ids, "val")
    _report_eval_drops(cfg, drops, gt_json)
    return DatasetInfo(tuple(d.classes), len(train), len(val), gt_json, cat_ids, d.source, drops)


def with_val_gt(cfg: Config, info: DatasetInfo) -> DatasetInfo:
    """``info`` with a val GT file; for tfds one is written from the prepared split (cached)."""
    if info.gt_json or cfg.data.source != "tfds":
        return info
    from detector.data.tfds_source import tfds_val_records

    records, bad = tfds_val_records(cfg)
    over = sum(max(0, len(r.classes) - cfg.data.max_boxes) for r in records)
    drops = {"undecodable": bad, "boxes_over_max": over}
    gt_json = _written_gt(cfg, records, info.category_ids, f"tfds:{cfg.data.tfds_name}:{cfg.data.val_split}")
    _report_eval_drops(cfg, drops, gt_json)
    return dataclasses.replace(info, gt_json=gt_json, eval_dropped=drops)


def records_dataset(records: list[ImageRecord]) -> tf.data.Dataset:
    """Canonical elements of ``records`` (file order); images read with ``tf.io.read_file``."""
    lengths = np.array([len(r.classes) for r in records], np.int64)

    def ragged(parts, dtype, width=None):
        flat = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        if width:
            flat = flat.reshape(-1, width)
        return tf.RaggedTensor.from_row_lengths(flat, lengths)

    table = {
        "path": tf.constant([r.image for r in records], tf.string),
        "image_id": tf.constant([r.image_id for r in records], tf.int64),
        "size": tf.constant(np.array([[r.height, r.width] for r in records], np.int32).reshape(-1, 2)),
        "boxes": ragged([r.boxes.reshape(-1) for r in records], np.float64, 4),
        "classes": ragged([r.classes for r in records], np.int32),
        "is_crowd": ragged([r.is_crowd for r in records], bool),
        "area": ragged([r.area for r in records], np.float64),
        "depth": ragged([r.depth for r in records], np.float32),
    }
    ds = tf.data.Dataset.from_tensor_slices(table)

    def read(e):
        out = {k: v for k, v in e.items() if k != "path"}
        out["image"] = tf.io.read_file(e["path"])
        out["name"] = e["path"]
        return out

    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def source_dataset(cfg: Config, split: str, training: bool, shard: tuple[int, int] | None = None,
                   seed=None) -> tuple[tf.data.Dataset, int | None]:
    """``(dataset of canonical elements, number of images or None)``: one pass over the split.

    File sources: every image once, in the fixed file order (repeat-factor sampling is
    the training pipeline's, per epoch: :func:`repeat_factors`).  tfds: training reads
    the files in an order shuffled by ``seed`` (an int or an int64 scalar tensor, e.g. an
    epoch's data seed; default ``data.seed``).  ``shard=(count, index)``: only images
    ``index, index+count, ...`` of that order (one worker's share); file sources slice
    the file list, so the others are never read.
    """
    if cfg.data.source == "tfds":
        from detector.data.tfds_source import tfds_dataset

        ds, size = tfds_dataset(cfg, _split_name(cfg, split), training, seed=seed)
        if shard is not None and shard[0] > 1:   # image bytes are not decoded yet
            ds = ds.shard(*shard)
        return ds, size
    records, _ = load_records(cfg, split)
    if not records:
        raise UserError(f"data.source {cfg.data.source}: the {split} split has no readable images")
    if shard is not None and shard[0] > 1:
        records = records[shard[1]::shard[0]]
    return records_dataset(records), len(records)


def repeat_factors(cfg: Config, split: str) -> np.ndarray | None:
    """Repeat factors ``r_i`` of every image of a file-based ``split`` in file order (before
    any sharding), or None when ``data.repeat_factor_threshold`` is 0 (or for tfds)."""
    if cfg.data.repeat_factor_threshold <= 0 or cfg.data.source == "tfds":
        return None
    records, _ = load_records(cfg, split)
    return record_repeat_factors(records, len(cfg.data.classes), cfg.data.repeat_factor_threshold)
