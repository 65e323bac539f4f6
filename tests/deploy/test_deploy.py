"""deploy/: benchmark.py runs without TensorFlow and the detector package (checked in a
subprocess where importing either fails) and writes its JSON; android_benchmark.py
parses benchmark_model logs (INFO: prefix, scientific notation, op profile)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOGS = Path(__file__).resolve().parent / "logs"
sys.path.insert(0, str(ROOT / "deploy"))

import android_benchmark  # noqa: E402

SHIM = """import sys
for name in ("tensorflow", "tf_keras", "keras", "detector"):
    sys.modules[name] = None   # any import of these raises ImportError
"""


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    """A 64x64 float model with two outputs (conv + sigmoid, conv)."""
    import keras
    import tensorflow as tf

    inp = keras.Input((64, 64, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    model = keras.Model(inp, [keras.layers.Conv2D(4, 1, activation="sigmoid")(x), keras.layers.Conv2D(2, 1)(x)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path_factory.mktemp("deploy") / "tiny.tflite"
    path.write_bytes(conv.convert())
    return path


def test_benchmark_runs_without_tensorflow_or_detector(tiny_tflite, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(shim)}
    # the shim works: importing tensorflow fails in such a process
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "import of tensorflow halted" in probe.stderr
    res = subprocess.run([sys.executable, str(ROOT / "deploy" / "benchmark.py"), "--model", str(tiny_tflite),
                          "--threads", "1", "2", "--runs", "5", "--warmup", "2", "--json", str(out)],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "invoke p50" in res.stdout
    report = json.loads(out.read_text())
    assert report["schema"] == "detector-benchmark/1" and report["size_bytes"] == tiny_tflite.stat().st_size
    assert [r["threads"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        for key in ("invoke_ms", "end_to_end_ms"):
            p = r[key]
            assert p["count"] == 5 and 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["max"]
        assert r["init_ms"] > 0 and r["first_inference_ms"] > 0 and r["peak_rss_mb"] > 0


def test_benchmark_no_xnnpack_and_bad_model(tiny_tflite, tmp_path):
    script = str(ROOT / "deploy" / "benchmark.py")
    res = subprocess.run([sys.executable, script, "--model", str(tiny_tflite), "--runs", "3", "--warmup", "0",
                          "--no-xnnpack"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, script, "--model", str(tmp_path / "missing.tflite")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no such file" in res.stderr


def test_letterbox_shape_and_padding():
    import benchmark

    img = np.full((30, 60, 3), 200, np.uint8)
    out = benchmark.letterbox(img, 64)
    assert out.shape == (64, 64, 3) and out[:32].min() == 200 and out[32:].max() == 0


def test_parse_log_info_prefix_and_scientific_notation():
    parsed = android_benchmark.parse_log((LOGS / "benchmark_model_info_prefix_sci.log").read_text())
    assert parsed["threads"] == 4
    assert parsed["init_ms"] == pytest.approx(12.338)
    assert parsed["first_inference_ms"] == pytest.approx(8.123)
    assert parsed["warmup_avg_ms"] == pytest.approx(3.81527)
    inv = parsed["invoke_ms"]
    assert inv["mean"] == pytest.approx(3.70512) and inv["count"] == 200
    assert inv["min"] == pytest.approx(3.561) and inv["max"] == pytest.approx(5.012)
    assert inv["std"] == pytest.approx(0.151)
    assert inv["p50"] is None   # benchmark_model prints no percentiles
    assert parsed["peak_memory_mb"] == pytest.approx(13.2031)
    assert parsed["memory_delta_mb"] == {"init": pytest.approx(4.51562), "overall": pytest.approx(9.35547)}
    prof = parsed["op_profile"]
    assert prof["TfLiteXNNPackDelegate"]["count"] == 10 and prof["NON_MAX_SUPPRESSION_V4"]["avg_ms"] == 0.301
    result = android_benchmark.to_result(parsed, 4, True)
    assert result["xnnpack"]["delegate_partitions"] == 10
    assert "TOPK_V2" in result["xnnpack"]["op_types_not_delegated"]


def test_parse_log_plain_and_failed(tmp_path):
    parsed = android_benchmark.parse_log((LOGS / "benchmark_model_plain.log").read_text())
    assert parsed["threads"] == 1 and parsed["invoke_ms"]["mean"] == pytest.approx(11.967)
    assert parsed["invoke_ms"]["count"] == 84 and parsed["op_profile"] == {}
    with pytest.raises(ValueError, match="Inference timings"):
        android_benchmark.parse_log("ERROR: Could not open '/data/local/tmp/x.tflite'.\n")
    out = tmp_path / "a.json"
    code = android_benchmark.main(["--parse-log", str(LOGS / "benchmark_model_plain.log"),
                                   str(LOGS / "benchmark_model_info_prefix_sci.log"), "--threads", "1", "4",
                                   "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["schema"] == "detector-benchmark/1"
    assert [r["threads"] for r in report["results"]] == [1, 4]


def test_benchmark_interleaves_several_models(tiny_tflite, tmp_path):
    other = tmp_path / "copy.tflite"
    other.write_bytes(tiny_tflite.read_bytes())
    out = tmp_path / "ab.json"
    res = subprocess.run([sys.executable, str(ROOT / "deploy" / "benchmark.py"), "--model", str(tiny_tflite),
                          str(other), "--runs", "7", "--block", "3", "--warmup", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "speed-up vs tiny.tflite" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["interleaved"] and [Path(r["model"]).name for r in doc["reports"]] == ["tiny.tflite", "copy.tflite"]
    assert all(r["results"][0]["invoke_ms"]["count"] == 7 for r in doc["reports"])
