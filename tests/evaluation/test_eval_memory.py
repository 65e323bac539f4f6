"""Eval file mode runs in memory linear in the input (the small, bounded version of
benchmarks/soak_eval_memory.py): Python-heap peak per image is about the same at 400
and 1600 images, and small."""

import json
import tracemalloc

import numpy as np

from detector.evaluation import evaluate_files


def _write(tmp_path, n, dets=10, seed=0):
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "height": 480, "width": 640} for i in range(n)]
    anns, res = [], []
    for i in range(n):
        for _ in range(5):
            x, y, w, h = rng.uniform(0, 300, 4).round(2).tolist()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 4)),
                         "bbox": [x, y, w + 1, h + 1], "area": (w + 1) * (h + 1), "iscrowd": 0})
        for _ in range(dets):
            x, y, w, h = rng.uniform(0, 300, 4).round(2).tolist()
            res.append({"image_id": i + 1, "category_id": int(rng.integers(1, 4)), "bbox": [x, y, w + 1, h + 1],
                        "score": round(float(rng.random()), 4)})
    gt, dt = tmp_path / f"gt{n}.json", tmp_path / f"dt{n}.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": k, "name": str(k)} for k in (1, 2, 3)]}))
    dt.write_text(json.dumps(res))
    return gt, dt


def _peak_bytes(gt, dt):
    tracemalloc.start()
    try:
        result, _ = evaluate_files(gt, dt)
        result.stats()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_grows_linearly_with_images(tmp_path):
    small, large = 400, 1600
    peak_small = _peak_bytes(*_write(tmp_path, small))
    peak_large = _peak_bytes(*_write(tmp_path, large))
    per_image = (peak_large - peak_small) / (large - small)
    assert per_image < 64 * 1024, per_image                # 15 boxes an image: well under 64 KiB
    # linear: 4x the images costs at most ~4x (plus slack), not 16x
    assert peak_large < 4.6 * peak_small, (peak_small, peak_large)
