"""The metadata sidecar ``FILE.tflite.json`` written next to every exported model.

Keys (all always present; ``null`` where not applicable)::

    format            "detector-tflite-metadata/1"
    model_file        file name of the .tflite, size_bytes, sha256
    precision         "int8" | "float" | "fp16"
    labels            class names; class id k is labels[k] (no background slot)
    input             {name, shape [1,S,S,3], dtype "float32", layout "NHWC", color "RGB",
                       range [0, 255], normalisation (done inside the model), letterbox}
    outputs           {name: {shape, dtype, meaning}} by signature output name
    postprocess       "inside" | "none"
    nms               {score_threshold, nms_iou, pre_nms_top_k, max_detections, class_agnostic}
    box_coder         {format, scale_factors, anchors: {count, min_level, max_level, num_scales,
                       aspect_ratios, anchor_size}}
    quantization      {weights, activations, float_nodes (kept in float), ...} or null (float)
    calibration       {count, requested, seed, split, source, preprocessing, image_ids} or null
    accuracy          the report rows (AP etc. on the val split) and the gate verdict, or null
    source            {checkpoint, config name}
    versions          tensorflow, keras, ai_edge_litert, numpy, detector, python, git commit
    created_utc       ISO time
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import subprocess
from pathlib import Path

from detector.export.postprocess import OUTPUT_NAMES

FORMAT = "detector-tflite-metadata/1"
REQUIRED_KEYS = ("format", "model_file", "precision", "labels", "input", "outputs", "postprocess", "nms",
                 "box_coder", "quantization", "calibration", "accuracy", "source", "versions", "created_utc")

_OUTPUT_MEANING = {
    "boxes": "[ymin, xmin, ymax, xmax] network-input pixels, clipped to [0, S]; padding rows 0",
    "classes": "class index into labels; -1 on padding rows",
    "scores": "sigmoid score, descending; 0 on padding rows",
    "depth": "metres; 0 on padding rows",
    "num_detections": "number of valid leading rows",
    "cls_logits": "class logits per anchor (sigmoid gives the score), no background slot",
    "box": "box codes [ty, tx, th, tw] per anchor (see box_coder)",
}


def _versions() -> dict:
    from importlib import metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    commit = None
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"tensorflow": version("tensorflow") or version("tensorflow-cpu"), "keras": version("keras"),
            "ai_edge_litert": version("ai-edge-litert"), "numpy": version("numpy"), "detector": version("detector"),
            "python": platform.python_version(), "git_commit": commit}


def output_spec(runner) -> dict:
    """``{name: {shape, dtype, meaning}}`` read from the converted model's signature."""
    details = runner._runner.get_output_details()  # noqa: SLF001
    return {name: {"shape": [int(v) for v in d["shape"]], "dtype": d["dtype"].__name__,
                   "meaning": _OUTPUT_MEANING.get(name, "log-metres per anchor" if runner.postprocess == "none"
                                                  and name == "depth" else "")}
            for name, d in sorted(details.items())}


def build_metadata(*, model_path: Path, precision: str, cfg, model, runner, postprocess: str,
                   quantization: dict | None, calibration: dict | None, accuracy: dict | None,
                   checkpoint: str) -> dict:
    m = model.config_tree.model
    data = Path(model_path).read_bytes()
    size = int(model.image_size)
    meta = {
        "format": FORMAT,
        "model_file": {"name": Path(model_path).name, "size_bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()},
        "precision": precision,
        "labels": list(model.class_names),
        "input": {"name": runner.input_name, "shape": list(runner.input_shape), "dtype": runner.input_dtype.name,
                  "layout": "NHWC", "color": "RGB", "range": [0, 255],
                  "normalisation": "none needed: feed raw 0..255 pixel values; the model normalises inside",
                  "letterbox": f"scale the image by {size} / max(h, w), place it at the top-left of a "
                               f"{size}x{size} zero canvas; divide output boxes by that scale"},
        "outputs": output_spec(runner),
        "postprocess": postprocess,
        "nms": {"score_threshold": cfg.eval.score_threshold, "nms_iou": cfg.eval.nms_iou,
                "pre_nms_top_k": cfg.eval.pre_nms_top_k, "max_detections": cfg.eval.max_detections,
                "class_agnostic": cfg.eval.class_agnostic_nms,
                "suppression": "greedy, a box is dropped when IoU > nms_iou with a kept higher-scoring box "
                               "of the same class (per-class unless class_agnostic)"},
        "box_coder": {"format": "codes [ty, tx, th, tw] vs anchors [ymin, xmin, ymax, xmax]: "
                                "ty = (yc - yc_a) / h_a * sy, th = log(h / h_a) * sh",
                      "scale_factors": list(m.box_scale_factors),
                      "anchors": {"count": int(model.anchors().shape[0]), "min_level": m.min_level,
                                  "max_level": m.max_level, "num_scales": m.anchors.num_scales,
                                  "aspect_ratios": list(m.anchors.aspect_ratios),
                                  "anchor_size": m.anchors.anchor_size}},
        "quantization": quantization,
        "calibration": calibration,
        "accuracy": accuracy,
        "source": {"checkpoint": str(checkpoint), "config": cfg.name},
        "versions": _versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    assert not missing, missing
    return meta


def write_metadata(path: Path, meta: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


__all__ = ["FORMAT", "REQUIRED_KEYS", "OUTPUT_NAMES", "build_metadata", "write_metadata"]
