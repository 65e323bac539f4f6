#!/usr/bin/env python3
"""Benchmark a ``.tflite`` detector on an Android phone with LiteRT's ``benchmark_model``.

    python deploy/android_benchmark.py --model model_int8.tflite --benchmark-binary ./benchmark_model \\
        [--threads 1 4] [--cpu-mask f0] [--runs 200] [--warmup 10] [--serial ID] [--no-xnnpack] [--json OUT]
    python deploy/android_benchmark.py --parse-log run.log [--threads 4] [--json OUT]   # offline

Bring your own ``benchmark_model`` built for the phone (``android_aarch64_benchmark_model``
from the LiteRT / TensorFlow nightly tool downloads, or built with bazel); this
repository does not ship binaries.  The script uses ``adb`` (on PATH) to push the
binary and the model to ``/data/local/tmp``, runs the binary once per thread count,
pinned with ``taskset MASK`` (default ``f0`` = CPUs 4-7, the big cores of most
4+4 phones; check ``/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq`` on yours),
and parses the log into the JSON schema of ``deploy/benchmark.py``.

``benchmark_model`` reports ``Inference timings in us: Init, First inference, Warmup
(avg), Inference (avg)`` plus ``count= first= curr= min= max= avg= std=`` of the timed
runs and memory footprint lines; it prints no percentiles, so ``invoke_ms`` carries
mean / std / min / max only (p50 / p90 / p99 are null), and there is no end-to-end
figure (the tool feeds random input and does not pre-process images).  Lines may
carry an ``INFO:`` prefix, numbers may be in scientific notation (``1.2e+06``).
With ``--enable_op_profiling`` (on by default) the per-node-type summary is kept too
(``TfLiteXNNPackDelegate`` rows = time inside XNNPACK).  Needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

SCHEMA = "detector-benchmark/1"
REMOTE_DIR = "/data/local/tmp"
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _num(text: str) -> float:
    return float(text)


def parse_log(text: str) -> dict:
    """Figures of one ``benchmark_model`` run (times in ms, memory in MB); raises ValueError
    when the log has no ``Inference timings`` line (e.g. the run failed)."""
    out: dict = {}
    timings = None
    runs = []
    for line in text.splitlines():
        if "Inference timings in us:" in line:
            timings = line.split("Inference timings in us:", 1)[1]
        m = re.search(rf"count=({_NUM})(.*)", line)
        if m:
            fields = dict(re.findall(rf"(\w+)=({_NUM})", "count=" + m.group(1) + m.group(2)))
            runs.append({k: _num(v) for k, v in fields.items()})
        m = re.search(rf"Num threads:\s*\[?({_NUM})", line)
        if m:
            out["threads"] = int(_num(m.group(1)))
        m = re.search(rf"Memory footprint delta.*init=({_NUM}).*overall=({_NUM})", line)
        if m:
            out["memory_delta_mb"] = {"init": _num(m.group(1)), "overall": _num(m.group(2))}
        m = re.search(rf"[Pp]eak memory footprint \(MB\)[^:]*:\s*({_NUM})", line)
        if m:
            out["peak_memory_mb"] = _num(m.group(1))
        m = re.search(rf"model file size \(MB\):\s*({_NUM})", line)
        if m:
            out["model_size_mb"] = _num(m.group(1))
    if timings is None:
        raise ValueError("no 'Inference timings in us:' line in the benchmark_model log (did the run fail?)")
    values = {k.strip().lower(): _num(v) for k, v in re.findall(rf"([A-Za-z ()]+):\s*({_NUM})", timings)}
    us = lambda key: values.get(key)  # noqa: E731
    out["init_ms"] = us("init") / 1e3 if us("init") is not None else None
    out["first_inference_ms"] = us("first inference") / 1e3 if us("first inference") is not None else None
    out["warmup_avg_ms"] = us("warmup (avg)") / 1e3 if us("warmup (avg)") is not None else None
    inference = {"mean": us("inference (avg)") / 1e3 if us("inference (avg)") is not None else None,
                 "p50": None, "p90": None, "p99": None}
    if runs:   # the last count= line is the timed run (the first is the warm-up)
        last = runs[-1]
        inference.update({"count": int(last.get("count", 0)), "min": last.get("min", 0) / 1e3,
                          "max": last.get("max", 0) / 1e3, "std": last.get("std", 0) / 1e3})
    out["invoke_ms"] = inference
    out["op_profile"] = parse_node_type_summary(text)
    return out


def parse_node_type_summary(text: str) -> dict:
    """``{node type: {"count", "avg_ms", "percent"}}`` from the 'Summary by node type' table (or {})."""
    rows, inside = {}, False
    for line in text.splitlines():
        if "Summary by node type" in line:
            inside, rows = True, {}
            continue
        if not inside:
            continue
        body = re.sub(r"^\s*(INFO:)?\s*", "", line)
        if body.startswith("[Node type]"):
            continue
        m = re.match(rf"(\S+)\s+({_NUM})\s+({_NUM})\s+({_NUM})%", body)
        if not m:
            if rows:
                inside = False
            continue
        rows[m.group(1)] = {"count": int(_num(m.group(2))), "avg_ms": _num(m.group(3)), "percent": _num(m.group(4))}
    return rows


def to_result(parsed: dict, threads: int | None, xnnpack: bool) -> dict:
    """One entry of the shared ``results`` list (fields deploy/benchmark.py cannot fill are null)."""
    profile = parsed.get("op_profile") or {}
    return {"threads": parsed.get("threads", threads), "init_ms": parsed.get("init_ms"),
            "first_inference_ms": parsed.get("first_inference_ms"), "warmup_avg_ms": parsed.get("warmup_avg_ms"),
            "invoke_ms": parsed["invoke_ms"], "end_to_end_ms": None,
            "rss_init_mb": (parsed.get("memory_delta_mb") or {}).get("init"),
            "peak_rss_mb": parsed.get("peak_memory_mb"),
            "xnnpack": {"enabled": xnnpack,
                        "delegate_partitions": (profile.get("TfLiteXNNPackDelegate") or {}).get("count"),
                        "op_types_not_delegated": sorted(k for k in profile if k != "TfLiteXNNPackDelegate")},
            "op_profile": profile}


def _adb(serial: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["adb", *(["-s", serial] if serial else []), *args]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def run_on_device(args) -> list[tuple[int, str]]:
    binary, model = Path(args.benchmark_binary), Path(args.model)
    for p, what in ((binary, "--benchmark-binary"), (model, "--model")):
        if not p.is_file():
            raise SystemExit(f"error: {what} {p}: no such file")
    remote_bin, remote_model = f"{REMOTE_DIR}/benchmark_model", f"{REMOTE_DIR}/{model.name}"
    _adb(args.serial, "push", str(binary), remote_bin)
    _adb(args.serial, "shell", "chmod", "+x", remote_bin)
    _adb(args.serial, "push", str(model), remote_model)
    logs = []
    for threads in args.threads:
        cmd = [remote_bin, f"--graph={remote_model}", f"--num_threads={threads}", f"--warmup_runs={args.warmup}",
               f"--num_runs={args.runs}", f"--use_xnnpack={'false' if args.no_xnnpack else 'true'}",
               "--enable_op_profiling=true", "--report_peak_memory_footprint=true"]
        if args.cpu_mask:
            cmd = ["taskset", args.cpu_mask, *cmd]
        res = _adb(args.serial, "shell", " ".join(cmd), check=False)
        logs.append((threads, res.stdout + res.stderr))
    return logs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark a .tflite on Android with benchmark_model over adb.")
    p.add_argument("--model", help=".tflite file to push")
    p.add_argument("--benchmark-binary", help="a benchmark_model binary built for the phone")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="thread counts (default 1 4)")
    p.add_argument("--cpu-mask", default="f0", help="taskset mask pinning the run (default f0; '' = no pinning)")
    p.add_argument("--runs", type=int, default=200, help="timed runs (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    p.add_argument("--serial", help="adb device serial")
    p.add_argument("--no-xnnpack", action="store_true", help="--use_xnnpack=false")
    p.add_argument("--parse-log", type=Path, nargs="+", metavar="LOG",
                   help="parse saved benchmark_model output instead of running adb")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the figures as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parse_log:
        logs = [(t, Path(f).read_text()) for t, f in zip(args.threads + [None] * len(args.parse_log), args.parse_log)]
    else:
        if not args.model or not args.benchmark_binary:
            print("error: --model and --benchmark-binary are required (or --parse-log LOG)", file=sys.stderr)
            return 2
        logs = run_on_device(args)
    results = []
    for threads, text in logs:
        try:
            results.append(to_result(parse_log(text), threads, not args.no_xnnpack))
        except ValueError as e:
            print(f"error: threads={threads}: {e}\n--- log tail ---\n{text[-2000:]}", file=sys.stderr)
            return 1
    report = {"schema": SCHEMA, "tool": "deploy/android_benchmark.py (benchmark_model)", "model": args.model,
              "size_bytes": Path(args.model).stat().st_size if args.model and Path(args.model).is_file() else None,
              "runs": args.runs, "warmup": args.warmup, "xnnpack": not args.no_xnnpack,
              "cpu_mask": args.cpu_mask or None, "results": results}
    print(f"{'threads':>7} {'init':>8} {'first':>8} {'avg':>8} {'min':>8} {'max':>8} {'std':>7} {'peak MB':>8}")
    for r in results:
        i = r["invoke_ms"]
        fmt = lambda v, w=8: f"{v:{w}.2f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
        print(f"{r['threads'] if r['threads'] is not None else '-':>7} {fmt(r['init_ms'])} "
              f"{fmt(r['first_inference_ms'])} {fmt(i.get('mean'))} {fmt(i.get('min'))} {fmt(i.get('max'))} "
              f"{fmt(i.get('std'), 7)} {fmt(r['peak_rss_mb'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
