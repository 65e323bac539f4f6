"""Run a trained model on your own images.

    python tools/predict.py --checkpoint RUN_DIR|MODEL.keras|CKPT_PREFIX --source FILE|DIR|GLOB
        [--out DIR] [--score 0.3] [--save-json] [--image-ids FILE] [--config CFG] [--set k=v ...]

Writes ``OUT/<image name>.jpg`` for every image: the detections with score >= ``--score``
drawn on the original image (class, score, depth in metres).  ``--save-json`` also writes
``OUT/predictions.json``, a COCO results list (``image_id``, ``category_id``, ``bbox``
``[x, y, w, h]`` in ORIGINAL image pixels, ``score``, plus ``depth``) of every detection
with score >= ``--json-score`` (default: the config's ``eval.score_threshold``, 0.05: mAP
needs the low-scoring detections too), and ``OUT/image_ids.json`` (file name -> id).

Image ids: ``--image-ids FILE`` takes them from a COCO instances JSON (by file name; its
categories are matched to the model's classes by name) or a ``{"name.jpg": id}`` object;
otherwise they are 1..N in sorted path order.  To re-evaluate predictions of a dataset's
val images, pass that split's GT file and evaluate the results with it::

    detector inspect --config CFG --out /tmp/x        # prints "val GT: <path of the GT JSON>"
    detector predict --checkpoint RUN --source 'VAL_IMAGES/*.jpg' --image-ids GT.json --save-json --out P
    detector eval --gt GT.json --detections P/predictions.json

(the same letterbox, model and NMS settings as ``detector eval --checkpoint RUN``, so the
numbers agree with model mode when the source holds exactly the split's images).

The model: a run directory (its model.keras; its config.yaml supplies the eval / NMS
settings), a ``.keras`` file (its own config; eval settings default unless ``--config``),
a checkpoint prefix (needs ``--config``), or a ``.tflite`` file from ``detector export``
(with the post-processing inside, its metadata sidecar is enough; raw-head files need
``--config``).  Images of any size and orientation (EXIF
applied).  The last line is the speed: pre-process / inference / post-process ms per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from detector.commands.common import add_config_args
from detector.errors import UserError


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run dir, .keras file, checkpoint prefix or .tflite file")
    p.add_argument("--source", required=True, help="an image file, a folder of images, or a glob pattern")
    p.add_argument("--out", type=Path, help="output folder (default runs/predict-<timestamp>)")
    p.add_argument("--score", type=float, default=0.3, help="draw detections with at least this score")
    p.add_argument("--save-json", action="store_true", help="write OUT/predictions.json (COCO results)")
    p.add_argument("--json-score", type=float, help="min score in predictions.json (default eval.score_threshold)")
    p.add_argument("--image-ids", type=Path, help="COCO instances JSON or {name: id} JSON giving the image ids")
    p.add_argument("--batch", type=int, default=1, help="images per model call")
    add_config_args(p, required=False)
    return p


def load_predict_model(checkpoint: str, config: str | None, overrides: list[str]):
    """``(model, cfg)`` for ``--checkpoint`` (see the module docstring)."""
    from detector.config import load_config
    from detector.inference.loading import load_checkpoint, resolve_checkpoint

    kind, path, run_dir = resolve_checkpoint(checkpoint)
    cfg = None
    if config:
        cfg = load_config(config, overrides)
    elif run_dir is not None and (run_dir / "config.yaml").is_file():
        cfg = load_config(run_dir / "config.yaml", overrides)
    if cfg is not None:
        model, cfg, _, _ = load_checkpoint(cfg, checkpoint)
        return model, cfg
    if kind != "keras":
        raise UserError(f"--checkpoint {checkpoint}: a checkpoint needs --config (the model is built from it)")
    if overrides:
        raise UserError("--set needs --config (or a run directory with config.yaml)")
    import keras

    import detector.losses  # noqa: F401  (registers the serialisable loss classes)
    from detector.model import Detector

    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # any failure to deserialise is a bad input file
        raise UserError(f"{path}: cannot load the Keras model: {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(model, Detector):
        raise UserError(f"{path}: holds a {type(model).__name__}, not a detector model")
    return model, model.config_tree


def load_tflite_runner(path: str, config: str | None, overrides: list[str]):
    """``(runner, default json score)`` for a ``.tflite`` from ``detector export``.

    With the post-processing inside, the file and its metadata sidecar are enough; a
    raw-head file is decoded with the Python decode + NMS and needs ``--config``."""
    from detector.config import load_config
    from detector.export.tflite_runner import TFLiteRunner
    from detector.inference.loading import open_tflite

    detector = open_tflite(path, "--checkpoint")
    cfg = load_config(config, overrides) if config else None
    if cfg is None:
        if overrides:
            raise UserError("--set needs --config")
        if detector.postprocess != "inside" or not detector.labels:
            raise UserError(f"--checkpoint {path}: a raw-head model or one without a metadata sidecar needs "
                            "--config (for the classes, anchors and NMS settings)")
        nms = detector.metadata.get("nms", {})
        return TFLiteRunner(detector, None), float(nms.get("score_threshold", 0.05))
    from detector.targets.anchors import anchors_for_config

    return TFLiteRunner(detector, cfg, anchors_for_config(cfg)), cfg.eval.score_threshold


def _unique_name(path: Path, used: set[str]) -> str:
    name = f"{path.stem}.jpg"
    i = 1
    while name in used:
        i += 1
        name = f"{path.stem}_{i}.jpg"
    used.add(name)
    return name


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    from detector.inference.predict import list_sources

    paths = list_sources(args.source)      # before loading TensorFlow: a typo fails fast
    import cv2

    from detector.inference.predict import SpeedMeter, annotate, coco_entries, image_id_mapping, predict_files
    from detector.inference.runner import KerasRunner

    if args.checkpoint.endswith(".tflite"):
        runner, default_score = load_tflite_runner(args.checkpoint, args.config, args.overrides)
    else:
        model, cfg = load_predict_model(args.checkpoint, args.config, args.overrides)
        runner, default_score = KerasRunner(model, cfg.eval), cfg.eval.score_threshold
    names = tuple(runner.class_names)
    mapping = image_id_mapping(args.image_ids, names)
    out = args.out or Path("runs") / f"predict-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    json_score = default_score if args.json_score is None else args.json_score
    print(f"predicting {len(paths)} images with {args.checkpoint} ({len(names)} classes, "
          f"{runner.image_size} px input) into {out}", file=sys.stderr, flush=True)
    speed = SpeedMeter()
    results, ids, used, unmapped, drawn = [], {}, set(), [], 0
    for i, pred in enumerate(predict_files(runner, paths, args.batch, speed)):
        name = _unique_name(pred.path, used)
        cv2.imwrite(str(out / name), annotate(pred, names, args.score), [cv2.IMWRITE_JPEG_QUALITY, 92])
        drawn += int((pred.scores >= args.score).sum())
        if mapping.image_ids is None:
            image_id = i + 1
        else:
            image_id = mapping.image_ids.get(pred.path.name)
            if image_id is None:
                unmapped.append(pred.path.name)
                continue
        ids[str(pred.path)] = image_id
        results.extend(coco_entries(pred, image_id, mapping.category_ids, json_score))
    print(f"{len(paths)} annotated images in {out} ({drawn} detections with score >= {args.score:g})")
    if args.save_json:
        (out / "predictions.json").write_text(json.dumps(results))
        (out / "image_ids.json").write_text(json.dumps(ids, indent=0))
        print(f"{len(results)} detections (score >= {json_score:g}) in {out / 'predictions.json'}; "
              f"image ids: {mapping.source}")
        if unmapped:
            print(f"warning: {len(unmapped)} images are not in {args.image_ids} and are left out of "
                  f"predictions.json (first: {unmapped[0]})", file=sys.stderr)
    print(speed.line(runner.image_size, args.batch))
    return 0
