"""The per-class table: AP, AP50, AR100, GT count, detections and depth error per class.

From one :class:`~detector.visualize.evaldata.EvalData` (exact COCO matching):

* ``AP`` (IoU .50:.95), ``AP50``: ``CocoEvalResult.per_class_ap()`` (area all, maxDets
  100), i.e. the values ``MeanAveragePrecision.per_class_ap()`` gives; ``AR100``: recall
  at maxDets 100, area all, mean over the 10 IoU thresholds.  -1 = class without GT.
* ``gt``: non-ignored GT boxes (non-crowd), ``detections``: detections of the class.
* ``depth_error``: mean ``|d_pred - d_gt| / d_gt`` over the class's detections matched to
  a GT with known depth by :func:`detector.evaluation.depth.match_image` (IoU >= 0.5,
  same class), ``depth_pairs`` their number; the micro average over all classes is the
  run's ``val_depth_error``.  NaN without pairs.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from detector.evaluation.depth import match_image

COLUMNS = ("class", "name", "AP", "AP50", "AR100", "gt", "detections", "depth_error", "depth_pairs")


def depth_error_per_class(data, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(sum of relative errors float64 [K], pair counts int64 [K])``, by GT class."""
    total = np.zeros(data.num_classes)
    count = np.zeros(data.num_classes, np.int64)
    gt, dt = data.gt, data.dets
    for _, g, d in data.image_slices():
        if not len(g) or not len(d):
            continue
        m = match_image(dt.bbox_xywh[d], dt.score[d], dt.category[d], gt.bbox_xywh[g], gt.category[g],
                        gt.iscrowd[g], iou_threshold)
        hit = np.flatnonzero(m >= 0)
        d_gt = data.gt_depth[g][m[hit]]
        known = d_gt > 0
        d_pred = data.det_depth[d][hit][known]
        cls = gt.category[g][m[hit]][known].astype(np.int64)
        np.add.at(total, cls, np.abs(d_pred - d_gt[known]) / d_gt[known])
        np.add.at(count, cls, 1)
    return total, count


def per_class_table(data) -> list[dict]:
    """One dict per class with the keys of :data:`COLUMNS`."""
    r = data.result
    ap = r.per_class_ap()
    ap50 = r.per_class_ap(iou_index=0)
    rec = r.recall[:, :, 0, -1]                                   # [T, K] area all, maxDets 100
    ar100 = np.where(data.npig[:, 0] > 0, rec.mean(axis=0), -1.0)
    n_det = np.bincount(data.dets.category.astype(np.int64), minlength=data.num_classes)
    d_sum, d_n = depth_error_per_class(data)
    rows = []
    for k, name in enumerate(data.class_names):
        rows.append({"class": k, "name": name, "AP": float(ap[k]), "AP50": float(ap50[k]),
                     "AR100": float(ar100[k]), "gt": int(data.npig[k, 0]), "detections": int(n_det[k]),
                     "depth_error": float(d_sum[k] / d_n[k]) if d_n[k] else float("nan"),
                     "depth_pairs": int(d_n[k])})
    return rows


def write_per_class_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else
                            ("" if isinstance(v, float) else v)) for k, v in row.items()})
    return path


def json_rows(rows: list[dict]) -> list[dict]:
    """The rows with NaN replaced by None (JSON null)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def format_per_class(rows: list[dict], max_rows: int | None = None) -> str:
    """A fixed-width text table (classes in class-id order; ``max_rows`` cuts long tables)."""
    width = max([len("name")] + [len(r["name"]) for r in rows])
    head = f"{'class':>5}  {'name':<{width}}  {'AP':>6}  {'AP50':>6}  {'AR100':>6}  {'gt':>6}  " \
           f"{'dets':>6}  {'depth err':>9}"
    lines = [head]
    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        depth = f"{r['depth_error']:9.3f}" if not math.isnan(r["depth_error"]) else f"{'n/a':>9}"
        lines.append(f"{r['class']:>5}  {r['name']:<{width}}  {r['AP']:6.3f}  {r['AP50']:6.3f}  "
                     f"{r['AR100']:6.3f}  {r['gt']:>6d}  {r['detections']:>6d}  {depth}")
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more classes (see per_class.csv)")
    return "\n".join(lines)
