"""Embedded synthetic detection dataset, generated once and cached as COCO-JSON.

Layout under ``<data.synthetic.cache_dir>/synthetic-<hash>/`` (the hash covers every
generator parameter, so changing one regenerates)::

    instances_train.json  train/000001.jpg ...
    instances_val.json    val/000001.jpg ...

The files are then read by the ordinary COCO-JSON loader (:mod:`detector.data.coco_json`).

The scene model (shapes, clutter, occlusion, pinhole depth, crowds) is described in
:mod:`detector.data.synthetic_scene`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from detector.config import Config
from detector.data.shapes import check_class_names
from detector.data.synthetic_scene import generate_image

GENERATOR_VERSION = 1   # part of the cache key: bump when synthetic_scene.py changes
_CHUNK = 50


def dataset_dir(cfg: Config) -> Path:
    """Cache folder of the synthetic dataset described by ``cfg`` (may not exist yet)."""
    s = cfg.data.synthetic
    key = {"version": GENERATOR_VERSION, "classes": list(cfg.data.classes),
           **{k: v for k, v in vars(s).items() if k != "cache_dir"}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(s.cache_dir).expanduser() / f"synthetic-{digest}"


def ensure_synthetic(cfg: Config, progress: bool = True) -> Path:
    """Generate the dataset if its cache folder is missing; return the folder.

    Generation writes into a temporary sibling folder and renames it at the end, so an
    interrupted run never leaves a half-written dataset behind.
    """
    check_class_names(cfg.data.classes)
    root = dataset_dir(cfg)
    if (root / "instances_val.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".tmp-{root.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    s = cfg.data.synthetic
    total, done, t0 = s.num_train + s.num_val, 0, time.time()
    chunks = []
    for split_id, (split, n) in enumerate((("train", s.num_train), ("val", s.num_val))):
        (tmp / split).mkdir(parents=True)
        chunks += [(str(tmp / split), split_id, a, min(a + _CHUNK, n), cfg.data.classes, s)
                   for a in range(0, n, _CHUNK)]
    try:
        if total > 4 * _CHUNK and (os.cpu_count() or 1) > 1:
            results = _run_workers(tmp, chunks, root, progress, t0)
        else:
            results = {}
            for c in chunks:
                results[(c[1], c[2])] = _generate_chunk(*c)
                done += c[3] - c[2]
                if progress:
                    _progress(root, done, total, t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cats = [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(cfg.data.classes)]
    for split_id, (split, n) in enumerate((("train", s.num_train), ("val", s.num_val))):
        images, anns = [], []
        for a in range(0, n, _CHUNK):
            for i, objs in results[(split_id, a)]:
                images.append({"id": i + 1, "file_name": f"{i + 1:06d}.jpg",
                               "height": s.height, "width": s.width})
                anns += [{"id": len(anns) + 1 + j, "image_id": i + 1, **o} for j, o in enumerate(objs)]
        doc = {"info": {"description": "detector synthetic shapes", "version": GENERATOR_VERSION},
               "images": images, "annotations": anns, "categories": cats}
        (tmp / f"instances_{split}.json").write_text(json.dumps(doc))
    if progress:
        print(file=sys.stderr)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _progress(root, done: int, total: int, t0: float) -> None:
    print(f"\rgenerating synthetic dataset in {root}: {done}/{total} images "
          f"({time.time() - t0:.1f} s)", end="", file=sys.stderr, flush=True)


def _run_workers(tmp: Path, chunks: list, root: Path, progress: bool, t0: float) -> dict:
    """Generate ``chunks`` in 2 worker processes (``python -m detector.data.synthetic``).

    Fresh interpreters rather than multiprocessing: fork would copy the caller's
    TensorFlow threads, and spawn re-imports the caller's main script.
    """
    s = chunks[0][5]
    (tmp / "params.json").write_text(json.dumps({"classes": list(chunks[0][4]), "synthetic": vars(s)}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-m", "detector.data.synthetic", str(tmp), str(k), "2"],
                              env=env, stderr=subprocess.PIPE, text=True) for k in range(2)]
    total = s.num_train + s.num_val
    while any(p.poll() is None for p in procs):
        time.sleep(0.5)
        if progress:
            done = sum(len(os.listdir(tmp / d)) for d in ("train", "val"))
            _progress(root, done, total, t0)
    results = {}
    for k, p in enumerate(procs):
        if p.returncode != 0:
            raise RuntimeError(f"synthetic data worker {k} failed:\n{p.stderr.read()}")
        for key, value in json.loads((tmp / f"anns-{k}.json").read_text()):
            results[tuple(key)] = value
        os.remove(tmp / f"anns-{k}.json")
    os.remove(tmp / "params.json")
    if progress:
        _progress(root, total, total, t0)
    return results


def _worker_main(tmp: str, k: int, n_workers: int) -> None:
    from detector.config import SyntheticConfig

    params = json.loads(Path(tmp, "params.json").read_text())
    s = SyntheticConfig(**params["synthetic"])
    out = []
    for split_id, (split, n) in enumerate((("train", s.num_train), ("val", s.num_val))):
        for a in range(0, n, _CHUNK):
            if (a // _CHUNK) % n_workers == k:
                objs = _generate_chunk(str(Path(tmp, split)), split_id, a, min(a + _CHUNK, n),
                                       params["classes"], s)
                out.append(((split_id, a), objs))
    Path(tmp, f"anns-{k}.json").write_text(json.dumps(out))


def _generate_chunk(folder: str, split_id: int, start: int, stop: int, class_names, s):
    """Write images ``start..stop-1`` of one split as JPEG; return their annotations."""
    out = []
    for i in range(start, stop):
        rng = np.random.default_rng([s.seed, split_id, i])  # per image: order-independent
        img, objs = generate_image(rng, class_names, s)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        Path(folder, f"{i + 1:06d}.jpg").write_bytes(buf.tobytes())
        out.append((i, objs))
    return out


if __name__ == "__main__":  # worker process of _run_workers
    _worker_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
