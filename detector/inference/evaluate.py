"""Evaluate any model runner on a val dataset: exact COCO stats, depth error and plot data.

:func:`evaluate_runner` is the runtime-agnostic twin of the training evaluator: it feeds
the val pipeline's letterboxed images (uint8) to a
:class:`~detector.inference.runner.ModelRunner` (Keras here; a TFLite interpreter the same
way), maps the network boxes to original-image COCO boxes exactly as the evaluator does
(divide by the letterbox scale, clip), and collects everything into an
:class:`~detector.visualize.evaldata.EvalData` (so ``write_eval_plots`` applies unchanged).
For a Keras runner the 12 stats equal ``DetectionEvaluator``'s.
"""

from __future__ import annotations

import numpy as np


def evaluate_runner(runner, dataset, class_names, max_batches: int | None = None):
    """``(stats, data)``: the 12 COCO stats plus ``depth_error`` (NaN without matches), and the
    :class:`EvalData` of the whole split.

    Args:
      runner: a model runner (``runner(uint8 [B,S,S,3]) -> detections in network px``); a
        runner with ``max_batch`` smaller than the dataset's batch gets the batch in slices.
      dataset: the val pipeline (``make_dataset(cfg, "val", training=False)``).
      class_names: K names (class index order).
    """
    from detector.evaluation.depth import DepthError
    from detector.evaluation.evaluator import network_to_original_xywh
    from detector.visualize.evaldata import EvalCollector

    collector, depth = EvalCollector(), DepthError()
    for i, batch in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        gt = {k: v.numpy() for k, v in batch["gt"].items()}
        images = np.clip(np.round(batch["images"].numpy()), 0, 255).astype(np.uint8)
        step = runner.max_batch or len(images)
        parts = [runner(images[j:j + step]) for j in range(0, len(images), step)]
        out = {k: np.concatenate([p[k] for p in parts]) for k in ("boxes", "scores", "classes", "depth")}
        dets = {"boxes_xywh": network_to_original_xywh(out["boxes"], gt["scale"], gt["original_size"]),
                "scores": out["scores"].astype(np.float32), "classes": out["classes"].astype(np.int32),
                "depth": out["depth"].astype(np.float32)}
        collector(gt, dets)
        depth.update(gt, dets, gt["valid"])
    data = collector.data(class_names)
    stats = data.result.stats()
    stats["depth_error"] = depth.result()
    return stats, data
