"""COCO mAP + depth error of the Keras model and of ``.tflite`` files on the same val
images, the side-by-side report and the INT8 accuracy gate.

Every model is scored by the project's metric code, exactly as
:class:`detector.training.detection_eval.DetectionEvaluator` scores the Keras model:
the config's val split through the evaluation pipeline (letterbox, every image once),
detections in network-input pixels mapped back to original-image COCO boxes
(``network_to_original_xywh``), the streaming COCO matcher
(:class:`detector.metrics.coco_map.MeanAveragePrecision`, pycocotools-identical) and
the depth error on matched detections (:class:`detector.evaluation.depth.DepthError`).
What differs is only who produces the detections:

- Keras: ``model(images)`` + :func:`detector.model.decode_detections` (the Python
  decode + batched NMS used in training / ``detector eval``);
- ``.tflite`` with the post-processing inside: the file's own outputs, one image per invoke;
- raw-head ``.tflite``: its outputs + the same :func:`decode_detections`.

AP values are on the 0-1 scale internally (as ``detector eval``); the report and the
gate (``max_ap_drop``) use points, i.e. 100 x AP.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DetectFn = Callable[[np.ndarray], dict]   # float32 [B,S,S,3] -> boxes [B,D,4] yxyx net px, scores, classes, depth


def keras_detect_fn(model, cfg) -> DetectFn:
    """The Keras model + the project's Python decode + NMS (batched, traced once)."""
    import tensorflow as tf

    from detector.model import decode_detections

    anchors = tf.constant(model.anchors(), tf.float32)
    scale_factors = tuple(model.config_tree.model.box_scale_factors)

    @tf.function(reduce_retracing=True)
    def run(images):
        dets = decode_detections(model(images, training=False), anchors, cfg.eval, scale_factors)
        return {k: dets[k] for k in ("boxes", "scores", "classes", "depth")}

    return lambda images: {k: v.numpy() for k, v in run(tf.convert_to_tensor(images, tf.float32)).items()}


def tflite_detect_fn(runner, cfg, anchors: np.ndarray | None = None) -> DetectFn:
    """A :class:`~detector.export.tflite_runner.TFLiteDetector`, one invoke per image.

    Raw-head files need ``anchors`` (float32 ``[N, 4]``) for the Python decode."""
    max_det = int(cfg.eval.max_detections)
    decode = None
    if runner.postprocess == "none":
        import tensorflow as tf

        from detector.model import decode_detections

        if anchors is None:
            raise ValueError("a raw-head .tflite needs the anchors to be decoded")
        anchors_t = tf.constant(anchors, tf.float32)
        scale_factors = tuple(cfg.model.box_scale_factors)

        @tf.function(reduce_retracing=True)
        def decode(raw):
            dets = decode_detections(raw, anchors_t, cfg.eval, scale_factors)
            return {k: dets[k] for k in ("boxes", "scores", "classes", "depth")}

    def run(images):
        per_image = []
        for image in images:
            out = runner(image)
            if decode is not None:
                per_image.append({k: v.numpy()[0] for k, v in decode({k: v[None] for k, v in out.items()}).items()})
                continue
            d = {k: out[k] for k in ("boxes", "scores", "classes", "depth")}
            if d["scores"].shape[0] != max_det:
                raise ValueError(f"{runner.model_path}: {d['scores'].shape[0]} detection slots, but "
                                 f"eval.max_detections is {max_det}; export with the same config")
            per_image.append(d)
        return {k: np.stack([d[k] for d in per_image]) for k in per_image[0]}

    return run


@dataclass
class AccuracyResult:
    """Stats on the val split: ``stats`` (the 12 COCO stats, 0-1, plus ``depth_error``),
    ``images``, ``seconds``."""

    name: str
    stats: dict
    images: int
    seconds: float
    extra: dict = field(default_factory=dict)


def evaluate(cfg, detect: DetectFn, name: str = "", val_dataset=None, progress: bool = True) -> AccuracyResult:
    """Score ``detect`` on the config's val split (every image once, padding skipped)."""
    import tensorflow as tf

    from detector.data import dataset_info, make_dataset
    from detector.evaluation.depth import DepthError
    from detector.metrics.coco_map import MeanAveragePrecision
    from detector.training.detection_eval import network_to_original_xywh

    ds = val_dataset if val_dataset is not None else make_dataset(cfg, "val", training=False)
    num_val = dataset_info(cfg).num_val or 0
    max_det = int(cfg.eval.max_detections)
    capacity = max(2 ** 18, (num_val + cfg.eval.batch_size) * max_det)
    metric = MeanAveragePrecision(cfg.num_classes, max_detections_per_image=max_det, capacity=capacity)
    update = tf.function(lambda gt, dets, valid: metric.update_state(gt, dets, valid=valid))
    depth = DepthError()
    t0, images = time.perf_counter(), 0
    for batch in ds:
        gt = batch["gt"]
        gt_np = {k: v.numpy() for k, v in gt.items()}
        valid = gt_np["valid"]
        x = batch["images"].numpy()
        dets = {"boxes": np.zeros((len(x), max_det, 4), np.float32), "scores": np.zeros((len(x), max_det), np.float32),
                "classes": np.full((len(x), max_det), -1, np.int32), "depth": np.zeros((len(x), max_det), np.float32)}
        if valid.any():
            got = detect(x[valid])
            for k in dets:
                dets[k][valid] = got[k]
        dets_np = {"boxes_xywh": network_to_original_xywh(dets["boxes"], gt_np["scale"], gt_np["original_size"]),
                   "scores": dets["scores"], "classes": dets["classes"].astype(np.int32), "depth": dets["depth"]}
        update(gt, {k: dets_np[k] for k in ("boxes_xywh", "scores", "classes")}, gt["valid"])
        depth.update(gt_np, dets_np, valid)
        images += int(valid.sum())
    stats = {k: float(v) for k, v in metric.result().items()}
    stats["depth_error"] = depth.result() if depth.count else None
    seconds = time.perf_counter() - t0
    if progress:
        print(f"  {name or 'model'}: {images} val images in {seconds:.1f} s", file=sys.stderr, flush=True)
    return AccuracyResult(name, stats, images, seconds, {"depth_pairs": depth.count})


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
