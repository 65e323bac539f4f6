"""Exact COCO box mAP (pycocotools COCOeval iouType='bbox' numbers, faster).

File mode (numpy only, never imports TensorFlow):

    python tools/eval.py --gt instances_val.json --detections results.json [--json] [--per-class]

``--detections`` is a COCO results list ``[{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}, ...]``, the same input ``COCO.loadRes`` takes.  Prints pycocotools' 12-line
table; with ``--json`` stdout is exactly one JSON object with the keys AP AP50 AP75 APs
APm APl AR1 AR10 AR100 ARs ARm ARl (-1 where pycocotools gives -1).  Bad input exits
with code 2 and a message naming the file and the entry.

Model mode (TensorFlow; the model runs over the config's val split, every image once)::

    python tools/eval.py --config CFG [--set k=v ...] --checkpoint PATH [--json]
        [--save-detections FILE] [--verify-pycocotools]

``PATH`` is a run directory (its model.keras, else checkpoints/best, else
checkpoints/last; a truncated or corrupt one is skipped for the next, with a warning
naming both), a checkpoint directory or prefix (the model is built from the
config), or a ``.keras`` file (loaded with ``safe_mode=True``; its own architecture is
used and the config only supplies data and eval settings).  Prints the 12-line table
plus the depth error on matched detections (:mod:`detector.evaluation.depth`); with
``--json`` one object with the 12 keys and ``depth_error`` (null without matches).
Detections are written as a COCO results list (plus ``"depth"`` metres per entry;
bbox/score are the float32 values the metric saw) to ``--save-detections``, by
default ``<run_dir>/detections_val.json`` when a run directory was given.
``--verify-pycocotools`` runs pycocotools COCOeval on the GT file and the saved list
and exits 1 if any stat differs by more than 1e-12.  Bad paths and checkpoints that
do not fit the config exit 2.

``--plots DIR`` (both modes) writes the evaluation plots of :mod:`detector.visualize.report`
(PR / F1 curves, confusion matrix, labels, per_class.csv; model mode also
val_predictions.jpg).  Model mode ``--per-class`` prints the per-class table (AP, AP50,
AR100, GT count, depth error, by class name); with ``--json`` it is the object's
``"per_class"`` list.

TFLite mode: ``python tools/eval.py --config CFG --tflite FILE [--json]`` scores a file
from ``detector export`` the same way (:mod:`detector.commands.eval_tflite`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from detector.atomic import write_text
from detector.commands.common import add_config_args, config_from_args
from detector.errors import UserError

TOLERANCE = 1e-12   # --verify-pycocotools: max allowed |ours - pycocotools| per stat


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Exact COCO box mAP (pycocotools-identical numbers).")
    files = p.add_argument_group("file mode")
    files.add_argument("--gt", type=Path, help="COCO instances JSON (images, annotations, categories)")
    files.add_argument("--detections", type=Path, help="COCO results list JSON")
    files.add_argument("--ignore-unknown-categories", action="store_true",
                       help="drop detections whose category_id is not in the GT (pycocotools does "
                            "this silently); by default they are an error")
    model = p.add_argument_group("model mode")
    add_config_args(model, required=False)
    model.add_argument("--checkpoint",
                       help="run dir, checkpoint dir or prefix, or .keras file to evaluate")
    model.add_argument("--tflite", help="a .tflite file from 'detector export' to evaluate instead (see "
                                        "detector.commands.eval_tflite)")
    model.add_argument("--verify-pycocotools", action="store_true",
                       help="also run pycocotools and check the numbers agree")
    model.add_argument("--save-detections", type=Path, help="write the detections as a COCO results list")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the 12 stats (model mode: plus depth_error)")
    p.add_argument("--per-class", action="store_true", help="also print AP per category (table mode); "
                   "model mode: the per-class table (AP, AP50, AR100, GT, depth error), in the JSON with --json")
    p.add_argument("--plots", type=Path, metavar="DIR",
                   help="write pr_curve.png, f1_curve.png, confusion_matrix.png, labels.png, per_class.csv "
                        "(model mode also val_predictions.jpg) into DIR")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.tflite:
        from detector.commands.eval_tflite import evaluate_tflite

        if args.checkpoint or args.gt is not None or args.detections is not None or not args.config:
            raise UserError("--tflite FILE takes --config CFG and no --checkpoint, --gt or --detections")
        return evaluate_tflite(config_from_args(args), args.tflite, as_json=args.json, per_class=args.per_class,
                               plots=args.plots)
    if args.config or args.checkpoint or args.save_detections or args.verify_pycocotools:
        if args.gt is not None or args.detections is not None:
            raise UserError("use either file mode (--gt, --detections) or model mode (--config, "
                            "--checkpoint), not both")
        if not (args.config and args.checkpoint):
            raise UserError("model mode needs both --config CFG and --checkpoint PATH")
        if args.save_detections is not None:
            _check_output_file(args.save_detections, "--save-detections")
        return evaluate_model_mode(config_from_args(args), args.checkpoint, as_json=args.json,
                                   per_class=args.per_class, save_path=args.save_detections,
                                   verify=args.verify_pycocotools, plots=args.plots)
    if args.gt is None or args.detections is None:
        raise UserError("file mode needs both --gt GT.json and --detections DT.json")
    return evaluate_file_mode(args.gt, args.detections, as_json=args.json, per_class=args.per_class,
                              ignore_unknown_categories=args.ignore_unknown_categories, plots=args.plots)


def _check_output_file(path: Path, flag: str) -> None:
    """Fail before the work when ``path`` cannot be written: a folder, or a parent that is a file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder")


def evaluate_file_mode(gt_path: Path, dt_path: Path, as_json: bool = False, per_class: bool = False,
                       ignore_unknown_categories: bool = False, plots: Path | None = None) -> int:
    from detector.evaluation import evaluate_files, format_table

    t0 = time.perf_counter()
    data = None
    if per_class or plots is not None:   # the per-class table and plots need the matched pairs too
        from detector.visualize.evaldata import eval_data_from_files

        data = eval_data_from_files(gt_path, dt_path, ignore_unknown_categories)
        result, num_images, num_classes = data.result, data.num_images, data.num_classes
    else:
        result, gt = evaluate_files(gt_path, dt_path, ignore_unknown_categories)
        num_images, num_classes = len(gt.image_ids), len(gt.category_ids)
    stats = result.stats()
    print(f"evaluated {num_images} images, {num_classes} categories in "
          f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    if plots is not None:   # numpy + matplotlib: still no TensorFlow
        from detector.visualize.report import write_eval_plots

        written = write_eval_plots(data, plots, title=Path(dt_path).name)
        print(f"plots written to {plots}: {', '.join(written)}", file=sys.stderr)
    rows = None
    if per_class:
        from detector.visualize.per_class import format_per_class, json_rows, per_class_table

        rows = per_class_table(data)
    if as_json:
        print(json.dumps({**stats, **({"per_class": json_rows(rows)} if per_class else {})}))
        return 0
    print(format_table(stats))
    if per_class:
        print("\n" + format_per_class(rows))
    return 0


# --------------------------------------------------------------------------- model mode


def coco_results(results: list, category_ids, num_images: int | None = None):
    """A sink for DetectionEvaluator appending COCO result dicts (plus "depth") to ``results``;
    reports progress on stderr every ~10% of ``num_images``."""
    import numpy as np

    cat = np.asarray(category_ids, np.int64)
    seen = [0]

    def sink(gt, dets):
        valid = np.flatnonzero(gt["valid"])
        before, seen[0] = seen[0], seen[0] + len(valid)
        if num_images and seen[0] * 10 // num_images > before * 10 // num_images:
            print(f"  {seen[0]}/{num_images} images", file=sys.stderr, flush=True)
        for b in valid:
            image_id = int(gt["image_id"][b])
            for j in np.flatnonzero(dets["classes"][b] >= 0):   # slot order = submission order
                results.append({"image_id": image_id, "category_id": int(cat[dets["classes"][b, j]]),
                                "bbox": [float(v) for v in dets["boxes_xywh"][b, j]],
                                "score": float(dets["scores"][b, j]),
                                "depth": float(dets["depth"][b, j])})

    return sink


def evaluate_model_mode(cfg, checkpoint: str, as_json: bool = False, per_class: bool = False,
                        save_path: Path | None = None, verify: bool = False, plots: Path | None = None) -> int:
    import dataclasses
    import tempfile

    from detector.data import dataset_info, make_dataset
    from detector.data.pipeline import check_split_readable
    from detector.data.sources import with_val_gt
    from detector.evaluation import STAT_NAMES, format_table
    from detector.evaluation.evaluator import DetectionEvaluator
    from detector.inference.loading import load_checkpoint

    model, cfg, path, run_dir = load_checkpoint(cfg, checkpoint)
    if cfg.eval.steps is not None:
        print(f"note: eval.steps={cfg.eval.steps} ignored; model mode evaluates every val image",
              file=sys.stderr)
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, steps=None))
    info = dataset_info(cfg)
    check_split_readable(cfg, "val")
    if verify:
        info = with_val_gt(cfg, info)   # tfds: written from the prepared val split
    if verify and not info.gt_json:
        raise UserError(f"--verify-pycocotools: data.source {cfg.data.source} has no COCO GT file")
    if save_path is None and run_dir is not None:
        save_path = run_dir / "detections_val.json"
    print(f"evaluating {path} on {info.num_val} val images", file=sys.stderr, flush=True)
    import tensorflow as tf

    evaluator = DetectionEvaluator(cfg, tf.distribute.get_strategy(), make_dataset(cfg, "val", training=False),
                                   info.num_val)
    results: list = []
    t0 = time.perf_counter()
    from detector.visualize.evaldata import EvalCollector

    collector, to_coco = EvalCollector(), coco_results(results, info.category_ids, info.num_val)
    collect = per_class or plots is not None
    stats = evaluator(model, sink=lambda gt, dets: (to_coco(gt, dets), collect and collector(gt, dets)))
    rows = None
    if collect:   # issue 13: per-class table and plots
        from detector.visualize.per_class import format_per_class, json_rows, per_class_table

        data = collector.data(cfg.data.classes)
        rows = per_class_table(data)
    if plots is not None:
        from detector.inference.runner import KerasRunner
        from detector.visualize.report import write_model_eval_plots

        written = write_model_eval_plots(cfg, KerasRunner(model, cfg.eval), data, plots, evaluator.dataset,
                                         title=Path(path).name, table_stream=None)
        print(f"plots written to {plots}: {', '.join(written)}", file=sys.stderr)
    coco = {k: stats[k] for k in STAT_NAMES}
    depth = stats.get("depth_error")
    print(f"{len(results)} detections in {time.perf_counter() - t0:.1f} s; depth error over "
          f"{evaluator.depth_pairs} matched detections", file=sys.stderr)
    if save_path is None and verify:
        save_path = Path(tempfile.mkdtemp(prefix="detector_eval_")) / "detections_val.json"
    if save_path is not None:
        save_path = Path(save_path).expanduser()
        save_path.parent.mkdir(parents=True, exist_ok=True)
        write_text(save_path, json.dumps(results))
        print(f"detections written to {save_path}", file=sys.stderr)
    if as_json:
        print(json.dumps({**coco, "depth_error": depth, **({"per_class": json_rows(rows)} if per_class else {})}))
    else:
        print(format_table(coco))
        print(" Depth error (mean |d - d_gt| / d_gt, IoU>=0.50 matches)       = "
              + (f"{depth:0.3f}" if depth is not None else "n/a (no matches with known depth)"))
        if per_class:
            print("\n" + format_per_class(rows))
    return verify_pycocotools(info.gt_json, save_path, coco) if verify else 0


def verify_pycocotools(gt_json: str, dt_path: Path, stats: dict) -> int:
    """pycocotools COCOeval on the GT file and the saved results; 1 (loudly) on any difference."""
    from detector.evaluation.reference import pycocotools_stats, stat_differences

    ref = pycocotools_stats(gt_json, dt_path)
    bad, worst = stat_differences(stats, ref, TOLERANCE)
    if not bad:
        print(f"pycocotools agrees on all 12 stats (max |diff| {worst:.3g} <= {TOLERANCE:g})",
              file=sys.stderr)
        return 0
    lines = [f"  {k}: ours {stats[k]!r} vs pycocotools {ref[k]!r} (diff {stats[k] - ref[k]:+.3g})"
             for k in bad]
    print(f"PYCOCOTOOLS MISMATCH: {len(bad)} of 12 stats differ by more than {TOLERANCE:g} "
          f"(GT {gt_json}, detections {dt_path}):\n" + "\n".join(lines), file=sys.stderr)
    return 1

