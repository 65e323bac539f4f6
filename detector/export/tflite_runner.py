"""Run an exported ``.tflite`` detector: numpy + ``ai_edge_litert`` only (no TensorFlow).

    runner = TFLiteDetector("model_int8.tflite")           # reads model_int8.tflite.json too
    dets = runner(letterboxed_uint8_image)                  # [S, S, 3] or [1, S, S, 3] RGB

``dets`` (models exported with ``--postprocess inside``; ``D`` = max detections)::

    boxes          float32 [D, 4]  [ymin, xmin, ymax, xmax] network-input pixels
    classes        int32   [D]     index into runner.labels, -1 on padding rows
    scores         float32 [D]     descending, 0 on padding rows
    depth          float32 [D]     metres, 0 on padding rows
    num_detections int             valid leading rows

For ``--postprocess none`` models the call returns the raw head instead
(``cls_logits`` ``[N, C]``, ``box`` ``[N, 4]`` codes, ``depth`` ``[N]`` log-metres);
decoding them is the caller's job (:func:`detector.model.decode_detections`).

Letterboxing (the evaluation preprocessing): scale the RGB image by
``S / max(h, w)``, put it at the top-left of an ``S x S`` black canvas; divide the
boxes by the same scale to get original-image pixels (:func:`letterbox` below does
the first step with OpenCV when it is installed).

The interpreter comes from ``ai_edge_litert`` (``tf.lite.Interpreter`` is deprecated
and is the fallback only when LiteRT is not installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_interpreter(model_path: str | Path | None = None, model_content: bytes | None = None,
                     num_threads: int = 1, xnnpack: bool = True):
    """A LiteRT interpreter (XNNPACK unless ``xnnpack=False``), tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # pragma: no cover - LiteRT is a dependency; tf.lite as a last resort
        import tensorflow as tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=None if model_path is None else str(model_path), model_content=model_content,
                         num_threads=int(num_threads), experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


def sidecar_path(model_path: str | Path) -> Path:
    """``model.tflite`` -> ``model.tflite.json`` (the metadata written by ``detector export``)."""
    return Path(f"{model_path}.json")


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``(uint8 [size, size, 3], scale)``: the evaluation letterbox (needs OpenCV)."""
    import cv2

    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, scale


class TFLiteDetector:
    """A loaded ``.tflite`` detector plus its metadata sidecar (module docstring).

    Args:
      model_path: the ``.tflite`` file.
      num_threads: interpreter threads.
      xnnpack: use the XNNPACK delegate (default True).
      metadata: the sidecar dict; default: read ``model_path + ".json"`` if it exists.

    Attributes: ``metadata`` (dict, maybe empty), ``labels`` (list of class names or
    None), ``image_size`` (int ``S``), ``postprocess`` (``"inside"`` or ``"none"``),
    ``input_dtype`` (numpy dtype of the input tensor), ``output_names``.
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1, xnnpack: bool = True,
                 metadata: dict | None = None):
        self.model_path = Path(model_path)
        if metadata is None:
            side = sidecar_path(self.model_path)
            metadata = json.loads(side.read_text()) if side.is_file() else {}
        self.metadata = metadata
        self.interpreter = make_interpreter(self.model_path, num_threads=num_threads, xnnpack=xnnpack)
        sigs = self.interpreter.get_signature_list()
        self.signature = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        self._runner = self.interpreter.get_signature_runner(self.signature)
        inputs = self._runner.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"{model_path}: expected one input, found {sorted(inputs)}")
        (self.input_name, detail), = inputs.items()
        self.input_dtype = np.dtype(detail["dtype"])
        self.input_shape = tuple(int(v) for v in detail["shape"])
        self._input_quant = detail.get("quantization", (0.0, 0))
        self.image_size = int(self.input_shape[1])
        self.output_names = sorted(self._runner.get_output_details())
        self.postprocess = "inside" if "num_detections" in self.output_names else "none"
        self.labels = list(metadata.get("labels", [])) or None

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A letterboxed ``[S, S, 3]`` / ``[1, S, S, 3]`` RGB image (uint8 or float 0..255)
        -> the input tensor (float32 0..255, or quantized when the input is integer)."""
        x = np.asarray(image)
        if x.ndim == 3:
            x = x[None]
        if x.shape != self.input_shape:
            raise ValueError(f"input image of shape {x.shape}; the model takes {self.input_shape} "
                             f"(letterbox to {self.image_size} x {self.image_size} first)")
        if self.input_dtype == np.float32:
            return x.astype(np.float32, copy=False)
        scale, zero = self._input_quant
        if scale and (scale != 1.0 or zero != 0):
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max)
        return x.astype(self.input_dtype)

    def invoke(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run on a prepared input tensor; outputs by name, batch dimension kept."""
        return self._runner(**{self.input_name: tensor})

    def detect_image(self, image: np.ndarray) -> dict:
        """Any-size RGB uint8 image ``[h, w, 3]`` -> its valid detections in original-image pixels.

        Letterboxes (needs OpenCV), runs, keeps the ``num_detections`` valid rows and
        divides the boxes by the letterbox scale (clipped to the image): ``boxes`` float32
        ``[n, 4]`` yxyx, ``classes`` int32 ``[n]``, ``scores`` ``[n]``, ``depth`` ``[n]`` metres,
        ``labels`` list of ``n`` names (when the metadata has labels), ``scale`` float.
        """
        if self.postprocess != "inside":
            raise ValueError(f"{self.model_path}: a raw-head model; export with --postprocess inside")
        boxed, scale = letterbox(np.asarray(image), self.image_size)
        d = self(boxed)
        n = d["num_detections"]
        h, w = image.shape[:2]
        boxes = d["boxes"][:n] / scale
        boxes = np.clip(boxes, 0, [h, w, h, w]).astype(np.float32)
        out = {"boxes": boxes, "classes": d["classes"][:n], "scores": d["scores"][:n], "depth": d["depth"][:n],
               "scale": float(scale)}
        if self.labels:
            out["labels"] = [self.labels[c] for c in out["classes"]]
        return out

    def __call__(self, image: np.ndarray) -> dict:
        out = self.invoke(self.prepare(image))
        if self.postprocess == "none":
            return {k: np.asarray(v)[0] for k, v in out.items()}
        return {"boxes": np.asarray(out["boxes"], np.float32)[0],
                "classes": np.asarray(out["classes"]).astype(np.int32)[0],
                "scores": np.asarray(out["scores"], np.float32)[0],
                "depth": np.asarray(out["depth"], np.float32)[0],
                "num_detections": int(np.asarray(out["num_detections"]).reshape(-1)[0])}


class TFLiteRunner:
    """:class:`~detector.inference.runner.ModelRunner` over a :class:`TFLiteDetector`: a
    batch of letterboxed uint8 images ``[B, S, S, 3]`` -> batched detections in network
    pixels, one invoke per image (TFLite files are exported with batch 1).

    Raw-head files (``postprocess == "none"``) are decoded with the project's Python
    decode + NMS (needs TensorFlow, ``cfg.eval`` settings and ``anchors`` float32 ``[N, 4]``);
    files with the post-processing inside need no config (``cfg=None``: class names from
    the metadata); given a config, they must have ``eval.max_detections`` slots.
    """

    max_batch = None

    def __init__(self, detector: TFLiteDetector, cfg=None, anchors: np.ndarray | None = None):
        self.detector = detector
        self.image_size = detector.image_size
        self.class_names = tuple(detector.labels or cfg.data.classes)
        self.max_det = int(cfg.eval.max_detections) if cfg is not None else None
        self.timings = {"inference": 0.0, "postprocess": 0.0}
        self._decode = None
        if detector.postprocess == "none":
            if anchors is None:
                raise ValueError("a raw-head .tflite needs the anchors to be decoded")
            import tensorflow as tf

            from detector.model import decode_detections

            anchors_t = tf.constant(anchors, tf.float32)
            factors = tuple(cfg.model.box_scale_factors)
            eval_cfg = cfg.eval.single_pass()   # what the exported graph computes (no box voting)
            self._decode = tf.function(lambda raw: decode_detections(raw, anchors_t, eval_cfg, factors),
                                       reduce_retracing=True)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import time

        keys = ("boxes", "scores", "classes", "depth")
        t0 = time.perf_counter()
        outs = [self.detector(image) for image in np.asarray(images)]
        t1 = time.perf_counter()
        if self._decode is not None:
            raw = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
            dets = {k: v.numpy() for k, v in self._decode(raw).items() if k in keys}
        else:
            if outs and self.max_det is not None and outs[0]["scores"].shape[0] != self.max_det:
                raise ValueError(f"{self.detector.model_path}: {outs[0]['scores'].shape[0]} detection slots, but "
                                 f"eval.max_detections is {self.max_det}; export with the same config")
            dets = {k: np.stack([o[k] for o in outs]) for k in keys}
        dets["num_detections"] = (dets["classes"] >= 0).sum(axis=1).astype(np.int32)
        self.timings = {"inference": t1 - t0, "postprocess": time.perf_counter() - t1}
        return dets
