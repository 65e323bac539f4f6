"""Convert a Pascal-VOC folder to COCO instances JSON files (one per split).

    detector voc2coco --voc-root DIR [--splits train val] [--classes a b ...] --out-dir OUT

Writes ``OUT/instances_<split>.json`` for each split list ``DIR/ImageSets/Main/<split>.txt``;
``file_name`` entries are relative to ``DIR/JPEGImages`` (see :mod:`detector.data.convert`).
Then train with ``data.source: coco_json`` (configs/coco_json_example.yaml).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voc-root", required=True, help="folder with Annotations/, JPEGImages/, ImageSets/Main/")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="split lists to convert")
    p.add_argument("--classes", nargs="+", help="class names in category-id order (default: sorted names found)")
    p.add_argument("--out-dir", required=True, help="output folder for instances_<split>.json")
    args = p.parse_args(argv)
    from detector.data.convert import voc_class_names, voc_to_coco

    classes = args.classes or sorted({n for s in args.splits for n in voc_class_names(args.voc_root, s)})
    for split in args.splits:
        out = voc_to_coco(args.voc_root, split, Path(args.out_dir) / f"instances_{split}.json", classes)
        print(f"wrote {out}")
    print(f"categories (id: name): {', '.join(f'{k + 1}: {n}' for k, n in enumerate(classes))}")
    print(f"images folder for data.train_images / data.val_images: {Path(args.voc_root) / 'JPEGImages'}")
    return 0
