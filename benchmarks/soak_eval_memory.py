"""Soak: peak memory of ``tools/eval.py`` file mode against the number of images.

Generates seeded synthetic COCO inputs (bench_eval's generator: ~7 GT and
``--dets`` detections per image, 80 COCO categories) for each image count, runs
``tools/eval.py --gt --detections --json`` as a fresh process for each, and reports
its peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper that runs only
that process), wall time and the input sizes, then the least-squares growth of peak
RSS per image.  Bounded memory means: a fixed start-up cost plus a constant per image
(the parsed JSON and the per-detection arrays), no super-linear term.

    .venv/bin/python benchmarks/soak_eval_memory.py [--images 5000 20000 50000] [--dets 20]

Not a test (minutes on 2 cores); tests/evaluation/test_eval_memory.py is the small
bounded check.  Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_eval import generate  # noqa: E402

WRAPPER = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "sys.stderr.write(p.stderr[-2000:]) if p.returncode else None; "
           "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS MiB of ``cmd`` run alone, wall seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    code, kib = out.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{out.stderr}")
    return int(kib) / 1024, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, nargs="+", default=[5000, 20000, 50000])
    p.add_argument("--dets", type=int, default=20, help="detections per image")
    p.add_argument("--keep", type=Path, help="keep the generated files here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for n in args.images:
            d = base / f"n{n}"
            t0 = time.perf_counter()
            gt, dt = generate(d, num_images=n, dets_per_image=args.dets, seed=n)
            gen = time.perf_counter() - t0
            rss, wall = peak_rss_mib([sys.executable, str(ROOT / "tools" / "eval.py"), "--gt", str(gt),
                                      "--detections", str(dt), "--json"])
            n_gt = len(json.loads(gt.read_text())["annotations"])
            rows.append((n, n_gt, n * args.dets, (gt.stat().st_size + dt.stat().st_size) / 2**20, rss, wall))
            print(f"{n:>7} images  {n_gt:>8} GT  {n * args.dets:>9} detections  input {rows[-1][3]:7.1f} MiB  "
                  f"peak RSS {rss:7.1f} MiB  eval {wall:6.1f} s  (generated in {gen:.0f} s)", flush=True)
    if len(rows) >= 2:
        n = np.array([r[0] for r in rows], float)
        rss = np.array([r[4] for r in rows])
        slope, intercept = np.polyfit(n, rss, 1)
        worst = np.max(np.abs(np.polyval([slope, intercept], n) - rss))
        print(f"peak RSS ~= {intercept:.0f} MiB + {slope * 1024:.1f} KiB per image "
              f"(worst deviation from the line {worst:.1f} MiB)")


if __name__ == "__main__":
    main()
