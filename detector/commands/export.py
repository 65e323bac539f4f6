"""Export a trained detector to TFLite / LiteRT, with an accuracy report and gate.

    python tools/export_tflite.py --checkpoint RUN_DIR|MODEL.keras|CKPT [--config CFG] --output FILE
        [--int8 | --float | --fp16] [--calibration-images N] [--calibration-seed S]
        [--postprocess inside|none] [--max-ap-drop POINTS] [--no-selective] [--analyze-layers]

(= ``detector export ...``).  ``--checkpoint`` is resolved as in ``detector eval``
(a run directory: its model.keras, else checkpoints/best, else checkpoints/last; a
checkpoint prefix; or a ``.keras`` file).  The config defaults to the run
directory's ``config.yaml``; it supplies the data (val split, calibration images)
and the score / NMS settings baked into the model (``eval.*``).

Precision (default ``--int8``): full-integer post-training quantization, int8
weights (per channel) and activations, calibrated on ``--calibration-images`` real
training images (default 300, seed ``--calibration-seed``) through the evaluation
preprocessing; ``--float`` float32; ``--fp16`` float16 weights.  Batch 1, TFLite
builtin ops only.  Input ``images`` float32 ``[1, S, S, 3]`` RGB 0..255 letterboxed;
outputs float32 / int32 (see :mod:`detector.export.graph`).  ``--postprocess inside``
(default) puts decode + NMS in the model (outputs ``boxes``, ``classes``, ``scores``,
``depth``, ``num_detections``); ``none`` exports the raw head.

Every export ends with the accuracy report: AP, AP50, APs and depth error on the val
split for the float Keras model, the float ``.tflite`` and the exported file, plus
file sizes.  With ``--int8``, if the INT8 AP is more than ``--max-ap-drop`` points
(0-100 scale, default 1.0) below the Keras model's, the per-layer quantization error
is measured (QuantizationDebugger, rmse / quantization step per layer), each of
the 16 worst layers is kept alone in float to measure its AP gain, and the layers
that help are kept in float, best first and one more at a time (at most 8), until
the gate passes (``--no-selective`` skips this); the report names those layers
with their size and latency cost (``--analyze-layers``: the error ranking and
the ablation also when the gate passes, report only).  If the gate still fails the file is
written, the failure is printed, and the exit code is 1.  The metadata (labels,
input, outputs, NMS settings, calibration set, quantization, accuracy, versions) is
written to ``FILE.json``.  A missing or mismatched checkpoint and an unwritable
output exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from detector.commands.common import add_config_args
from detector.errors import UserError


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Export a trained detector to TFLite with an accuracy report.")
    p.add_argument("--checkpoint", required=True, help="run dir, .keras file, or checkpoint dir / prefix")
    add_config_args(p, required=False)
    p.add_argument("--output", required=True, type=Path, help="the .tflite file to write (metadata: FILE.json)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="full-integer INT8 (default)")
    prec.add_argument("--float", dest="precision", action="store_const", const="float", help="float32")
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="float16 weights")
    p.set_defaults(precision="int8")
    p.add_argument("--calibration-images", type=int, default=300, metavar="N",
                   help="training images used to calibrate INT8 (default 300)")
    p.add_argument("--calibration-seed", type=int, default=0, help="seed choosing the calibration images")
    p.add_argument("--postprocess", choices=("inside", "none"), default="inside",
                   help="decode + NMS inside the model (default) or the raw head")
    p.add_argument("--max-ap-drop", type=float, default=1.0, metavar="POINTS",
                   help="INT8 may lose at most this much AP (0-100 scale) vs the Keras model (default 1.0)")
    p.add_argument("--no-selective", action="store_true",
                   help="do not keep sensitive layers in float when the INT8 gate fails")
    p.add_argument("--analyze-layers", action="store_true",
                   help="INT8: measure and print the per-layer error and sensitivity even when the gate passes "
                        "(report only; the file is changed only when the gate fails)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the accuracy report as JSON here")
    return p


def _check_output(path: Path) -> Path:
    path = path.expanduser()
    if path.is_dir():
        raise UserError(f"--output {path}: is a directory; give a file name such as model_int8.tflite")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UserError(f"--output {path}: not writable, {parent} {what}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--output {path}: not writable")
    return path


def _load_config(args, run_dir: Path | None):
    from detector.config import load_config

    if args.config:
        return load_config(args.config, args.overrides)
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        return load_config(str(run_dir / "config.yaml"), args.overrides)
    raise UserError(f"--checkpoint {args.checkpoint}: not a run directory with a config.yaml; pass --config CFG")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    output = _check_output(args.output)
    if args.calibration_images <= 0:
        raise UserError(f"--calibration-images must be positive, got {args.calibration_images}")
    if args.max_ap_drop < 0:
        raise UserError(f"--max-ap-drop must be >= 0, got {args.max_ap_drop}")
    ckpt = Path(args.checkpoint).expanduser()
    if not ckpt.exists() and not Path(f"{ckpt}.index").is_file():
        raise UserError(f"--checkpoint {args.checkpoint}: no such file, directory or checkpoint prefix")

    from detector.inference.loading import checkpoint_candidates, load_checkpoint

    _, run_dir = checkpoint_candidates(args.checkpoint)
    if run_dir is None and ckpt.is_dir() and (ckpt / "config.yaml").is_file():
        run_dir = ckpt
    cfg = _load_config(args, run_dir)
    model, cfg, path, _ = load_checkpoint(cfg, args.checkpoint)
    return export(model, cfg, output, precision=args.precision, postprocess=args.postprocess,
                  calibration_images=args.calibration_images, calibration_seed=args.calibration_seed,
                  max_ap_drop=args.max_ap_drop, selective=not args.no_selective, checkpoint=path,
                  report_json=args.json, analyze_layers=args.analyze_layers)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export(model, cfg, output: Path, *, precision: str = "int8", postprocess: str = "inside",
           calibration_images: int = 300, calibration_seed: int = 0, max_ap_drop: float = 1.0,
           selective: bool = True, checkpoint: str = "", report_json: Path | None = None,
           analyze_layers: bool = False) -> int:
    """Convert, evaluate, gate, write ``output`` + ``output.json``; returns the exit code."""
    from detector.export import accuracy, converter, metadata, quantization
    from detector.export.graph import write_saved_model
    from detector.export.tflite_runner import TFLiteDetector, TFLiteRunner, sidecar_path
    from detector.inference.runner import KerasRunner

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="detector_export_"))
    _log(f"exporting ({precision}, post-processing {postprocess}) -> {output}")
    saved = write_saved_model(model, cfg, work / "saved_model", postprocess)
    float_bytes = converter.convert_float(saved)
    float_path = work / "float.tflite"
    float_path.write_bytes(float_bytes)
    quant_info, calib_info, calib = None, None, None
    anchors = model.anchors()

    if precision == "float":
        out_bytes = float_bytes
    elif precision == "fp16":
        out_bytes = converter.convert_fp16(saved)
        quant_info = {"weights": "float16", "activations": "float32"}
    else:
        from detector.export.calibration import calibration_set

        t0 = time.perf_counter()
        calib = calibration_set(cfg, calibration_images, calibration_seed)
        calib_info = calib.describe()
        quantizer = converter.Int8Quantizer(saved, calib.batches)   # keeps the post-processing float
        keep_float = quantizer.postprocess_nodes
        out_bytes = quantizer.quantize()
        _log(f"calibrated on {len(calib)} training images (seed {calibration_seed}) and quantized in "
             f"{time.perf_counter() - t0:.1f} s")
        quant_info = {"weights": "int8 symmetric, per output channel (conv / depthwise conv)",
                      "activations": "int8 asymmetric, per tensor",
                      "input_output": "float32 input, float32 / int32 outputs (quantize / dequantize inside)",
                      "postprocess_in_float": bool(keep_float), "float_layers": [], "selective_steps": None}

    counts = converter.op_counts(out_bytes)
    converter.check_builtin_only(counts)
    try:
        output.write_bytes(out_bytes)
    except OSError as e:
        raise UserError(f"--output {output}: cannot write: {e.strerror}") from None

    # ------------------------------------------------------------------ accuracy report
    from detector.data import make_dataset

    _log("accuracy on the val split (same images, same evaluator):")
    val = make_dataset(cfg, "val", training=False)
    # The exported graph is the plain forward pass: compare it with the same (no flip test,
    # extra test scales or box voting).
    keras_runner = KerasRunner(model, cfg.eval.single_pass())
    results = {"keras": accuracy.evaluate(cfg, keras_runner, "keras float", val)}
    results["tflite float"] = accuracy.evaluate(
        cfg, TFLiteRunner(TFLiteDetector(float_path, metadata={}), cfg, anchors), "tflite float", val)
    label = f"tflite {precision}"

    def score(model_bytes: bytes, name: str, progress: bool = True):
        tmp = work / "candidate.tflite"
        tmp.write_bytes(model_bytes)
        return accuracy.evaluate(cfg, TFLiteRunner(TFLiteDetector(tmp, metadata={}), cfg, anchors),
                                 name, val, progress=progress)

    if precision != "float":
        results[label] = score(out_bytes, label)
    passed, gate_msg = True, None
    if precision == "int8":
        passed, gate_msg = accuracy.gate(results["keras"].stats, results[label].stats, max_ap_drop)
        if (not passed and selective) or analyze_layers:
            if not passed:
                _log(gate_msg)
            _log("measuring per-layer quantization error (QuantizationDebugger) ...")
            debug_images = lambda: (calib.images[i][None].astype("float32")  # noqa: E731
                                    for i in range(min(len(calib), 16)))
            ranked = quantization.layer_errors(quantizer, debug_images, keep_float)
            ranked = [e for e in ranked if not converter.is_postprocess_node(e.name)]
            cache = {}

            def score_points(model_bytes):
                return accuracy.points(score(model_bytes, "ablation", progress=False).stats["AP"])

            _log(f"keeping each of the {min(16, len(ranked))} worst layers alone in float (AP gain on val):")
            gains = quantization.ablate(quantizer, ranked[:16], keep_float, score_points)
            helpful = [e for e, gain, _ in gains if gain > 0]

            def accept(model_bytes):
                r = score(model_bytes, "selective int8", progress=False)
                cache["last"] = r
                return accuracy.gate(results["keras"].stats, r.stats, max_ap_drop)

            chosen, steps = None, None
            if not passed and selective:   # --analyze-layers alone reports, never changes the file
                chosen, steps = quantization.selective_quantization(
                    quantizer, helpful, keep_float, accept, calib.images[0][None].astype("float32"),
                    steps=range(1, min(8, len(helpful)) + 1))
            quant_info["ablation"] = [{"name": e.name, "ap_gain_points": g, "size_bytes": b} for e, g, b in gains]
            quant_info["layer_errors_top"] = [vars(e) for e in ranked[:16]]
            quant_info["layer_error_summary"] = quantization.error_summary(ranked)
            quant_info["selective_steps"] = [vars(s) for s in steps] if steps is not None else None
            if chosen is not None:
                out_bytes = chosen
                output.write_bytes(out_bytes)
                counts = converter.op_counts(out_bytes)
                results[label] = cache["last"]
                quant_info["float_layers"] = steps[-1].float_layers
                passed, gate_msg = accuracy.gate(results["keras"].stats, results[label].stats, max_ap_drop)

    rows = [{"name": "keras float", "stats": results["keras"].stats, "size_bytes": None},
            {"name": "tflite float", "stats": results["tflite float"].stats, "size_bytes": len(float_bytes)}]
    if precision != "float":
        rows.append({"name": label, "stats": results[label].stats, "size_bytes": len(out_bytes)})
    table = accuracy.format_report(rows, reference="keras float")
    print(f"\nAccuracy on {results['keras'].images} val images (AP in points, 0-100; depth error = mean "
          f"|d - d_gt| / d_gt on IoU>=0.5 matches; deltas vs keras float):")
    print(table)
    if quant_info and quant_info.get("layer_error_summary"):
        e = quant_info["layer_error_summary"]
        print(f"\nper-layer quantization error of {e['layers']} quantized layers (rmse in quantization steps; "
              f"rounding noise alone ~0.29): median {e['median']:.3f}, max {e['max']:.3f}, "
              f"{e['above_0.5']} above 0.5, {e['above_1.0']} above 1.0")
    if quant_info and quant_info.get("ablation"):
        print("\nper-layer sensitivity (QuantizationDebugger rmse/scale, then AP gain of keeping the layer alone "
              "in float):")
        errors = {e["name"]: e["rmse_over_scale"] for e in quant_info["layer_errors_top"]}
        for a in quant_info["ablation"]:
            print(f"  {a['ap_gain_points']:+.2f} AP  {a['size_bytes'] / 1e3:+7.1f} kB  rmse/scale "
                  f"{errors.get(a['name'], float('nan')):.3f}  {a['name'][:100]}")
    if quant_info and quant_info.get("selective_steps"):
        base = quant_info["selective_steps"][0]
        print("\nselective quantization (layers kept in float, cumulative; cost vs plain INT8):")
        for s in quant_info["selective_steps"][1:]:
            print(f"  {len(s['float_layers']):>2} layer(s): +{(s['size_bytes'] - base['size_bytes']) / 1e3:.1f} kB, "
                  f"{s['latency_ms'] - base['latency_ms']:+.2f} ms/invoke; {s['summary']}")
        if quant_info["float_layers"]:
            print("  kept in float: " + ", ".join(quant_info["float_layers"]))
    if precision != "float":
        parts = converter.size_breakdown(out_bytes)
        float_parts = converter.size_breakdown(float_bytes)
        if quant_info is not None:
            quant_info["size_breakdown_bytes"] = {"float": float_parts, precision: parts}
        print(f"\nfile size, {precision} vs float (kB): " + ", ".join(
            f"{k} {parts[k] / 1e3:.1f} / {float_parts[k] / 1e3:.1f}" for k in parts if parts[k] or float_parts[k]))
    print(f"\nops: {dict(sorted(counts.items()))} (TFLite builtins only)")
    if gate_msg:
        print(gate_msg)
    accuracy_meta = {"val_images": results["keras"].images,
                     "rows": [{"name": r["name"], "size_bytes": r["size_bytes"],
                               **{k: r["stats"].get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                                                  "AR100", "depth_error")}} for r in rows],
                     "gate": {"max_ap_drop_points": max_ap_drop, "passed": passed, "message": gate_msg},
                     "ops": counts}
    runner = TFLiteDetector(output, metadata={})
    meta = metadata.build_metadata(model_path=output, precision=precision, cfg=cfg, model=model, runner=runner,
                                   postprocess=postprocess, quantization=quant_info, calibration=calib_info,
                                   accuracy=accuracy_meta, checkpoint=checkpoint)
    side = metadata.write_metadata(sidecar_path(output), meta)
    if report_json is not None:
        Path(report_json).write_text(json.dumps(accuracy_meta, indent=2) + "\n")
    _log(f"wrote {output} ({len(out_bytes) / 1e6:.3f} MB) and {side} in {time.perf_counter() - t_start:.0f} s")
    return 0 if passed else 1
