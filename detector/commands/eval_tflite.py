"""``detector eval --config CFG --tflite FILE [--json]``: COCO mAP + depth error of a ``.tflite``.

Not a subcommand of its own: :mod:`detector.commands.eval` hands ``--tflite`` here.
The file runs on the config's val split through the evaluation preprocessing, one
image per invoke, and is scored by the same metric code as a Keras checkpoint
(:mod:`detector.export.accuracy`).  Files exported with the post-processing inside
give their own detections; raw-head files are decoded with the project's Python
decode + NMS using the config's anchors and ``eval.*`` settings.  Prints the 12-line
COCO table and the depth error; ``--json`` prints one object with the 12 stats and
``depth_error`` (null without matches).  A missing file, a file that is not a
TFLite model, or one built for another input size / class list exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from detector.errors import UserError


def evaluate_tflite(cfg, path: str, as_json: bool = False) -> int:
    from detector.evaluation import format_table
    from detector.evaluation.params import STAT_NAMES
    from detector.export import accuracy
    from detector.export.tflite_runner import TFLiteDetector, TFLiteRunner
    from detector.targets.anchors import anchors_for_config

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--tflite {path}: no such file")
    try:
        runner = TFLiteDetector(p)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"--tflite {path}: cannot load it as a TFLite model: {str(e)[:300]}") from None
    if runner.image_size != cfg.data.image_size:
        raise UserError(f"--tflite {path}: the model takes {runner.image_size} px images, but the config has "
                        f"data.image_size = {cfg.data.image_size}")
    if runner.labels is not None and list(runner.labels) != list(cfg.data.classes):
        raise UserError(f"--tflite {path}: the model's labels {runner.labels} differ from data.classes "
                        f"{list(cfg.data.classes)}")
    print(f"evaluating {p} ({runner.postprocess} post-processing) on the val split", file=sys.stderr, flush=True)
    result = accuracy.evaluate(cfg, TFLiteRunner(runner, cfg, anchors_for_config(cfg)), p.name)
    coco = {k: result.stats[k] for k in STAT_NAMES}
    depth = result.stats.get("depth_error")
    if as_json:
        print(json.dumps({**coco, "depth_error": depth}))
        return 0
    print(format_table(coco))
    print(" Depth error (mean |d - d_gt| / d_gt, IoU>=0.50 matches)       = "
          + (f"{depth:0.3f}" if depth is not None else "n/a (no matches with known depth)"))
    return 0
