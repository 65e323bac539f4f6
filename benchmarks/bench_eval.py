"""Whole-process speed of ``tools/eval.py`` vs faster-coco-eval vs pycocotools.

Generates a seeded, COCO-val-sized synthetic input (5000 images, 80 categories with
the real COCO ids, ~7 GT and exactly 100 detections per image, 1% crowd, mask-like
GT ``area`` fields, bbox rounded to 3 decimals and scores to 5 like common
exporters, so score ties occur) into a temp dir, then runs the three evaluators as
separate processes ``--repeats`` times, interleaved, and reports the median wall
time of each, the ratios, and the largest difference between their 12 stats.

    .venv/bin/python benchmarks/bench_eval.py [--repeats 3] [--images 5000] [--keep DIR]

With ``--metric-step`` it instead times ``MeanAveragePrecision.update_state`` in a
compiled step (B=16 images, D=100 detection slots, M=100 GT slots, 80 classes, ~7 GT
per image) with and without ``jit_compile``, for detections of which a given share
overlaps a same-class GT with IoU >= 0.5 (only those enter the sequential matching loop).

Not a test: it takes about a minute per repeat on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COCO_CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]

_REF_SCRIPT = """
import json, sys, contextlib
{imports}
with contextlib.redirect_stdout(sys.stderr):
    gt = COCO(sys.argv[1])
    dt = gt.loadRes(sys.argv[2])
    ev = {evaluator}(gt, dt, "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
"""
PYCOCOTOOLS = _REF_SCRIPT.format(
    imports="from pycocotools.coco import COCO\nfrom pycocotools.cocoeval import COCOeval",
    evaluator="COCOeval")
FASTER_COCO_EVAL = _REF_SCRIPT.format(
    imports="from faster_coco_eval import COCO, COCOeval_faster", evaluator="COCOeval_faster")
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def generate(out_dir: Path, num_images: int = 5000, dets_per_image: int = 100,
             seed: int = 0) -> tuple[Path, Path]:
    """Write ``gt.json`` and ``dt.json`` (a results list) into ``out_dir``."""
    rng = np.random.default_rng(seed)
    image_ids = rng.choice(np.arange(1, 600_000), size=num_images, replace=False)
    images, anns, dets = [], [], []
    cat_p = rng.dirichlet(np.full(80, 0.7))
    for img_id in image_ids.tolist():
        w_img, h_img = (640, 480) if rng.random() < 0.7 else (480, 640)
        images.append({"id": img_id, "width": w_img, "height": h_img, "file_name": f"{img_id:012d}.jpg"})
        n_gt = int(rng.poisson(7.3))
        size = np.exp(rng.uniform(np.log(4), np.log(400), size=n_gt))
        bw = np.minimum(size * np.exp(rng.normal(0, 0.4, n_gt)), w_img - 1)
        bh = np.minimum(size * np.exp(rng.normal(0, 0.4, n_gt)), h_img - 1)
        bx = rng.uniform(0, w_img - bw)
        by = rng.uniform(0, h_img - bh)
        cats = rng.choice(80, size=n_gt, p=cat_p)
        crowd = rng.random(n_gt) < 0.01
        for j in range(n_gt):
            box = [round(float(v), 2) for v in (bx[j], by[j], bw[j], bh[j])]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": COCO_CAT_IDS[cats[j]],
                         "bbox": box, "area": round(box[2] * box[3] * float(rng.uniform(0.45, 0.9)), 2),
                         "iscrowd": int(crowd[j])})
        # detections: 1-3 jittered copies of each GT, the rest random false positives
        n_tp = min(dets_per_image, int(rng.integers(1, 4, size=max(n_gt, 1)).sum()) if n_gt else 0)
        src = rng.integers(0, max(n_gt, 1), size=n_tp)
        jit = rng.normal(0, 0.12, size=(n_tp, 4))
        dx = bx[src] + jit[:, 0] * bw[src] if n_gt else np.zeros(0)
        dy = by[src] + jit[:, 1] * bh[src] if n_gt else np.zeros(0)
        dw = bw[src] * np.exp(jit[:, 2]) if n_gt else np.zeros(0)
        dh = bh[src] * np.exp(jit[:, 3]) if n_gt else np.zeros(0)
        dcat = np.where(rng.random(n_tp) < 0.85, cats[src] if n_gt else 0, rng.choice(80, size=n_tp, p=cat_p))
        dscore = rng.beta(4, 2, size=n_tp)
        n_fp = dets_per_image - n_tp
        fsize = np.exp(rng.uniform(np.log(4), np.log(300), size=n_fp))
        fx, fy = rng.uniform(0, w_img - 1, n_fp), rng.uniform(0, h_img - 1, n_fp)
        fcat = rng.choice(80, size=n_fp, p=cat_p)
        fscore = rng.beta(1, 6, size=n_fp)
        boxes = np.concatenate([np.stack([dx, dy, dw, dh], 1),
                                np.stack([fx, fy, fsize, fsize * np.exp(rng.normal(0, .4, n_fp))], 1)])
        for box, c, s in zip(boxes.astype(np.float32).tolist(), np.concatenate([dcat, fcat]).tolist(),
                             np.concatenate([dscore, fscore]).tolist()):
            dets.append({"image_id": img_id, "category_id": COCO_CAT_IDS[c],
                         "bbox": [round(v, 3) for v in box], "score": round(max(s, 1e-5), 5)})
    cats = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in COCO_CAT_IDS]
    out_dir.mkdir(parents=True, exist_ok=True)
    gt_path, dt_path = out_dir / "gt.json", out_dir / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


def _run(cmd: list[str]) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    stats = json.loads(out.stdout)
    if isinstance(stats, dict):
        stats = [stats[k] for k in KEYS]
    return wall, stats


def _metric_batch(rng: np.random.Generator, share_on_gt: float, b: int = 16, d: int = 100, m: int = 100,
                  k: int = 80) -> tuple[dict, dict]:
    n = rng.poisson(7.3, b).clip(1, m)
    gb = np.concatenate([rng.uniform(0, 500, (b, m, 2)), rng.uniform(8, 200, (b, m, 2))], -1)
    slot_ok = np.arange(m)[None] < n[:, None]
    gc = np.where(slot_ok, rng.integers(0, k, (b, m)), -1).astype(np.int32)
    on_gt = rng.random((b, d)) < share_on_gt
    src = (rng.random((b, d)) * n[:, None]).astype(int)
    jitter = rng.normal(0, 0.05, (b, d, 4)) * np.take_along_axis(gb, src[..., None], 1)[..., [2, 3, 2, 3]]
    near = np.take_along_axis(gb, src[..., None], 1) + jitter
    far = np.concatenate([rng.uniform(0, 500, (b, d, 2)), rng.uniform(8, 200, (b, d, 2))], -1)
    db = np.where(on_gt[..., None], near, far).astype(np.float32)
    dc = np.where(on_gt, np.take_along_axis(gc, src, 1), rng.integers(0, k, (b, d))).astype(np.int32)
    gt = {"boxes_xywh": gb, "classes": gc, "is_crowd": (rng.random((b, m)) < 0.01) & slot_ok,
          "area": gb[..., 2] * gb[..., 3] * 0.7, "image_id": rng.choice(10 ** 6, b, replace=False),
          "num_boxes": n.astype(np.int32)}
    return gt, {"boxes_xywh": db, "scores": rng.random((b, d)).astype(np.float32), "classes": dc}


def bench_metric_step(repeats: int) -> None:
    """Median wall time of one compiled ``update_state`` call (B=16, D=100, M=100)."""
    import tensorflow as tf

    from detector.metrics.coco_map import MeanAveragePrecision

    rng = np.random.default_rng(0)
    for share in (0.3, 1.0):
        data = [_metric_batch(rng, share) for _ in range(8)]
        data = [tf.nest.map_structure(tf.constant, x) for x in data]   # time the step, not numpy->tensor
        for jit in (False, True):
            metric = MeanAveragePrecision(num_classes=80, max_detections_per_image=100,
                                          capacity=16 * 100 * 8 * (repeats + 1))
            step = tf.function(metric.update_state, jit_compile=jit)
            step(*data[0])
            times = []
            for _ in range(repeats):
                for gt, det in data:
                    t0 = time.perf_counter()
                    step(gt, det)
                    times.append(time.perf_counter() - t0)
            print(f"update_state B=16 D=100 M=100, {share:.0%} of detections on a GT, jit_compile={jit}: "
                  f"median {1e3 * statistics.median(times):.1f} ms/batch "
                  f"(min {1e3 * min(times):.1f}, {len(times)} calls)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="write the inputs here and keep them")
    ap.add_argument("--skip-pycocotools", action="store_true")
    ap.add_argument("--metric-step", action="store_true", help="time the Keras metric's update_state")
    args = ap.parse_args()
    if args.metric_step:
        sys.path.insert(0, str(ROOT))
        bench_metric_step(args.repeats)
        return

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        t0 = time.perf_counter()
        gt, dt = generate(out_dir, args.images, seed=args.seed)
        print(f"generated {gt} ({gt.stat().st_size / 1e6:.1f} MB) and {dt} "
              f"({dt.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        py = sys.executable
        env_note = {"NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        os.environ.update(env_note)
        runners = {
            "tools/eval.py": [py, str(ROOT / "tools" / "eval.py"), "--gt", str(gt), "--detections", str(dt),
                              "--json"],
            "faster-coco-eval": [py, "-c", FASTER_COCO_EVAL, str(gt), str(dt)],
            "pycocotools": [py, "-c", PYCOCOTOOLS, str(gt), str(dt)],
        }
        if args.skip_pycocotools:
            del runners["pycocotools"]
        times: dict[str, list[float]] = {k: [] for k in runners}
        stats: dict[str, list[float]] = {}
        for rep in range(args.repeats):
            for name, cmd in runners.items():
                wall, stats[name] = _run(cmd)
                times[name].append(wall)
                print(f"  repeat {rep + 1}: {name:17s} {wall:6.2f} s", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        ours = med["tools/eval.py"]
        print("\nmedian whole-process wall time (s):")
        for name, m in med.items():
            print(f"  {name:17s} {m:6.2f}   ratio to tools/eval.py: {m / ours:5.2f}x")
        ref = stats.get("pycocotools", stats["faster-coco-eval"])
        for name, s in stats.items():
            diff = max(abs(a - b) for a, b in zip(s, ref))
            print(f"  max |{name} - reference| over 12 stats: {diff:.3g}")
        print("stats:", dict(zip(KEYS, stats["tools/eval.py"])))


if __name__ == "__main__":
    main()
