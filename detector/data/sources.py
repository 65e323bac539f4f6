"""Dispatch on ``data.source``: records, dataset info, and the canonical element stream.

Canonical tf.data element (one image, ``n`` annotations in file order)::

    {"image": string (encoded bytes), "name": string (file name, for messages),
     "image_id": int64, "boxes": float64 [n, 4] xywh original pixels,
     "classes": int32 [n] (0..C-1), "is_crowd": bool [n], "area": float64 [n],
     "depth": float32 [n] metres (-1 unknown)}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from detector.config import Config
from detector.data.coco_json import load_coco_json
from detector.data.records import DatasetInfo, ImageRecord, count_degenerate, write_coco_gt
from detector.data.sampling import repeat_records
from detector.data.voc import load_voc
from detector.errors import UserError

log = logging.getLogger("detector.data")


def _split_name(cfg, split: str) -> str:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return cfg.data.train_split if split == "train" else cfg.data.val_split


def load_records(cfg: Config, split: str) -> tuple[list[ImageRecord], dict]:
    """Records of a file-based source (synthetic, coco_json, voc) for ``split``.

    Parsed once per process and data config: the trainer rebuilds its dataset every
    epoch (with a per-epoch ``data.seed``), which would otherwise re-read the
    annotation file each time (seconds for COCO-sized JSON).
    """
    records, notes = _load_records(dataclasses.replace(cfg.data, seed=None), split)
    return list(records), dict(notes)


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
    return records, notes


def _written_gt(cfg, records: list[ImageRecord], tag: str) -> str:
    key = hashlib.sha256(repr((tag, cfg.data.classes, [(r.image, r.image_id, r.boxes.tobytes(),
                                                        r.classes.tobytes()) for r in records])).encode())
    path = Path(cfg.data.cache_dir).expanduser() / "gt" / f"{cfg.data.source}-{key.hexdigest()[:12]}.json"
    if not path.is_file():
        write_coco_gt(records, cfg.data.classes, path)
    return str(path)


def dataset_info(cfg: Config) -> DatasetInfo:
    """Class names, split sizes and the val GT file for pycocotools (generates synthetic data)."""
    d = cfg.data
    if d.source == "tfds":
        from detector.data.tfds_source import tfds_split_sizes

        n_train, n_val = tfds_split_sizes(cfg)
        return DatasetInfo(tuple(d.classes), n_train, n_val, None,
                           tuple(range(1, len(d.classes) + 1)), d.source)
    train, _ = load_records(cfg, "train")
    val, notes = load_records(cfg, "val")
    for name, recs in (("train", train), ("val", val)):
        n_bad = count_degenerate(recs)
        if n_bad:
            log.warning("%s split: %d boxes are degenerate (w or h <= 0 after clipping to the "
                        "image); they are left out of training targets", name, n_bad)
    if d.source == "voc" or notes.get("skipped_annotations"):
        gt_json, cat_ids = _written_gt(cfg, val, "val"), tuple(range(1, len(d.classes) + 1))
    else:
        gt_json, cat_ids = notes["gt_json"], notes["category_ids"]
    return DatasetInfo(tuple(d.classes), len(train), len(val), gt_json, cat_ids, d.source)


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


def source_dataset(cfg: Config, split: str, training: bool,
                   shard: tuple[int, int] | None = None) -> tuple[tf.data.Dataset, int | None]:
    """``(dataset of canonical elements, number of images or None)`` in a fixed order.

    ``shard=(count, index)``: only images ``index, index+count, ...`` of that order (one
    worker's share); file sources slice the file list, so the others are never read.
    """
    if cfg.data.source == "tfds":
        from detector.data.tfds_source import tfds_dataset

        ds, size = tfds_dataset(cfg, _split_name(cfg, split), training)
        if shard is not None and shard[0] > 1:   # image bytes are not decoded yet
            ds = ds.shard(*shard)
        return ds, size
    records, _ = load_records(cfg, split)
    if not records:
        raise UserError(f"data.source {cfg.data.source}: the {split} split has no readable images")
    if training and cfg.data.repeat_factor_threshold > 0:
        records = repeat_records(records, len(cfg.data.classes), cfg.data.repeat_factor_threshold,
                                 cfg.data.seed)
    if shard is not None and shard[0] > 1:
        records = records[shard[1]::shard[0]]
    return records_dataset(records), len(records)
