"""TensorFlow Datasets sources: ``coco/2017`` and ``kitti``, converted to canonical elements.

Images are read undecoded (``SkipDecoding``) so that decoding happens once, in the
pipeline's per-image step; the image size comes from the JPEG/PNG header.

* ``coco/*``: ``objects/bbox`` is normalised ``[ymin, xmin, ymax, xmax]`` (float32 in
  the tfds files), converted to pixel ``[x, y, w, h]`` (so not bit-exact with the
  original JSON); ``area`` and ``is_crowd`` as stored; depth unknown (-1);
  ``image_id`` = ``image/id``.
* ``kitti``: tfds stores boxes with the origin at the BOTTOM-left
  (``ymin = (H - bottom) / H``), flipped back here; depth = ``objects/location[:, 2]``
  (camera z, metres); area = box area; no crowd; ``image_id`` = digits of the file name.

Labels are the tfds ``ClassLabel`` indices; they are mapped by NAME to ``data.classes``
(by position when the builder only knows placeholder names '0', '1', ...).
Names missing from ``data.classes`` raise an error up front, or with
``data.unknown_classes: skip`` their objects are dropped in the graph (a class subset).
COCO detections keep COCO's category ids (1..90 with gaps, looked up by name in
:mod:`detector.data.coco_categories`), KITTI's are class index + 1.

``data.max_images = N`` reads the first N examples of each split (tfds slicing
``split[:N]``; training still shuffles them).  Nothing is ever downloaded: an
unprepared dataset raises a :class:`UserError` naming the data dir it looked in and
how to prepare it (docs/datasets.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import tensorflow as tf

from detector.config import Config
from detector.errors import UserError

log = logging.getLogger("detector.data")

_FAMILIES = {"coco": "label", "kitti": "type"}


def _family(name: str) -> str:
    fam = name.split("/")[0].split(":")[0]
    if fam not in _FAMILIES:
        raise UserError(f"data.tfds_name: {name!r} is not supported (supported: coco/2017, kitti)")
    return fam


def _builder(cfg):
    import tensorflow_datasets as tfds

    _family(cfg.data.tfds_name)
    try:
        return tfds.builder(cfg.data.tfds_name, data_dir=cfg.data.tfds_data_dir)
    except Exception as e:  # tfds raises several types for unknown names / versions
        raise UserError(f"data.tfds_name: cannot open tfds builder {cfg.data.tfds_name!r}: {e}") from None


def data_dir_root(builder) -> str:
    """The tfds data dir a builder reads (``data.tfds_data_dir``, else $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    return str(getattr(builder, "_data_dir_root", None) or builder.data_dir)


def not_prepared_message(cfg: Config, builder) -> str:
    name, root = cfg.data.tfds_name, data_dir_root(builder)
    return (
        f"data.tfds_name {name!r} is not prepared in the tfds data dir {root} (looked for "
        f"{builder.data_dir}); this tool never downloads datasets. To prepare it on a machine with "
        f"internet: python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
        f"data_dir='DIR').download_and_prepare()\" (COCO 2017: about 25 GB of downloads and 25 GB "
        "prepared), then copy DIR here; from a COCO download already on disk, see docs/datasets.md "
        "(offline preparation). If it is prepared elsewhere, point at that folder: --set "
        "data.tfds_data_dir=DIR (or set TFDS_DATA_DIR). Or train from the COCO files directly: "
        "data.source: coco_json (configs/coco_json_example.yaml).")


def ensure_prepared(cfg: Config):
    """The tfds builder, after checking that it is prepared and has the configured splits."""
    b = _builder(cfg)
    if not b.is_prepared():
        raise UserError(not_prepared_message(cfg, b))
    for key, split in (("data.train_split", cfg.data.train_split), ("data.val_split", cfg.data.val_split)):
        if split not in b.info.splits:
            raise UserError(f"{key}: split {split!r} is not in the prepared {cfg.data.tfds_name} under "
                            f"{data_dir_root(b)} (it has: {', '.join(sorted(b.info.splits))})")
    return b


def split_arg(cfg: Config, split: str) -> str:
    """The tfds split string: ``split`` or ``split[:max_images]``."""
    return f"{split}[:{cfg.data.max_images}]" if cfg.data.max_images else split


def tfds_split_sizes(cfg: Config) -> tuple[int | None, int | None]:
    """Number of examples of the train and val splits (after ``data.max_images``), None when not recorded."""
    b = ensure_prepared(cfg)
    out = []
    for split in (cfg.data.train_split, cfg.data.val_split):
        try:
            n = int(b.info.splits[split].num_examples)
            out.append(min(n, cfg.data.max_images) if cfg.data.max_images else n)
        except Exception:  # mocked builders have no split metadata
            out.append(None)
    return out[0], out[1]


def tfds_category_ids(cfg: Config) -> tuple[int, ...]:
    """Class index -> category id: COCO's own ids for ``coco/*`` (by name), else index + 1."""
    if _family(cfg.data.tfds_name) == "coco":
        from detector.data.coco_categories import COCO_ID_BY_NAME

        unknown = [n for n in cfg.data.classes if n not in COCO_ID_BY_NAME]
        if not unknown:
            return tuple(COCO_ID_BY_NAME[n] for n in cfg.data.classes)
        log.warning("data.classes %s are not COCO category names: detections use class index + 1 as "
                    "category id", unknown[:5])
    return tuple(range(1, len(cfg.data.classes) + 1))


def label_mapping(tfds_names: Sequence[str], class_names: Sequence[str], unknown: str,
                  what: str) -> list[int]:
    """tfds label index -> class index (-1: dropped).

    A builder whose metadata is not prepared (or mocked) names its labels '0', '1', ...;
    then labels map by position, which needs exactly as many ``data.classes``.
    """
    tfds_names = list(tfds_names)
    if tfds_names == [str(i) for i in range(len(tfds_names))]:
        if len(class_names) != len(tfds_names):
            raise UserError(f"{what} has unnamed labels 0..{len(tfds_names) - 1}: data.classes must "
                            f"list {len(tfds_names)} names in label order, got {len(class_names)}")
        log.warning("%s: label names unavailable; mapping label i to data.classes[i]", what)
        return list(range(len(tfds_names)))
    index = {n: i for i, n in enumerate(class_names)}
    missing = [n for n in tfds_names if n not in index]
    if missing and unknown != "skip":
        raise UserError(f"data.classes lacks {len(missing)} class names of {what}: {missing[:10]} "
                        "(list them, or set data.unknown_classes: skip)")
    return [index.get(n, -1) for n in tfds_names]


def image_hw(encoded: tf.Tensor) -> tf.Tensor:
    """int32 ``[2]`` (height, width) from a JPEG or PNG header, without decoding."""

    def png():
        # IHDR: big-endian 32-bit width at byte 16, height at byte 20.
        b = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8), tf.int32)
        w = ((b[0] * 256 + b[1]) * 256 + b[2]) * 256 + b[3]
        h = ((b[4] * 256 + b[5]) * 256 + b[6]) * 256 + b[7]
        return tf.stack([h, w])

    return tf.cond(tf.io.is_jpeg(encoded), lambda: tf.io.extract_jpeg_shape(encoded)[:2], png)


def to_canonical(example: dict, family: str, mapping: Sequence[int]) -> dict:
    """One tfds example (image undecoded) -> canonical element (see sources.py)."""
    objs = example["objects"]
    hw = tf.cast(image_hw(example["image"]), tf.float64)
    h, w = hw[0], hw[1]
    bb = tf.reshape(tf.cast(objs["bbox"], tf.float64), [-1, 4])
    if family == "kitti":
        y0, y1 = (1.0 - bb[:, 2]) * h, (1.0 - bb[:, 0]) * h   # origin bottom-left in tfds
        labels = objs["type"]
        n = tf.shape(bb)[0]
        depth = tf.cast(tf.reshape(objs["location"], [-1, 3])[:n, 2], tf.float32)
        depth = tf.pad(depth, [[0, n - tf.shape(depth)[0]]], constant_values=-1.0)
        name = example["image/file_name"]
        digits = tf.strings.regex_replace(name, r"\D", "")
        image_id = tf.strings.to_number(tf.where(digits == "", "0", digits), tf.int64)
        crowd = tf.zeros([n], tf.bool)
    else:
        y0, y1 = bb[:, 0] * h, bb[:, 2] * h
        labels = objs["label"]
        n = tf.shape(bb)[0]
        depth = -tf.ones([n], tf.float32)
        name = example["image/filename"]
        image_id = tf.cast(example["image/id"], tf.int64)
        crowd = tf.reshape(tf.cast(objs["is_crowd"], tf.bool), [-1])[:n]
    x0, x1 = bb[:, 1] * w, bb[:, 3] * w
    boxes = tf.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    if family == "kitti":
        area = boxes[:, 2] * boxes[:, 3]
    else:
        area = tf.cast(tf.reshape(objs["area"], [-1])[:n], tf.float64)
    classes = tf.gather(tf.constant(mapping, tf.int32), tf.cast(tf.reshape(labels, [-1])[:n], tf.int32))
    keep = classes >= 0
    return {"image": example["image"], "name": name, "image_id": image_id,
            "boxes": tf.boolean_mask(boxes, keep), "classes": tf.boolean_mask(classes, keep),
            "is_crowd": tf.boolean_mask(crowd, keep), "area": tf.boolean_mask(area, keep),
            "depth": tf.boolean_mask(depth, keep)}


def tfds_dataset(cfg: Config, split: str, training: bool, seed=None) -> tuple[tf.data.Dataset, int | None]:
    """Canonical elements of a tfds split, and its size (None if unknown).

    Training shuffles the files with ``seed``: an int, an int64 scalar tensor (built
    inside a dataset function: a per-epoch seed), or None for ``data.seed``."""
    import tensorflow_datasets as tfds

    family = _family(cfg.data.tfds_name)
    builder = _builder(cfg)   # (not ensure_prepared: tfds.testing.mock_data builders are unprepared)
    names = builder.info.features["objects"][_FAMILIES[family]].names
    mapping = label_mapping(names, cfg.data.classes, cfg.data.unknown_classes, cfg.data.tfds_name)
    seed = cfg.data.seed if seed is None else seed
    read_config = tfds.ReadConfig(shuffle_seed=seed) if seed is not None else None
    try:
        ds = builder.as_dataset(split=split_arg(cfg, split), shuffle_files=training, read_config=read_config,
                                decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:
        if not builder.is_prepared():
            raise UserError(not_prepared_message(cfg, builder)) from None
        raise UserError(
            f"data.tfds_name {cfg.data.tfds_name!r}, split {split!r}: cannot read the prepared "
            f"dataset under {data_dir_root(builder)} ({type(e).__name__}: {e})") from None
    try:
        size = int(builder.info.splits[split].num_examples)
        size = min(size, cfg.data.max_images) if cfg.data.max_images else size
    except Exception:
        size = None
    ds = ds.map(lambda ex: to_canonical(ex, family, mapping), num_parallel_calls=tf.data.AUTOTUNE)
    return ds, size


def tfds_val_records(cfg: Config) -> tuple[list, int]:
    """``(records, undecodable)``: the val split as :class:`~detector.data.records.ImageRecord` s
    (``image`` = file name; size from the image header) in evaluation order, leaving out (and
    counting) the images the input pipeline cannot decode, as the evaluation does."""
    import numpy as np

    from detector.data.augment import decode
    from detector.data.records import ImageRecord

    ds, _ = tfds_dataset(cfg, cfg.data.val_split, training=False)
    ds = ds.map(lambda e: dict(e, hw=image_hw(e["image"])))
    out, bad = [], 0
    for e in ds.as_numpy_iterator():
        if decode(bytes(e["image"])) is None:
            bad += 1
            log.warning("val image %s (id %d) cannot be decoded: left out of evaluation and the GT file",
                        e["name"].decode(), int(e["image_id"]))
            continue
        n = len(e["classes"])
        out.append(ImageRecord(
            image=e["name"].decode(), image_id=int(e["image_id"]), height=int(e["hw"][0]),
            width=int(e["hw"][1]), boxes=np.asarray(e["boxes"], np.float64).reshape(n, 4),
            classes=np.asarray(e["classes"], np.int32), is_crowd=np.asarray(e["is_crowd"], bool),
            area=np.asarray(e["area"], np.float64), depth=np.asarray(e["depth"], np.float32)))
    return out, bad
