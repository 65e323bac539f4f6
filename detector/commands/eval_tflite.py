"""``detector eval --config CFG --tflite FILE [--json]``: COCO mAP + depth error of a ``.tflite``.

Not a subcommand of its own: :mod:`detector.commands.eval` hands ``--tflite`` here.
The file runs on the config's val split through the evaluation preprocessing, one
image per invoke, and is scored by the same metric code as a Keras checkpoint
(:func:`detector.inference.evaluate.evaluate_runner`); ``--per-class`` and
``--plots DIR`` work as for a Keras model.  Files exported with the post-processing inside
give their own detections; raw-head files are decoded with the project's Python
decode + NMS using the config's anchors and ``eval.*`` settings.  Prints the 12-line
COCO table and the depth error; ``--json`` prints one object with the 12 stats and
``depth_error`` (null without matches).  A missing file, a file that is not a
TFLite model, or one built for another input size / class list exits 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from detector.errors import UserError


def evaluate_tflite(cfg, path: str, as_json: bool = False, per_class: bool = False,
                    plots: Path | None = None) -> int:
    from detector.data import make_dataset
    from detector.evaluation import format_table
    from detector.evaluation.params import STAT_NAMES
    from detector.export.tflite_runner import TFLiteRunner
    from detector.inference.evaluate import evaluate_runner
    from detector.inference.loading import open_tflite
    from detector.targets.anchors import anchors_for_config

    detector = open_tflite(path, "--tflite")
    p = detector.model_path
    if detector.image_size != cfg.data.image_size:
        raise UserError(f"--tflite {path}: the model takes {detector.image_size} px images, but the config has "
                        f"data.image_size = {cfg.data.image_size}")
    if detector.labels is not None and list(detector.labels) != list(cfg.data.classes):
        raise UserError(f"--tflite {path}: the model's labels {detector.labels} differ from data.classes "
                        f"{list(cfg.data.classes)}")
    print(f"evaluating {p} ({detector.postprocess} post-processing) on the val split", file=sys.stderr, flush=True)
    runner = TFLiteRunner(detector, cfg, anchors_for_config(cfg))
    val = make_dataset(cfg, "val", training=False)
    stats, data = evaluate_runner(runner, val, cfg.data.classes)
    coco = {k: float(stats[k]) for k in STAT_NAMES}
    depth = None if math.isnan(stats["depth_error"]) else float(stats["depth_error"])
    rows = None
    if per_class or plots is not None:
        from detector.visualize.per_class import format_per_class, json_rows, per_class_table

        rows = per_class_table(data)
    if plots is not None:
        from detector.visualize.report import write_model_eval_plots

        written = write_model_eval_plots(cfg, runner, data, plots, val, title=p.name, table_stream=None)
        print(f"plots written to {plots}: {', '.join(written)}", file=sys.stderr)
    if as_json:
        print(json.dumps({**coco, "depth_error": depth, **({"per_class": json_rows(rows)} if per_class else {})}))
        return 0
    print(format_table(coco))
    print(" Depth error (mean |d - d_gt| / d_gt, IoU>=0.50 matches)       = "
          + (f"{depth:0.3f}" if depth is not None else "n/a (no matches with known depth)"))
    if per_class:
        print("\n" + format_per_class(rows))
    return 0
