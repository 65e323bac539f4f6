"""Look at the input pipeline and measure its throughput.

    python tools/inspect_data.py --config synthetic.yaml [--set key=value ...]
        [--split train|val] [--batches N] --out DIR

    python tools/inspect_data.py --config raccoon.yaml --fit-anchors

First prints the anchors' best possible recall on the train boxes (share of boxes with
an anchor at IoU >= ``matching.positive_iou``, overall and per size bucket; see
:mod:`detector.targets.anchor_fit`) and a warning naming the settings to change when it
is below 0.95.  ``--fit-anchors`` then searches anchor layouts and prints the best ones
as ``--set`` overrides and as config lines, and stops (no ``--out`` needed).

Writes ``DIR/batch0.jpg``: the first (augmented) batch as a grid, with ground-truth
boxes, class names and depths (metres) drawn (crowd boxes in red, others in green;
padding images of the val split are left grey).  Then times N more batches after that
warm-up batch; the LAST output line is ``images/s: <number>``.
"""

from __future__ import annotations

import argparse
import gc
import math
import time

from detector.atomic import write_bytes
from detector.commands.common import add_config_args, config_from_args, output_dir
from detector.errors import UserError


def draw_batch(batch: dict, class_names, min_tile: int = 256):
    """uint8 BGR grid of a pipeline batch with its ``gt`` boxes drawn."""
    import cv2
    import numpy as np

    images = batch["images"].numpy()
    gt = {k: v.numpy() for k, v in batch["gt"].items()}
    b, s = images.shape[0], images.shape[1]
    zoom = max(1.0, min_tile / s)
    t = int(round(s * zoom))
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = np.full((rows * (t + 4), cols * (t + 4), 3), 128, np.uint8)
    for i in range(b):
        r, c = divmod(i, cols)
        tile = np.full((t, t, 3), 128, np.uint8)
        if gt["valid"][i]:
            rgb = np.clip(images[i], 0, 255).astype(np.uint8)
            tile = cv2.cvtColor(cv2.resize(rgb, (t, t), interpolation=cv2.INTER_NEAREST), cv2.COLOR_RGB2BGR)
            for j in range(int(gt["num_boxes"][i])):
                y0, x0, y1, x1 = (gt["boxes"][i, j] * zoom).round().astype(int)
                colour = (0, 0, 255) if gt["is_crowd"][i, j] else (0, 255, 0)
                cv2.rectangle(tile, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, 1)
                k = int(gt["classes"][i, j])
                label = class_names[k] if 0 <= k < len(class_names) else str(k)
                if gt["depth"][i, j] > 0:
                    label += f" {gt['depth'][i, j]:.1f}m"
                cv2.putText(tile, label, (x0, max(9, y0 - 2)), cv2.FONT_HERSHEY_PLAIN, 0.8, colour, 1)
            cv2.putText(tile, f"id {int(gt['image_id'][i])}", (2, t - 4), cv2.FONT_HERSHEY_PLAIN,
                        0.8, (255, 255, 255), 1)
        y, x = r * (t + 4) + 2, c * (t + 4) + 2
        grid[y:y + t, x:x + t] = tile
    return grid


def train_boxes(cfg, sample: int):
    """Train boxes in network-input pixels (letterbox, no augmentation); tfds: the first ``sample`` images."""
    import numpy as np

    from detector.targets.anchor_fit import network_boxes

    if cfg.data.source != "tfds":
        from detector.data.sources import load_records

        return network_boxes(load_records(cfg, "train")[0], cfg.data.image_size)
    import dataclasses

    from detector.data.tfds_source import image_hw, tfds_dataset

    n = min(sample, cfg.data.max_images or sample)
    small = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_images=n))
    ds, _ = tfds_dataset(small, cfg.data.train_split, training=False)
    out = []
    for e in ds.map(lambda e: dict(e, hw=image_hw(e["image"]))).as_numpy_iterator():
        h, w = e["hw"]
        b = np.asarray(e["boxes"], np.float64).reshape(-1, 4)
        x0, y0 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
        x1, y1 = np.clip(b[:, 0] + b[:, 2], 0, w), np.clip(b[:, 1] + b[:, 3], 0, h)
        keep = (x1 > x0) & (y1 > y0) & ~np.asarray(e["is_crowd"], bool)
        out.append(np.stack([y0, x0, y1, x1], 1)[keep] * (cfg.data.image_size / max(h, w)))
    return np.concatenate(out) if out else np.zeros((0, 4))


def anchor_report(cfg, fit: bool, sample: int) -> bool:
    """Print the anchors' best possible recall (and with ``fit`` the best layouts); True if no boxes."""
    from detector.targets.anchor_fit import advice, anchor_recall, fit_anchors

    boxes = train_boxes(cfg, sample)
    if not len(boxes):
        print("anchor fit: the train split has no boxes")
        return True
    report = anchor_recall(boxes, cfg)
    for line in report.lines():
        print(line)
    warning = advice(report, cfg)
    if warning:
        print(f"warning: {warning}")
    if fit:
        fits = fit_anchors(boxes, cfg.data.image_size, cfg.matching.positive_iou)
        print(f"anchor layouts that fit best (recall at IoU >= {cfg.matching.positive_iou:g}, anchors per image):")
        for f in fits[:5]:
            print(f"  recall {f.recall:.3f}, {f.num_anchors} anchors: " + " ".join(f"--set {o}" for o in f.overrides()))
        print("as config lines (best):\n" + fits[0].yaml())
    return False


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--batches", type=int, default=20, help="batches to time after the warm-up batch")
    parser.add_argument("--out", help="output folder for batch0.jpg (required unless --fit-anchors)")
    parser.add_argument("--fit-anchors", action="store_true",
                        help="search anchor settings that fit the train boxes and print them, then stop")
    parser.add_argument("--anchor-sample", type=int, default=5000,
                        help="tfds sources: train images read for the anchor statistics")
    args = parser.parse_args(argv)
    if not args.out and not args.fit_anchors:
        parser.error("--out is required (unless --fit-anchors)")
    cfg = config_from_args(args)
    if args.batches < 0:
        raise UserError(f"--batches {args.batches}: must be 0 or more")
    out = output_dir(args.out, "--out") if args.out else None
    if anchor_report(cfg, args.fit_anchors, args.anchor_sample) or args.fit_anchors:
        return 0

    import cv2
    import tensorflow as tf

    from detector.data import PipelineStats, dataset_info, make_dataset
    from detector.data.augment import NO_READABLE_IMAGES

    info = dataset_info(cfg)
    print(f"dataset: {info.source}, {info.num_train} train / {info.num_val} val images, "
          f"{len(info.class_names)} classes; val GT: {info.gt_json}")
    stats = PipelineStats()
    ds = make_dataset(cfg, args.split, training=args.split == "train", stats=stats)
    it = iter(ds)
    try:
        first = next(it)
    except StopIteration:
        raise UserError(f"the {args.split} split gave no batch: {stats.summary()}") from None
    except tf.errors.OpError as e:
        if NO_READABLE_IMAGES not in str(e):
            raise
        raise UserError(f"{args.split} split: {str(e)[str(e).index(NO_READABLE_IMAGES):].splitlines()[0]}") from None
    ok, jpg = cv2.imencode(".jpg", draw_batch(first, cfg.data.classes), [cv2.IMWRITE_JPEG_QUALITY, 95])
    write_bytes(out / "batch0.jpg", jpg.tobytes())
    print(f"wrote {out / 'batch0.jpg'}")
    images, t0 = 0, time.perf_counter()
    for _ in range(args.batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        images += int(batch["gt"]["valid"].numpy().sum())
    elapsed = time.perf_counter() - t0
    # Stop the iterator's background threads before interpreter shutdown: a
    # tf.numpy_function still running during finalisation can hang the exit.
    del it, ds
    gc.collect()
    print(f"pipeline: {stats.summary()}")
    print(f"images/s: {images / max(elapsed, 1e-9):.1f}")
    return 0

