"""Input-pipeline throughput per worker, 2 worker processes, with and without sharding.

Two processes run at the same time (like two workers on one host), each iterating its
training input pipeline (``make_dataset``, decode + augmentation + targets) and timing
how many images per second it delivers to its replica:

* ``sharded``: ``input_context`` of 2 pipelines: each worker reads, decodes and augments
  only its half of the file list (what ``multi_worker`` training does now);
* ``unsharded``: each worker decodes and augments the WHOLE stream and keeps every
  second per-replica batch (what tf.data's DATA auto-shard policy did before).

The two modes alternate ``--repeats`` times and the medians are reported.

    .venv/bin/python benchmarks/bench_sharding.py [--repeats 3] [--batches 30] [--images 96]

Not a test: about a minute per repeat on a 2-core machine.
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

ROOT = Path(__file__).resolve().parent.parent


def worker(mode: str, index: int, batches: int, images: int, size: int, cache: str) -> None:
    import tensorflow as tf

    sys.path.insert(0, str(ROOT))
    from detector.config import load_config
    from detector.data import make_dataset

    cfg = load_config("smoke.yaml", [f"data.synthetic.cache_dir={cache}", f"data.cache_dir={cache}",
                                     f"data.synthetic.num_train={images}", f"data.image_size={size}",
                                     f"data.synthetic.height={size}", f"data.synthetic.width={size}",
                                     "train.batch_size=8", "data.cache_images=true"])
    if mode == "sharded":
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2)
        ds = make_dataset(cfg, "train", training=True, with_gt=False, input_context=ctx)
    else:
        ds = make_dataset(cfg, "train", training=True, with_gt=False, batch_size=4).shard(2, index)
    it = iter(ds)
    for _ in range(3):   # warm-up: tracing, first reads
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_s": batches * 4 / dt}))


def run_pair(mode: str, args, cache: str) -> list[float]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", mode, str(i), str(args.batches),
                               str(args.images), str(args.size), cache],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in (0, 1)]
    rates = []
    for p in procs:
        out, err = p.communicate(timeout=1200)
        if p.returncode:
            raise RuntimeError(err[-2000:])
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, default=30, help="timed per-replica batches (4 images) per worker")
    ap.add_argument("--images", type=int, default=96, help="synthetic train images")
    ap.add_argument("--size", type=int, default=256, help="image side")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, index, batches, images, size, cache = args.worker
        worker(mode, int(index), int(batches), int(images), int(size), cache)
        return
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run([sys.executable, __file__, "--worker", "sharded", "0", "1", str(args.images),
                        str(args.size), cache], check=True, env=env, capture_output=True)  # generate the data once
        results: dict[str, list[float]] = {"sharded": [], "unsharded": []}
        for r in range(args.repeats):
            for mode in ("unsharded", "sharded") if r % 2 else ("sharded", "unsharded"):
                rates = run_pair(mode, args, cache)
                results[mode].extend(rates)
                print(f"repeat {r + 1} {mode}: " + ", ".join(f"{x:.1f}" for x in rates) + " img/s per worker",
                      flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"median images/s per worker: sharded {med['sharded']:.1f}, unsharded {med['unsharded']:.1f}, "
          f"ratio {med['sharded'] / med['unsharded']:.2f}x")


if __name__ == "__main__":
    main()
