"""SavedModel (:mod:`detector.export.graph`) -> ``.tflite`` bytes: float32, fp16 or full INT8.

Conversion goes through ``tf.lite.TFLiteConverter.from_saved_model`` with
``target_spec.supported_ops`` restricted to TFLite builtins, so a graph that would
need a Flex (Select TF) op fails to convert instead of producing a file the LiteRT
interpreter cannot run.

INT8 is post-training full-integer quantization in two steps, so that the
calibration runs once and selective quantization can re-quantize cheaply:

1. :meth:`Int8Quantizer.__init__`: the converter with ``Optimize.DEFAULT`` and a
   representative dataset calibrates (records min/max of every float tensor on the
   calibration images) and stops there (``_experimental_calibrate_only``, the path
   ``tf.lite.experimental.QuantizationDebugger`` uses);
2. :meth:`Int8Quantizer.quantize`: the calibrated model is quantized by the MLIR
   quantizer: int8 weights (symmetric, per output channel for convolutions), int8
   activations (asymmetric, per tensor), int32 biases.  ``denylisted_nodes`` (output
   tensor names) and ``denylisted_ops`` (builtin op names such as ``EXP``) stay float;
   ops without an int8 kernel (e.g. ``NON_MAX_SUPPRESSION_V4``) run in float behind a
   ``DEQUANTIZE``.  Input and outputs keep their float32 / int32 types.

With the post-processing inside, :class:`Int8Quantizer` keeps it in float in every
model it quantizes, so decode, top-k, NMS and the gathers run in float on the
dequantized head outputs (quantizing them would put the anchors, the decoded pixel
boxes and the output tensors on an 8-bit grid).  Its tensors (:func:`postprocess_nodes`)
are not enough as ``denylisted_nodes``: the MLIR quantizer does not match ops whose
location is fused (tensor names such as ``postprocess/GatherV2_4;``,
``postprocess/TopKV2;postprocess/TopKV21``), and quantized ``TOPK_V2`` / ``GATHER`` /
``UNPACK`` then slip in (top-k on int8 scores, the candidates' box codes re-quantized
after their gather).  So the op types that only the post-processing uses
(:func:`postprocess_ops`) are denylisted by type as well, and :meth:`Int8Quantizer.quantize`
raises when a quantized tensor is left in the post-processing
(:func:`quantized_postprocess_tensors`; ``LOGISTIC``, whose fixed int8 output range
survives the denylist, is avoided in :mod:`detector.export.postprocess`).  On the default
model this took INT8 from -0.77 to -0.06 AP points vs float (docs/benchmarks.md section 9).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

PRECISIONS = ("int8", "float", "fp16")

def _converter(saved_model_dir: str | Path) -> tf.lite.TFLiteConverter:
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv


def convert_float(saved_model_dir: str | Path) -> bytes:
    """Float32 weights and activations."""
    return _converter(saved_model_dir).convert()


def convert_fp16(saved_model_dir: str | Path) -> bytes:
    """Float16 weights (dequantized to float32 at load time), float32 activations."""
    conv = _converter(saved_model_dir)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return conv.convert()


class Int8Quantizer:
    """Calibrate once, quantize as often as needed (see the module docstring).

    Args:
      saved_model_dir: the SavedModel of :func:`detector.export.graph.write_saved_model`.
      representative_images: callable returning an iterable of float32 ``[1, S, S, 3]``
        RGB 0..255 arrays (the calibration images, evaluation preprocessing).
    """

    def __init__(self, saved_model_dir: str | Path, representative_images: Callable[[], Iterable[np.ndarray]]):
        from detector.export.graph import INPUT_NAME

        def rep():
            for image in representative_images():
                yield {INPUT_NAME: np.asarray(image, np.float32)}

        conv = _converter(saved_model_dir)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_mlir_quantizer = True
        conv._experimental_calibrate_only = True  # noqa: SLF001 (the documented QuantizationDebugger path)
        with warnings.catch_warnings():   # calibration runs tf.lite.Interpreter, which warns it is deprecated
            warnings.simplefilter("ignore", UserWarning)
            self.calibrated_model: bytes = conv.convert()
        # the in-model post-processing (empty for a raw-head model), kept float by quantize()
        self.postprocess_nodes: list[str] = postprocess_nodes(self.calibrated_model)
        self.postprocess_ops: list[str] = postprocess_ops(self.calibrated_model)

    def quantize(self, denylisted_nodes: Sequence[str] = (), denylisted_ops: Sequence[str] = (),
                 debug: bool = False) -> bytes:
        """INT8 model bytes; ``debug=True`` adds NumericVerify ops (for the per-layer analysis only).

        The post-processing (if any) is always kept in float, on top of ``denylisted_*``;
        ``RuntimeError`` if a quantized tensor is left in it anyway.
        """
        from tensorflow.lite.python import convert

        nodes = list(dict.fromkeys([*self.postprocess_nodes, *denylisted_nodes]))
        ops = list(dict.fromkeys([*self.postprocess_ops, *denylisted_ops]))
        model = convert.mlir_quantize(self.calibrated_model, disable_per_channel=False, fully_quantize=False,
                                      enable_numeric_verify=debug, denylisted_ops=ops or None,
                                      denylisted_nodes=nodes or None)
        leaked = quantized_postprocess_tensors(model)
        if leaked:
            raise RuntimeError(f"INT8 quantization left {len(leaked)} quantized tensor(s) in the float "
                               f"post-processing: {leaked[:5]}")
        return model


def tensor_names(model_content: bytes) -> list[str]:
    """Names of all tensors of a ``.tflite`` model (node names for ``denylisted_nodes``)."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    return [t["name"] for t in interp.get_tensor_details()]


def _has_postprocess(names: Iterable[str]) -> bool:
    from detector.export.graph import POSTPROCESS_SCOPE

    return any(n.startswith(f"{POSTPROCESS_SCOPE}/") for n in names)


def postprocess_nodes(model_content: bytes) -> list[str]:
    """Tensors of the in-model post-processing (name scope ``postprocess/``) and the graph
    outputs (``StatefulPartitionedCall:*``) of a (calibrated) model; empty for a raw-head model."""
    names = tensor_names(model_content)
    return [n for n in names if is_postprocess_node(n)] if _has_postprocess(names) else []


def postprocess_ops(model_content: bytes) -> list[str]:
    """Builtin op types (e.g. ``TOPK_V2``, ``GATHER``) of the in-model post-processing that
    the network body does not use, so that ``denylisted_ops`` can keep them float without
    touching the body; empty for a raw-head model."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    if not _has_postprocess(names.values()):
        return []
    post, body = set(), set()
    for op in interp._get_ops_details():  # noqa: SLF001
        outs = [names[i] for i in op["outputs"] if i >= 0]
        (post if outs and all(is_postprocess_node(n) for n in outs) else body).add(op["op_name"])
    return sorted(post - body)


def quantized_postprocess_tensors(model_content: bytes) -> list[str]:
    """Names of the int8 / uint8 / int16 tensors of the in-model post-processing (should be
    none); empty for a raw-head model (whose int8 outputs are dequantized as graph outputs)."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    details = interp.get_tensor_details()
    if not _has_postprocess(t["name"] for t in details):
        return []
    return [t["name"] for t in details
            if is_postprocess_node(t["name"]) and np.dtype(t["dtype"]) in (np.int8, np.uint8, np.int16)]


def is_postprocess_node(name: str) -> bool:
    """A tensor of the in-model post-processing or a graph output (see :func:`postprocess_nodes`)."""
    from detector.export.graph import POSTPROCESS_SCOPE

    return name.startswith(f"{POSTPROCESS_SCOPE}/") or name.startswith("StatefulPartitionedCall")


def op_counts(model_content: bytes) -> dict[str, int]:
    """``{op name: count}`` of a ``.tflite`` model (builtin names, e.g. ``CONV_2D``)."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    return dict(Counter(op["op_name"] for op in interp._get_ops_details()))  # noqa: SLF001


def size_breakdown(model_content: bytes) -> dict[str, int]:
    """Where the bytes of a ``.tflite`` file go: ``{category: bytes}`` summing to the file size.

    Constant buffers by element type (``int8 weights``: quantized kernels; ``int32
    constants``: mostly the biases of quantized layers, which stay 32-bit; ``float32
    constants``: layers kept float and the post-processing's constants; ``other
    constants``), ``quantization parameters`` (one float32 scale and one int64 zero point
    per tensor, or per output channel of a per-channel kernel and of its bias), ``tensor
    names`` and ``structure`` (the rest: op and tensor tables, shapes, signature,
    metadata, flatbuffer alignment).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(bytearray(model_content), 0)
    kinds = {schema.TensorType.INT8: "int8 weights", schema.TensorType.INT32: "int32 constants",
             schema.TensorType.FLOAT32: "float32 constants"}
    out = dict.fromkeys(("int8 weights", "int32 constants", "float32 constants", "other constants",
                         "quantization parameters", "tensor names", "structure"), 0)
    seen: set[int] = set()
    for g in range(m.SubgraphsLength()):
        sub = m.Subgraphs(g)
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            out["tensor names"] += len(t.Name() or b"")
            q = t.Quantization()
            if q is not None:
                out["quantization parameters"] += 4 * q.ScaleLength() + 8 * q.ZeroPointLength()
            b = t.Buffer()
            if b in seen or b >= m.BuffersLength():
                continue
            seen.add(b)
            buf = m.Buffers(b)
            size = buf.DataLength() or (buf.Size() if buf.Offset() > 1 else 0)
            out[kinds.get(t.Type(), "other constants")] += size
    out["structure"] = len(model_content) - sum(out.values())
    return out


def check_builtin_only(counts: dict[str, int]) -> None:
    """Raise ``RuntimeError`` when a Flex (Select TF) or custom op is present."""
    bad = sorted(name for name in counts if name.startswith("Flex") or name.upper() == "CUSTOM")
    if bad:
        raise RuntimeError(f"the converted model holds non-builtin ops {bad}; only TFLite builtins are allowed")
