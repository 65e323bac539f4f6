"""Per-layer INT8 quantization error and selective quantization.

Three steps, used by ``detector export`` when the INT8 accuracy gate fails:

1. :func:`layer_errors` runs ``tf.lite.experimental.QuantizationDebugger`` on the
   NumericVerify-instrumented INT8 model (each quantized op's output is compared with
   the float op run on the same quantized input) over a few calibration images, and
   ranks the layers by ``rmse / scale``: the root-mean-square error of the layer's
   output in units of its own quantization step.  A well-quantized layer sits near
   ``1 / sqrt(12) ~ 0.29`` (pure rounding noise); layers far above lose information
   (clipped outliers, too wide a range).
2. :func:`ablate`: the local error does not say how much a layer matters for the
   detections, so each of the top candidates is kept in float on its own and the
   metric the gate uses (AP on the val split) is measured: the layer's AP gain.
3. :func:`selective_quantization` keeps layers in float (``denylisted_nodes``), best
   gain first and one more at a time, until the caller's ``accept`` function (the
   gate) is satisfied, recording what each step cost in file size and latency.

Choosing layers by their effect on the val-split AP and then gating on that same AP
fits the choice to those images; the report says how many layers were chosen so.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class LayerError:
    name: str            # output tensor name (what denylisted_nodes takes)
    op: str              # builtin op name
    rmse_over_scale: float
    mean_abs_error: float
    scale: float


def layer_errors(quantizer, debug_images: Callable[[], Iterable[np.ndarray]],
                 keep_float: Sequence[str] = ()) -> list[LayerError]:
    """Per-layer errors of ``quantizer.quantize(keep_float)``, worst first.

    Args:
      quantizer: a calibrated :class:`detector.export.converter.Int8Quantizer`.
      debug_images: callable giving float32 ``[1, S, S, 3]`` RGB 0..255 arrays.
      keep_float: nodes already kept in float (e.g. the post-processing).
    """
    import tensorflow as tf

    debug_model = quantizer.quantize(denylisted_nodes=keep_float, debug=True)

    def dataset():
        for image in debug_images():
            yield [np.asarray(image, np.float32)]

    debugger = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug_model,
                                                         debug_dataset=dataset)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    out = []
    for row in csv.DictReader(buf):
        scale = float(row.get("scale") or 0.0)
        mse = float(row.get("mean_squared_error") or 0.0)
        ratio = math.sqrt(mse) / scale if scale > 0 else 0.0
        out.append(LayerError(row["tensor_name"], row.get("op_name", ""), ratio,
                              float(row.get("mean_abs_error") or 0.0), scale))
    out.sort(key=lambda e: e.rmse_over_scale, reverse=True)
    return out


def error_summary(ranked: Sequence[LayerError]) -> dict:
    """Median / max rmse-per-step over the layers and how many sit well above rounding noise."""
    values = sorted(e.rmse_over_scale for e in ranked)
    if not values:
        return {"layers": 0, "median": 0.0, "max": 0.0, "above_0.5": 0, "above_1.0": 0}
    return {"layers": len(values), "median": float(np.median(values)), "max": values[-1],
            "above_0.5": sum(v > 0.5 for v in values), "above_1.0": sum(v > 1.0 for v in values)}


def ablate(quantizer, candidates: Sequence[LayerError], base_float: Sequence[str],
           score: Callable[[bytes], float]) -> list[tuple[LayerError, float, int]]:
    """``[(layer, score gain, size gain in bytes)]`` of keeping each candidate alone in float,
    best gain first; ``score(model_bytes)`` is e.g. the val AP in points."""
    base_model = quantizer.quantize(denylisted_nodes=base_float)
    base = score(base_model)
    out = []
    for e in candidates:
        model = quantizer.quantize(denylisted_nodes=list(base_float) + [e.name])
        gain = score(model) - base
        out.append((e, gain, len(model) - len(base_model)))
        print(f"  {gain:+.2f} AP points, {len(model) - len(base_model):+d} bytes with {e.name[:90]} in float",
              file=sys.stderr, flush=True)
    out.sort(key=lambda t: t[1], reverse=True)
    return out


@dataclass
class SelectiveStep:
    float_layers: list[str]      # kept in float at this step (cumulative)
    size_bytes: int
    latency_ms: float            # median invoke, 1 thread, XNNPACK
    accepted: bool
    summary: str                 # what accept() said (e.g. the gate line)


def median_invoke_ms(model_content: bytes, image: np.ndarray, runs: int = 50, threads: int = 1) -> float:
    """Median ``invoke`` time (ms) after 5 warm-ups; for relative costs only."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=threads)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.asarray(image, inp["dtype"]).reshape(inp["shape"]))
    for _ in range(5):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def selective_quantization(quantizer, ranked: list[LayerError], base_float: Sequence[str],
                           accept: Callable[[bytes], tuple[bool, str]], image: np.ndarray,
                           steps: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8)) -> tuple[bytes | None, list[SelectiveStep]]:
    """Keep the first ``k`` layers of ``ranked`` in float for ``k`` in ``steps`` until ``accept(model)`` holds.

    Returns ``(accepted model bytes or None, the steps tried)``; step 0 (nothing extra
    in float) is recorded first as the baseline for the size / latency costs.
    """
    history: list[SelectiveStep] = []
    base = quantizer.quantize(denylisted_nodes=base_float)
    history.append(SelectiveStep([], len(base), median_invoke_ms(base, image), False, "plain INT8 (baseline)"))
    for k in steps:
        if k > len(ranked):
            break
        layers = [e.name for e in ranked[:k]]
        model = quantizer.quantize(denylisted_nodes=list(base_float) + layers)
        ok, summary = accept(model)
        history.append(SelectiveStep(layers, len(model), median_invoke_ms(model, image), ok, summary))
        print(f"  selective quantization: {k} layer(s) in float -> {summary}", file=sys.stderr, flush=True)
        if ok:
            return model, history
    return None, history
