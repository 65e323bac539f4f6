"""Exact COCO box mAP (pycocotools COCOeval iouType='bbox' numbers, faster).

File mode (numpy only, never imports TensorFlow):

    python tools/eval.py --gt instances_val.json --detections results.json [--json] [--per-class]

``--detections`` is a COCO results list ``[{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}, ...]``, the same input ``COCO.loadRes`` takes.  Prints pycocotools' 12-line
table; with ``--json`` stdout is exactly one JSON object with the keys AP AP50 AP75 APs
APm APl AR1 AR10 AR100 ARs ARm ARl (-1 where pycocotools gives -1).  Bad input exits
with code 2 and a message naming the file and the entry.

Model mode (``--config CFG --checkpoint PATH [--verify-pycocotools]
[--save-detections FILE]``) is parsed but not available yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.cli import UserError, add_config_args, run_main  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Exact COCO box mAP (pycocotools-identical numbers).")
    files = p.add_argument_group("file mode")
    files.add_argument("--gt", type=Path, help="COCO instances JSON (images, annotations, categories)")
    files.add_argument("--detections", type=Path, help="COCO results list JSON")
    files.add_argument("--ignore-unknown-categories", action="store_true",
                       help="drop detections whose category_id is not in the GT (pycocotools does "
                            "this silently); by default they are an error")
    model = p.add_argument_group("model mode (not available yet)")
    add_config_args(model, required=False)
    model.add_argument("--checkpoint", help="model checkpoint to evaluate")
    model.add_argument("--verify-pycocotools", action="store_true",
                       help="also run pycocotools and check the numbers agree")
    model.add_argument("--save-detections", type=Path, help="write the detections as a COCO results list")
    p.add_argument("--json", action="store_true", help="print one JSON object with the 12 stats")
    p.add_argument("--per-class", action="store_true", help="also print AP per category (table mode)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config or args.checkpoint or args.save_detections or args.verify_pycocotools:
        raise UserError("model mode (--config/--checkpoint/--save-detections/--verify-pycocotools) "
                        "is not available yet; evaluate files with --gt GT.json --detections DT.json")
    if args.gt is None or args.detections is None:
        raise UserError("file mode needs both --gt GT.json and --detections DT.json")
    return evaluate_file_mode(args.gt, args.detections, as_json=args.json, per_class=args.per_class,
                              ignore_unknown_categories=args.ignore_unknown_categories)


def evaluate_file_mode(gt_path: Path, dt_path: Path, as_json: bool = False, per_class: bool = False,
                       ignore_unknown_categories: bool = False) -> int:
    from detector.evaluation import evaluate_files, format_table

    t0 = time.perf_counter()
    result, gt = evaluate_files(gt_path, dt_path, ignore_unknown_categories)
    stats = result.stats()
    print(f"evaluated {len(gt.image_ids)} images, {len(gt.category_ids)} categories in "
          f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    if as_json:
        print(json.dumps(stats))
        return 0
    print(format_table(stats))
    if per_class:
        print("\ncategory_id  AP      name")
        for cid, name, ap in zip(gt.category_ids, gt.category_names, result.per_class_ap()):
            print(f"{cid:>11d}  {ap:6.3f}  {name}")
    return 0


if __name__ == "__main__":
    run_main(main)
