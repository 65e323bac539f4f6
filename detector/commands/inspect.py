"""Look at the input pipeline and measure its throughput.

    python tools/inspect_data.py --config synthetic.yaml [--set key=value ...]
        [--split train|val] [--batches N] --out DIR

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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--batches", type=int, default=20, help="batches to time after the warm-up batch")
    parser.add_argument("--out", required=True, help="output folder for batch0.jpg")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.batches < 0:
        raise UserError(f"--batches {args.batches}: must be 0 or more")
    out = output_dir(args.out, "--out")

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

