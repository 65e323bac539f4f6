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

With the post-processing inside, :func:`postprocess_nodes` lists its tensors; they are
denylisted by default, so decode, top-k, NMS and the gathers run in float on the
dequantized head outputs (quantizing them would put the anchors, the decoded pixel
boxes and the output tensors on an 8-bit grid).
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

    def quantize(self, denylisted_nodes: Sequence[str] = (), denylisted_ops: Sequence[str] = (),
                 debug: bool = False) -> bytes:
        """INT8 model bytes; ``debug=True`` adds NumericVerify ops (for the per-layer analysis only)."""
        from tensorflow.lite.python import convert

        return convert.mlir_quantize(self.calibrated_model, disable_per_channel=False, fully_quantize=False,
                                     enable_numeric_verify=debug,
                                     denylisted_ops=list(denylisted_ops) or None,
                                     denylisted_nodes=list(denylisted_nodes) or None)


def tensor_names(model_content: bytes) -> list[str]:
    """Names of all tensors of a ``.tflite`` model (node names for ``denylisted_nodes``)."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    return [t["name"] for t in interp.get_tensor_details()]


def postprocess_nodes(model_content: bytes) -> list[str]:
    """Tensors of the in-model post-processing (name scope ``postprocess/``) and the graph
    outputs (``StatefulPartitionedCall:*``) of a (calibrated) model."""
    return [n for n in tensor_names(model_content) if is_postprocess_node(n)]


def is_postprocess_node(name: str) -> bool:
    """A tensor of the in-model post-processing or a graph output (see :func:`postprocess_nodes`)."""
    from detector.export.graph import POSTPROCESS_SCOPE

    return name.startswith(f"{POSTPROCESS_SCOPE}/") or name.startswith("StatefulPartitionedCall")


def op_counts(model_content: bytes) -> dict[str, int]:
    """``{op name: count}`` of a ``.tflite`` model (builtin names, e.g. ``CONV_2D``)."""
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    return dict(Counter(op["op_name"] for op in interp._get_ops_details()))  # noqa: SLF001


def check_builtin_only(counts: dict[str, int]) -> None:
    """Raise ``RuntimeError`` when a Flex (Select TF) or custom op is present."""
    bad = sorted(name for name in counts if name.startswith("Flex") or name.upper() == "CUSTOM")
    if bad:
        raise RuntimeError(f"the converted model holds non-builtin ops {bad}; only TFLite builtins are allowed")
