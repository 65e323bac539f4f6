"""TFLite export on a smoke-sized model (configs/smoke.yaml, 128 px, built from the config,
not trained): float parity of the raw head, the in-model post-processing against the
project's Python decode + NMS, INT8 detections against float, the metadata sidecar,
``eval --tflite``, and the user errors of ``detector export`` (exit 2)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from tool_runner import run_in_process  # noqa: E402

from detector.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tmp dir, --set args, cfg, model, model.keras path, val batch)."""
    from detector.data import make_dataset
    from detector.model import build_detector

    tmp = tmp_path_factory.mktemp("export")
    # an untrained head scores ~prior_probability (0.01): keep its detections
    overrides = [f"data.synthetic.cache_dir={tmp / 'synthetic'}", f"data.cache_dir={tmp / 'cache'}",
                 "eval.score_threshold=0.001"]
    cfg = load_config("smoke.yaml", overrides)
    # Fixed initial weights: the INT8-vs-float checks below are on an untrained model, whose
    # margins (accuracy gate, box overlap) depend on the draw.
    import keras

    keras.utils.set_random_seed(1)
    model = build_detector(cfg)
    # Untrained predictors score every anchor ~prior (0.01) to within ~1e-5, below INT8
    # resolution and near float conversion noise: scale the predictors' pointwise
    # kernels so that logits, box codes and log-depths spread like a trained model's.
    batch = next(iter(make_dataset(cfg, "val", training=False)))
    x = batch["images"].numpy()
    out = model(x, training=False)
    for layer, key, target in ((model.cls_predictor, "cls_logits", 1.0), (model.box_predictor, "box", 0.3),
                               (model.depth_predictor, "depth", 0.3)):
        factor = target / float(np.std(out[key]))
        for w in layer.weights:
            if "pointwise" in w.path or ("kernel" in w.path and "depthwise" not in w.path):
                w.assign(w * factor)
    # Distinct per-class depth offsets, so that reading the detection's class is tested too.
    model.depth_class_offset.offset.assign(np.linspace(-0.5, 0.5, cfg.num_classes))
    path = tmp / "model.keras"
    model.save(path)
    sets = [a for o in overrides for a in ("--set", o)]
    return tmp, sets, cfg, model, path, batch


def _postprocess_op_types(model_content: bytes) -> set[str]:
    """Op types whose outputs are all tensors of the in-model post-processing."""
    from detector.export.converter import is_postprocess_node
    from detector.export.tflite_runner import make_interpreter

    interp = make_interpreter(model_content=model_content, num_threads=1, xnnpack=False)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    types = set()
    for op in interp._get_ops_details():  # noqa: SLF001
        outs = [names[i] for i in op["outputs"] if i >= 0]
        if outs and all(is_postprocess_node(n) for n in outs):
            types.add(op["op_name"])
    return types


@pytest.fixture(scope="module")
def float_models(setup):
    from detector.export.converter import convert_float
    from detector.export.graph import write_saved_model

    tmp, _, cfg, model, _, _ = setup
    raw, e2e = tmp / "raw_float.tflite", tmp / "e2e_float.tflite"
    raw.write_bytes(convert_float(write_saved_model(model, cfg, tmp / "sm_raw", "none")))
    e2e.write_bytes(convert_float(write_saved_model(model, cfg, tmp / "sm_e2e", "inside")))
    return raw, e2e


@pytest.fixture(scope="module")
def int8_export(setup):
    tmp, sets, _, _, path, _ = setup
    out = tmp / "model_int8.tflite"
    code, stdout, err = run_in_process("export", ["--checkpoint", str(path), "--config", "smoke.yaml", *sets,
                                                  "--output", str(out), "--calibration-images", "16",
                                                  "--max-ap-drop", "100", "--analyze-layers"])
    assert code == 0, err
    return out, stdout, err


def _iou(a, b):
    """IoU of yxyx boxes a [4] and b [M, 4]."""
    y1, x1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    y2, x2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def test_float_tflite_raw_head_equals_keras(setup, float_models):
    from detector.export.tflite_runner import TFLiteDetector

    _, _, _, model, _, batch = setup
    runner = TFLiteDetector(float_models[0], metadata={})
    x = batch["images"].numpy()
    ref = model(x, training=False)
    assert runner.postprocess == "none" and runner.input_dtype == np.float32
    for i in range(len(x)):
        got = runner(x[i].astype(np.uint8))
        for k in ("cls_logits", "box", "depth"):
            np.testing.assert_allclose(got[k], ref[k][i].numpy(), atol=1e-4, rtol=0, err_msg=k)


@pytest.mark.parametrize("use_grid,threshold,depth_per_class",
                         [(True, None, False), (False, None, False), (True, 0.3, False), (True, None, True)],
                         ids=["anchor_grid", "anchor_table", "threshold_0.3", "depth_per_class"])
def test_in_model_postprocess_equals_python_decode_on_random_outputs(setup, use_grid, threshold, depth_per_class):
    """Continuous random head outputs (no score ties): the TFLite graph of
    detector.export.postprocess gives exactly the detections of decode_detections, also
    with a score threshold that floors most logits before the top-k (``threshold_0.3``)
    and with one log-depth per anchor and class (``depth_per_class``: [1, N, C])."""
    import dataclasses

    import tensorflow as tf

    from detector.export.postprocess import AnchorGrid, postprocess_single
    from detector.export.tflite_runner import make_interpreter
    from detector.model import decode_detections

    _, _, cfg, model, _, _ = setup
    if threshold is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, score_threshold=threshold))
    anchors = model.anchors()
    n, c = anchors.shape[0], cfg.num_classes
    sf, size = cfg.model.box_scale_factors, cfg.data.image_size
    m = cfg.model
    grid = AnchorGrid.fit(anchors, size, m.min_level, m.max_level, m.anchors.num_scales * len(m.anchors.aspect_ratios))
    assert grid is not None
    if not use_grid:
        grid = None

    depth_shape = (1, n, c) if depth_per_class else (1, n)

    @tf.function(input_signature=[tf.TensorSpec([1, n, c]), tf.TensorSpec([1, n, 4]), tf.TensorSpec(depth_shape)])
    def fn(cls_logits, box, depth):
        return postprocess_single({"cls_logits": cls_logits, "box": box, "depth": depth}, anchors, cfg.eval, sf, size,
                                  grid)

    module = tf.Module()
    module.fn = fn
    saved = setup[0] / f"sm_postprocess_only_{use_grid}_{threshold}_{depth_per_class}"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": fn})
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interp = make_interpreter(model_content=conv.convert())
    run = interp.get_signature_runner("serving_default")
    rng = np.random.default_rng(0)
    for _ in range(3):
        raw = {"cls_logits": rng.normal(-3.0, 2.0, (1, n, c)).astype(np.float32),
               "box": rng.normal(0.0, 1.0, (1, n, 4)).astype(np.float32),
               "depth": rng.normal(2.0, 0.5, depth_shape).astype(np.float32)}
        ref = {k: v.numpy() for k, v in decode_detections(raw, anchors, cfg.eval, sf).items()}
        by_key = run(**raw)
        assert int(by_key["num_detections"][0]) == int(ref["num_detections"][0]) > 10
        np.testing.assert_array_equal(by_key["classes"], ref["classes"])
        np.testing.assert_allclose(by_key["scores"], ref["scores"], atol=1e-6)
        np.testing.assert_allclose(by_key["boxes"], ref["boxes"], atol=1e-3)
        np.testing.assert_allclose(by_key["depth"], ref["depth"], rtol=1e-5)


def test_e2e_float_tflite_matches_keras_decode_on_images(setup, float_models):
    from detector.export.tflite_runner import TFLiteDetector
    from detector.model import decode_detections

    _, _, cfg, model, _, batch = setup
    runner = TFLiteDetector(float_models[1], metadata={})
    x = batch["images"].numpy()
    ref = decode_detections(model(x, training=False), model.anchors(), cfg.eval, cfg.model.box_scale_factors)
    matched = total = 0
    for i in range(len(x)):
        got = runner(x[i].astype(np.uint8))
        n = int(ref["num_detections"][i])
        assert got["num_detections"] == n
        assert got["boxes"].shape == (cfg.eval.max_detections, 4) and got["classes"].dtype == np.int32
        np.testing.assert_allclose(got["scores"], ref["scores"][i].numpy(), atol=1e-5)
        for j in range(n):   # near-tied scores of an untrained head may swap slots: match as sets
            ok = ((got["classes"][:n] == int(ref["classes"][i, j]))
                  & (np.abs(got["boxes"][:n] - ref["boxes"][i, j].numpy()).max(-1) < 1e-2)
                  & (np.abs(got["depth"][:n] - ref["depth"][i, j].numpy()) < 1e-3))
            matched += bool(ok.any())
            total += 1
        assert (got["classes"][n:] == -1).all() and (got["scores"][n:] == 0).all()
    assert matched >= 0.97 * total


def test_int8_export_report_metadata_and_overlap(setup, float_models, int8_export):
    from detector.export.converter import op_counts, quantized_postprocess_tensors
    from detector.export.metadata import REQUIRED_KEYS
    from detector.export.tflite_runner import TFLiteDetector

    _, _, cfg, _, _, batch = setup
    out, stdout, _ = int8_export
    for name in ("keras float", "tflite float", "tflite int8", "accuracy gate PASS"):
        assert name in stdout
    meta = json.loads(Path(f"{out}.json").read_text())
    assert all(k in meta for k in REQUIRED_KEYS)
    assert meta["labels"] == list(cfg.data.classes) and meta["precision"] == "int8"
    assert meta["input"]["shape"] == [1, 128, 128, 3] and meta["input"]["dtype"] == "float32"
    assert set(meta["outputs"]) == {"boxes", "classes", "scores", "depth", "num_detections"}
    assert meta["outputs"]["boxes"]["shape"] == [1, cfg.eval.max_detections, 4]
    assert meta["calibration"]["count"] == 16 and meta["calibration"]["seed"] == 0
    assert len(meta["calibration"]["image_ids"]) == 16
    assert meta["nms"]["score_threshold"] == 0.001 and meta["accuracy"]["gate"]["passed"]
    assert meta["versions"]["tensorflow"] and meta["model_file"]["size_bytes"] == out.stat().st_size
    counts = op_counts(out.read_bytes())
    assert counts.get("CONV_2D", 0) > 0 and counts.get("QUANTIZE", 0) > 0
    assert not any(k.startswith("Flex") or k == "CUSTOM" for k in counts)
    # the post-processing is float: no quantized tensor in it, no LOGISTIC (fixed int8 output
    # range) for the scores; the body's swish activations do use LOGISTIC
    assert not quantized_postprocess_tensors(out.read_bytes()) and counts.get("LOGISTIC", 0) > 0
    assert "LOGISTIC" not in _postprocess_op_types(out.read_bytes())
    # --analyze-layers with a passing gate: the per-layer report, but the plain INT8 file
    quant = meta["quantization"]
    assert "per-layer quantization error of" in stdout and "per-layer sensitivity" in stdout
    assert quant["float_layers"] == [] and quant["selective_steps"] is None
    assert len(quant["ablation"]) == 16 and quant["layer_error_summary"]["layers"] > 16
    assert "file size, int8 vs float" in stdout
    assert sum(quant["size_breakdown_bytes"]["int8"].values()) == out.stat().st_size

    q, f = TFLiteDetector(out), TFLiteDetector(float_models[1], metadata={})
    assert q.labels == list(cfg.data.classes)
    x = batch["images"].numpy().astype(np.uint8)
    ious = []
    for i in range(len(x)):
        dq, df = q(x[i]), f(x[i])
        for j in range(min(5, dq["num_detections"])):   # INT8 top 5 vs float top 10
            ious.append(_iou(dq["boxes"][j], df["boxes"][:10]).max())
    ious = np.array(ious)
    print("INT8 top-5 best IoU with float:", np.round(ious, 3))
    assert len(ious) > 0 and (ious > 0.9).mean() >= 0.8

    # any-size image -> original-pixel detections (letterbox, trim, unscale)
    big = np.repeat(np.repeat(x[0], 2, axis=0), 2, axis=1)[:200]          # 200 x 256
    dets = q.detect_image(big)
    n = len(dets["scores"])
    assert dets["scale"] == pytest.approx(0.5) and dets["boxes"].shape == (n, 4) and len(dets["labels"]) == n
    assert (dets["boxes"][:, [0, 2]] <= 200).all() and (dets["boxes"][:, [1, 3]] <= 256).all()


def test_eval_tflite_json(setup, int8_export):
    _, sets, _, _, _, _ = setup
    code, out, err = run_in_process("eval", ["--config", "smoke.yaml", *sets, "--tflite", str(int8_export[0]),
                                             "--json"])
    assert code == 0, err
    stats = json.loads(out)
    assert "AP" in stats and "depth_error" in stats and -1.0 <= stats["AP"] <= 1.0


def test_eval_tflite_per_class_and_plots(setup, int8_export, tmp_path):
    _, sets, _, _, _, _ = setup
    code, out, err = run_in_process("eval", ["--config", "smoke.yaml", *sets, "--tflite", str(int8_export[0]),
                                             "--json", "--per-class", "--plots", str(tmp_path / "plots")])
    assert code == 0, err
    stats = json.loads(out)
    assert [r["name"] for r in stats["per_class"]] == list(load_config("smoke.yaml").data.classes)
    for name in ("pr_curve.png", "confusion_matrix.png", "per_class.csv", "val_predictions.jpg"):
        assert (tmp_path / "plots" / name).stat().st_size > 0, name


def test_predict_with_a_tflite_file(setup, int8_export, tmp_path):
    """``detector predict --checkpoint FILE.tflite`` needs only the file and its sidecar; its
    COCO boxes are the runner's own detections mapped to original-image pixels."""
    import cv2

    from detector.export.tflite_runner import TFLiteDetector

    tmp = setup[0]
    images = sorted((tmp / "synthetic").rglob("val/*.jpg"))[:3]
    assert images
    code, _, err = run_in_process("predict", ["--checkpoint", str(int8_export[0]), "--source", str(images[0].parent),
                                              "--out", str(tmp_path / "p"), "--save-json", "--json-score", "0.0"])
    assert code == 0, err
    assert (tmp_path / "p" / images[0].name).is_file()
    results = json.loads((tmp_path / "p" / "predictions.json").read_text())
    ids = json.loads((tmp_path / "p" / "image_ids.json").read_text())
    first = [r for r in results if r["image_id"] == ids[str(images[0])]]
    want = TFLiteDetector(int8_export[0]).detect_image(cv2.imread(str(images[0]))[:, :, ::-1].copy())
    assert len(first) == len(want["scores"]) > 0
    y1, x1, y2, x2 = want["boxes"][0]
    np.testing.assert_allclose(first[0]["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-3)
    assert first[0]["score"] == pytest.approx(float(want["scores"][0]), abs=1e-6)


def test_user_errors_exit_2(setup, tmp_path):
    import tensorflow as tf

    from detector.model import build_detector
    from detector.training.checkpoints import model_state

    tmp, sets, _, _, path, _ = setup
    base = ["--config", "smoke.yaml", *sets, "--calibration-images", "2"]

    code, _, err = run_in_process("export", [*base, "--checkpoint", str(tmp / "nope"), "--output",
                                             str(tmp_path / "m.tflite")])
    assert code == 2 and "--checkpoint" in err and "no such" in err

    # a .keras file of another config (other input size)
    code, _, err = run_in_process("export", [*base, "--set", "data.image_size=160", "--checkpoint", str(path),
                                             "--output", str(tmp_path / "m.tflite")])
    assert code == 2 and "data.image_size" in err

    # a training checkpoint of another architecture
    other = build_detector(load_config("smoke.yaml", ["model.fpn_channels=8"]))
    prefix = tf.train.Checkpoint(**model_state(other)).write(str(tmp_path / "ckpt" / "ckpt-1"))
    code, _, err = run_in_process("export", [*base, "--checkpoint", prefix, "--output", str(tmp_path / "m.tflite")])
    assert code == 2 and "does not match" in err

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for bad in (blocker / "m.tflite", tmp_path / "missing_dir" / "m.tflite", tmp_path):
        code, _, err = run_in_process("export", [*base, "--checkpoint", str(path), "--output", str(bad)])
        assert code == 2 and "--output" in err, (bad, err)


def test_layer_errors_and_selective_quantization(setup, float_models, monkeypatch):
    """QuantizationDebugger ranks real layers (never the float post-processing); the
    selective loop keeps layers in float best-first and stops at the first accepted model."""
    from detector.export import converter, quantization

    tmp, _, _, _, _, batch = setup
    images = [x[None] for x in batch["images"].numpy()[:4]]
    quantizer = converter.Int8Quantizer(tmp / "sm_e2e", lambda: iter(images))
    keep = converter.postprocess_nodes(quantizer.calibrated_model)
    assert keep and all(n.startswith(("postprocess/", "StatefulPartitionedCall")) for n in keep)
    ranked = quantization.layer_errors(quantizer, lambda: iter(images[:2]), keep)
    ranked = [e for e in ranked if not converter.is_postprocess_node(e.name)]
    assert len(ranked) > 10 and all(e.rmse_over_scale >= 0 for e in ranked)
    assert ranked[0].rmse_over_scale >= ranked[-1].rmse_over_scale

    # the loop itself, on a stand-in quantizer (model bytes grow with the float layers)
    class Fake:
        def quantize(self, denylisted_nodes=(), **_):
            return b"m" * (100 + 10 * len(denylisted_nodes))

    monkeypatch.setattr(quantization, "median_invoke_ms", lambda model, image: len(model) / 100)
    layers = [quantization.LayerError(f"layer{i}", "CONV_2D", 0.3, 0.0, 1.0) for i in range(5)]
    gains = quantization.ablate(Fake(), layers, [], lambda m: 0.0)
    assert [g for _, g, _ in gains] == [0.0] * 5 and all(b == 10 for _, _, b in gains)
    chosen, steps = quantization.selective_quantization(
        Fake(), layers, ["pp"], lambda m: (len(m) >= 140, f"{len(m)} bytes"), images[0], steps=range(1, 6))
    assert chosen is not None and len(chosen) == 140
    assert [len(s.float_layers) for s in steps] == [0, 1, 2, 3] and steps[-1].accepted
    assert steps[-1].float_layers == ["layer0", "layer1", "layer2"]


def test_int8_quantizer_keeps_the_postprocess_float(setup, float_models):
    """Denylisting the post-processing tensors by name is not enough (ops with fused names,
    e.g. ``postprocess/TopKV2;postprocess/TopKV21``, are quantized anyway): the quantizer also
    denylists the op types only the post-processing uses, and refuses a model that still has
    a quantized tensor there.  A raw-head model has no post-processing to keep."""
    from detector.export import converter

    tmp, _, _, _, _, batch = setup
    images = [x[None] for x in batch["images"].numpy()[:4]]
    quantizer = converter.Int8Quantizer(tmp / "sm_e2e", lambda: iter(images))
    assert {"TOPK_V2", "GATHER", "NON_MAX_SUPPRESSION_V4"} <= set(quantizer.postprocess_ops)
    assert not {"CONV_2D", "DEPTHWISE_CONV_2D", "CONCATENATION", "RESHAPE"} & set(quantizer.postprocess_ops)
    model = quantizer.quantize()
    assert not converter.quantized_postprocess_tensors(model)
    assert "CONV_2D" in converter.op_counts(model) and "LOGISTIC" not in _postprocess_op_types(model)
    quantizer.postprocess_ops = []          # node names alone: quantized ops slip into the post-processing
    with pytest.raises(RuntimeError, match="quantized tensor"):
        quantizer.quantize()

    raw = converter.Int8Quantizer(tmp / "sm_raw", lambda: iter(images))
    assert raw.postprocess_nodes == [] and raw.postprocess_ops == []
    assert converter.op_counts(raw.quantize()).get("CONV_2D", 0) > 0


def test_size_breakdown_sums_to_the_file(setup, float_models):
    """Float: the weights are float32 constants; INT8: int8 kernels, int32 biases and
    per-channel quantization parameters, the categories summing to the file size."""
    from detector.export import converter

    tmp, _, _, _, _, batch = setup
    raw = float_models[0].read_bytes()
    parts = converter.size_breakdown(raw)
    assert sum(parts.values()) == len(raw) and parts["float32 constants"] > 0.5 * len(raw)
    assert parts["int8 weights"] == 0 and parts["structure"] >= 0
    images = [x[None] for x in batch["images"].numpy()[:4]]
    q = converter.Int8Quantizer(tmp / "sm_raw", lambda: iter(images)).quantize()
    qparts = converter.size_breakdown(q)
    assert sum(qparts.values()) == len(q) and qparts["structure"] >= 0
    assert qparts["int8 weights"] > 0 and qparts["int32 constants"] > 0 and qparts["quantization parameters"] > 0
    # every float weight became one int8 weight (4 bytes -> 1)
    assert abs(qparts["int8 weights"] - parts["float32 constants"] / 4) < 0.1 * qparts["int8 weights"]


def test_error_summary():
    from detector.export.quantization import LayerError, error_summary

    layers = [LayerError(f"l{i}", "CONV_2D", v, 0.0, 1.0) for i, v in enumerate((0.29, 0.3, 0.6, 1.5))]
    e = error_summary(layers)
    assert e["layers"] == 4 and e["max"] == 1.5 and e["above_0.5"] == 2 and e["above_1.0"] == 1
    assert e["median"] == pytest.approx(0.45) and error_summary([])["layers"] == 0
