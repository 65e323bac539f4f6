"""Export a trained detector to TFLite / LiteRT (float, fp16 or full INT8), with the
post-processing inside the model, a JSON metadata sidecar and an accuracy gate.

Modules (one job each):

- :mod:`~detector.export.graph`: the exported function (network + optional in-model
  post-processing) written as a SavedModel;
- :mod:`~detector.export.postprocess`: decode + top-k + NMS + gather for one image,
  built from TFLite builtin ops only;
- :mod:`~detector.export.calibration`: the INT8 calibration images (real training
  images through the evaluation preprocessing, seeded);
- :mod:`~detector.export.converter`: SavedModel -> ``.tflite`` bytes for each precision;
- :mod:`~detector.export.quantization`: per-layer quantization error and selective
  quantization (sensitive layers kept in float);
- :mod:`~detector.export.metadata`: the ``FILE.tflite.json`` sidecar;
- :mod:`~detector.export.tflite_runner`: run a ``.tflite`` (numpy + ai_edge_litert only);
- :mod:`~detector.export.accuracy`: COCO mAP + depth error of Keras and TFLite models on
  the same val images, the side-by-side report and the gate.

The command line is ``detector export`` (:mod:`detector.commands.export`).
"""
