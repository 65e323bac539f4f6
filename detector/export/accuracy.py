"""COCO mAP + depth error of the Keras model and of ``.tflite`` files on the same val
images, the side-by-side report and the INT8 accuracy gate.

Every model is scored by :func:`detector.inference.evaluate.evaluate_runner`, which gives
the same numbers as :class:`detector.evaluation.evaluator.DetectionEvaluator` (tested):
the config's val split through the evaluation pipeline (letterbox, every image once),
detections in network-input pixels mapped back to original-image COCO boxes
(``network_to_original_xywh``), the exact pycocotools-identical matching of
:mod:`detector.evaluation`, and the depth error on matched detections
(:class:`detector.evaluation.depth.DepthError`).
What differs is only the model runner that produces the detections:

- Keras (:class:`~detector.inference.runner.KerasRunner`): ``model(images)`` +
  :func:`detector.model.decode_detections` (the Python decode + batched NMS used in
  training / ``detector eval``);
- ``.tflite`` (:class:`~detector.export.tflite_runner.TFLiteRunner`) with the
  post-processing inside: the file's own outputs, one image per invoke; raw-head: its
  outputs + the same :func:`decode_detections`.

AP values are on the 0-1 scale internally (as ``detector eval``); the report and the
gate (``max_ap_drop``) use points, i.e. 100 x AP.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AccuracyResult:
    """Stats on the val split: ``stats`` (the 12 COCO stats, 0-1, plus ``depth_error``),
    ``images``, ``seconds``."""

    name: str
    stats: dict
    images: int
    seconds: float
    extra: dict = field(default_factory=dict)


def evaluate(cfg, runner, name: str = "", val_dataset=None, progress: bool = True) -> AccuracyResult:
    """Score a model runner (:class:`~detector.inference.runner.KerasRunner`,
    :class:`~detector.export.tflite_runner.TFLiteRunner`) on the config's val split with
    :func:`detector.inference.evaluate.evaluate_runner` (every image once, padding skipped)."""
    import math

    from detector.data import make_dataset
    from detector.inference.evaluate import evaluate_runner

    ds = val_dataset if val_dataset is not None else make_dataset(cfg, "val", training=False)
    t0 = time.perf_counter()
    stats, data = evaluate_runner(runner, ds, cfg.data.classes)
    stats = {k: float(v) for k, v in stats.items()}
    if math.isnan(stats["depth_error"]):
        stats["depth_error"] = None
    seconds = time.perf_counter() - t0
    if progress:
        print(f"  {name or 'model'}: {data.num_images} val images in {seconds:.1f} s", file=sys.stderr, flush=True)
    return AccuracyResult(name, stats, data.num_images, seconds)


# --------------------------------------------------------------------------- report + gate


def points(ap: float) -> float:
    return 100.0 * ap


def format_report(rows: list[dict], reference: str = "keras") -> str:
    """Side-by-side table; each row ``{"name", "stats", "size_bytes" (or None)}``; deltas vs ``reference``."""
    ref = next((r for r in rows if r["name"] == reference), rows[0])
    head = f"{'model':<22} {'AP':>6} {'AP50':>6} {'APs':>6} {'depth err':>9} {'dAP':>6} {'dAP50':>6} {'ddepth':>7} " \
           f"{'size':>10} {'x float':>7}"
    lines = [head, "-" * len(head)]
    float_size = next((r["size_bytes"] for r in rows if r["name"] == "tflite float" and r["size_bytes"]), None)
    for r in rows:
        s, f = r["stats"], ref["stats"]
        de = s.get("depth_error")
        fde = f.get("depth_error")
        ddepth = f"{de - fde:+7.4f}" if de is not None and fde is not None else f"{'n/a':>7}"
        size = f"{r['size_bytes'] / 1e6:8.3f}MB" if r.get("size_bytes") else f"{'-':>10}"
        ratio = f"{r['size_bytes'] / float_size:7.2f}" if r.get("size_bytes") and float_size else f"{'-':>7}"
        lines.append(f"{r['name']:<22} {points(s['AP']):6.2f} {points(s['AP50']):6.2f} {points(s['APs']):6.2f} "
                     f"{(f'{de:9.4f}' if de is not None else 'n/a'):>9} "
                     f"{points(s['AP'] - f['AP']):+6.2f} {points(s['AP50'] - f['AP50']):+6.2f} {ddepth} {size} {ratio}")
    return "\n".join(lines)


def gate(reference: dict, candidate: dict, max_ap_drop: float) -> tuple[bool, str]:
    """``(passed, message)``: ``candidate`` AP may be at most ``max_ap_drop`` points below ``reference``."""
    drop = points(reference["AP"] - candidate["AP"])
    ok = drop <= max_ap_drop
    verdict = "PASS" if ok else "FAIL"
    return ok, (f"accuracy gate {verdict}: INT8 AP {points(candidate['AP']):.2f} vs float Keras "
                f"{points(reference['AP']):.2f} (drop {drop:+.2f} points, allowed {max_ap_drop:.2f})")


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size
