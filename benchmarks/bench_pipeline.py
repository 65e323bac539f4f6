"""Training input-pipeline throughput: the pure-TF augmentation backend vs albumentations.

Runs ``tools/inspect_data.py`` (decode + augmentation + letterbox + anchor targets, the
training pipeline with ground truth) as separate processes, the backends interleaved,
``--repeats`` times, and prints the median images/s of each, their ratio, and images/s
per core (``os.cpu_count()``: the pipeline's parallel maps use every core), so that a
user can size the CPU a GPU needs.

Settings:

* ``synthetic``: the embedded default (``synthetic.yaml``: 256 px JPEGs, 352 px input);
* ``coco_small-384``: ``coco_small.yaml``'s input settings (384 px, its augmentation, no
  image cache, up to 100 boxes) on real photographs of varied sizes: a Pascal-VOC folder
  given with ``--voc-root`` (e.g. the raccoon photos); skipped without it.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 3] [--batches 60] [--voc-root DIR]

Not a test: about 15 s per process on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tf", "albumentations")


def settings(voc_root: str | None) -> dict[str, list[str]]:
    out = {"synthetic": ["--config", "synthetic.yaml"]}
    if voc_root:
        out["coco_small-384"] = ["--config", "coco_small.yaml", "--set", "data.source=voc",
                                 "--set", f"data.voc_root={voc_root}", "--set", "data.classes=[raccoon]",
                                 "--set", "data.val_split=val", "--set", "model.backbone.weights=null"]
    return out


def images_per_s(args: list[str], backend: str, batches: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(ROOT / "tools" / "inspect_data.py"), *args,
               "--set", f"data.augment.backend={backend}", "--batches", str(batches), "--out", out]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", NO_ALBUMENTATIONS_UPDATE="1")
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    found = re.findall(r"^images/s: ([0-9.]+)$", run.stdout, re.M)
    if run.returncode or not found:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return float(found[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--voc-root", help="a Pascal-VOC folder for the 384 px setting (e.g. the raccoon photos)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    cores = os.cpu_count() or 1
    results = {}
    for name, args in settings(a.voc_root).items():
        runs: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for r in range(a.repeats):
            for b in BACKENDS:
                runs[b].append(images_per_s(args, b, a.batches))
                print(f"{name} {b} repeat {r + 1}: {runs[b][-1]:.0f} images/s", file=sys.stderr, flush=True)
        med = {b: statistics.median(v) for b, v in runs.items()}
        results[name] = {"images_per_s": med, "runs": runs, "cores": cores,
                         "tf_over_albumentations": med["tf"] / med["albumentations"]}
    print(f"{'setting':16} {'backend':15} {'images/s':>9} {'per core':>9}")
    for name, r in results.items():
        for b in BACKENDS:
            v = r["images_per_s"][b]
            print(f"{name:16} {b:15} {v:9.0f} {v / cores:9.0f}")
        print(f"{name:16} {'tf / albument.':15} {r['tf_over_albumentations']:9.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
