#!/usr/bin/env python3
"""On-device latency of a ``.tflite`` detector with the LiteRT Python interpreter.

    python deploy/benchmark.py --model model_int8.tflite [--threads 1 2 4] [--runs 100] [--warmup 10]
        [--image photo.jpg] [--no-xnnpack] [--json OUT.json]

Needs only ``numpy`` and ``ai-edge-litert`` (``pip install numpy ai-edge-litert``);
OpenCV is used when installed (to read ``--image`` and resize), never required.  It
imports neither TensorFlow nor the ``detector`` package, so it runs as is on a
Raspberry Pi or any machine that can install those two wheels.

For each thread count a fresh interpreter is built and measured:

- ``init``: ``Interpreter(...)`` + ``allocate_tensors()`` (file read, delegate set-up);
- ``first``: the first ``invoke`` (XNNPACK packs weights lazily here);
- ``invoke`` p50 / p90 / p99: ``--runs`` calls of ``invoke()`` alone, after ``--warmup``
  calls, on a fixed prepared input;
- ``end-to-end`` p50 / p90 / p99: letterbox + convert a fixed source image
  (``--image`` or a deterministic 640x480 test pattern), set the input, ``invoke``,
  and copy every output out; with a model exported with the post-processing inside
  this is the whole detector (decode and NMS included);
- ``rss``: resident memory added by building the interpreter, and the process peak;
- XNNPACK (best effort): the number of delegate partitions and the op types present
  that XNNPACK never takes (they run on the builtin CPU kernels).

Numbers are milliseconds of wall-clock time (``time.perf_counter``).  Prints a table;
``--json OUT`` writes the same figures (schema shared with
``deploy/android_benchmark.py``).

Several ``--model`` files are measured interleaved: all interpreters are built first,
then the timed runs alternate between the models in blocks of ``--block`` runs, so a
change in background load (a shared machine, thermal throttling) hits every model
alike; a p50 speed-up line relative to the first file follows the tables, and the JSON
holds ``{"interleaved": true, "reports": [one report per model]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

SCHEMA = "detector-benchmark/1"

# Builtin ops the XNNPACK delegate has no kernel for (its README's supported-op list
# does not name them); when present they run on the default CPU kernels.
XNNPACK_UNSUPPORTED = {"GATHER", "GATHER_ND", "TOPK_V2", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5",
                       "CAST", "SELECT", "SELECT_V2", "LESS", "FLOOR_DIV", "FLOOR_MOD", "UNPACK", "PACK", "EXP",
                       "TILE", "WHERE", "ARG_MAX", "ARG_MIN", "CUSTOM"}


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        sys.exit("error: deploy/benchmark.py needs the ai-edge-litert package (pip install ai-edge-litert)")
    return Interpreter, OpResolverType


def _rss_mb() -> float:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError):
        return 0.0


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "count": int(a.size)}


def test_pattern(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic RGB uint8 image with shapes and gradients (no file needed)."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                    ((x + y) % 256)], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(12):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(10, 60)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def load_image(path: str | None) -> np.ndarray:
    if path is None:
        return test_pattern()
    try:
        import cv2
    except ImportError:
        sys.exit("error: --image needs OpenCV (pip install opencv-python-headless); omit --image to use "
                 "the built-in test pattern")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"error: --image {path}: cannot read the image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """The detector's evaluation preprocessing: scale by size / max(h, w), pad bottom/right with 0."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
    out = np.zeros((size, size, 3), np.uint8)
    try:
        import cv2

        out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    except ImportError:   # nearest neighbour in numpy
        ys = np.minimum((np.arange(nh) + 0.5) / scale, h - 1).astype(np.int64)
        xs = np.minimum((np.arange(nw) + 0.5) / scale, w - 1).astype(np.int64)
        out[:nh, :nw] = image[ys[:, None], xs[None, :]]
    return out


def to_input(image: np.ndarray, detail: dict) -> np.ndarray:
    """Letterboxed uint8 ``[S, S, 3]`` -> the model's input tensor (float32 0..255 or quantized)."""
    dtype = np.dtype(detail["dtype"])
    x = image[None]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and (scale != 1.0 or zero != 0):
        info = np.iinfo(dtype)
        x = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max)
    return x.astype(dtype)


class _Run:
    """One interpreter under test: built (init timed), first invoke timed, warmed up."""

    def __init__(self, model: str, threads: int, warmup: int, xnnpack: bool, source: np.ndarray):
        Interpreter, OpResolverType = _interpreter_class()
        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.source, self.xnnpack, self.threads = source, xnnpack, threads
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        self.interp = Interpreter(model_path=model, num_threads=threads, experimental_op_resolver_type=resolver)
        self.interp.allocate_tensors()
        self.init_ms = 1e3 * (time.perf_counter() - t0)
        self.rss_init = _rss_mb() - rss0
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()
        self.size = int(self.inp["shape"][1])
        self.interp.set_tensor(self.inp["index"], to_input(letterbox(source, self.size), self.inp))
        t0 = time.perf_counter()
        self.interp.invoke()
        self.first_ms = 1e3 * (time.perf_counter() - t0)
        for _ in range(warmup):
            self.interp.invoke()
        self.invoke_ms, self.e2e_ms = [], []

    def invoke_block(self, n: int) -> None:
        interp = self.interp
        for _ in range(n):
            t0 = time.perf_counter()
            interp.invoke()
            self.invoke_ms.append(1e3 * (time.perf_counter() - t0))

    def e2e_block(self, n: int) -> None:
        interp, inp = self.interp, self.inp
        for _ in range(n):
            t0 = time.perf_counter()
            interp.set_tensor(inp["index"], to_input(letterbox(self.source, self.size), inp))
            interp.invoke()
            got = [interp.get_tensor(o["index"]) for o in self.outs]   # copies
            self.e2e_ms.append(1e3 * (time.perf_counter() - t0))
        del got

    def result(self) -> dict:
        ops = Counter(op["op_name"] for op in self.interp._get_ops_details())  # noqa: SLF001 (best effort)
        partitions = ops.pop("DELEGATE", 0)
        not_delegated = sorted(k for k in ops if k in XNNPACK_UNSUPPORTED) if self.xnnpack else sorted(ops)
        return {"threads": self.threads, "init_ms": self.init_ms, "first_inference_ms": self.first_ms,
                "invoke_ms": _percentiles(self.invoke_ms), "end_to_end_ms": _percentiles(self.e2e_ms),
                "rss_init_mb": self.rss_init, "peak_rss_mb": _peak_rss_mb(),
                "xnnpack": {"enabled": self.xnnpack, "delegate_partitions": partitions,
                            "ops_total": int(sum(ops.values())), "op_types_not_delegated": not_delegated}}


def measure(models: list[str], threads: int, runs: int, warmup: int, xnnpack: bool, source: np.ndarray,
            block: int = 10) -> list[dict]:
    """One result per model at ``threads``.  With several models the timed runs alternate in
    blocks of ``block`` runs, so that a change in background load hits every model alike."""
    subjects = [_Run(m, threads, warmup, xnnpack, source) for m in models]
    for timed in ("invoke_block", "e2e_block"):
        done = 0
        while done < runs:
            n = min(block, runs - done)
            for s in subjects:
                getattr(s, timed)(n)
            done += n
    return [s.result() for s in subjects]


def environment() -> dict:
    from importlib import metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(), "system": platform.system(),
            "python": platform.python_version(), "ai_edge_litert": version("ai-edge-litert"),
            "numpy": version("numpy")}


def format_table(report: dict) -> str:
    head = (f"{'threads':>7} {'init':>8} {'first':>8} | {'invoke p50':>10} {'p90':>7} {'p99':>7} | "
            f"{'e2e p50':>8} {'p90':>7} {'p99':>7} | {'rss+':>6} {'XNNPACK':>9}")
    lines = [f"{report['model']}  ({report['size_bytes'] / 1e6:.3f} MB, {report['runs']} runs after "
             f"{report['warmup']} warm-up, ms)", head, "-" * len(head)]
    for r in report["results"]:
        i, e, x = r["invoke_ms"], r["end_to_end_ms"], r["xnnpack"]
        xn = f"{x['delegate_partitions']} parts" if x["enabled"] else "off"
        lines.append(f"{r['threads']:>7} {r['init_ms']:8.1f} {r['first_inference_ms']:8.2f} | {i['p50']:10.2f} "
                     f"{i['p90']:7.2f} {i['p99']:7.2f} | {e['p50']:8.2f} {e['p90']:7.2f} {e['p99']:7.2f} | "
                     f"{r['rss_init_mb']:5.0f}M {xn:>9}")
    nd = report["results"][0]["xnnpack"]["op_types_not_delegated"] if report["results"] else []
    if report["xnnpack"] and nd:
        lines.append("ops on the builtin CPU kernels (not XNNPACK): " + ", ".join(nd))
    lines.append(f"peak RSS {max(r['peak_rss_mb'] for r in report['results']):.0f} MB; "
                 f"{report['environment']['cpu']} ({report['environment']['cpu_count']} CPUs)")
    return "\n".join(lines)


def format_ratios(reports: list[dict]) -> str:
    """p50 speed-up of every model over the first one (interleaved runs)."""
    base = reports[0]
    lines = [f"p50 speed-up vs {Path(base['model']).name} (>1 = faster):"]
    for r in reports[1:]:
        for a, b in zip(base["results"], r["results"]):
            lines.append(f"  {Path(r['model']).name} @ {b['threads']} thread(s): invoke "
                         f"{a['invoke_ms']['p50'] / b['invoke_ms']['p50']:.2f}x, end-to-end "
                         f"{a['end_to_end_ms']['p50'] / b['end_to_end_ms']['p50']:.2f}x")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Latency of a .tflite detector with the LiteRT interpreter.")
    p.add_argument("--model", required=True, nargs="+",
                   help=".tflite file; several files are measured interleaved (A/B comparison on a busy machine)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to measure (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per measurement (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed invokes first (default 10)")
    p.add_argument("--block", type=int, default=10, help="runs per turn when interleaving several models")
    p.add_argument("--image", help="source image for the end-to-end timing (needs OpenCV); default a test pattern")
    p.add_argument("--no-xnnpack", action="store_true", help="builtin kernels only, no XNNPACK delegate")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for m in args.model:
        if not Path(m).is_file():
            print(f"error: --model {m}: no such file", file=sys.stderr)
            return 2
    if args.runs < 1 or args.warmup < 0 or any(t < 1 for t in args.threads) or args.block < 1:
        print("error: --runs >= 1, --warmup >= 0, --block >= 1 and --threads >= 1 please", file=sys.stderr)
        return 2
    source = load_image(args.image)
    env = environment()
    reports = [{"schema": SCHEMA, "tool": "deploy/benchmark.py", "model": str(m), "size_bytes": Path(m).stat().st_size,
                "runs": args.runs, "warmup": args.warmup, "xnnpack": not args.no_xnnpack,
                "interleaved_with": [str(o) for o in args.model if o != m],
                "image": args.image or "test pattern 640x480", "environment": env, "results": []}
               for m in args.model]
    for threads in args.threads:
        for report, result in zip(reports, measure(args.model, threads, args.runs, args.warmup,
                                                   not args.no_xnnpack, source, args.block)):
            report["results"].append(result)
    print("\n\n".join(format_table(r) for r in reports))
    if len(reports) > 1:
        print("\n" + format_ratios(reports))
    if args.json:
        doc = reports[0] if len(reports) == 1 else {"schema": SCHEMA, "interleaved": True, "reports": reports}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
