"""The streaming Keras metric against pycocotools: compiled step, XLA, MirroredStrategy."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.evaluation import evaluate_files, reference, testing
from detector.evaluation.matching import bbox_iou as np_bbox_iou
from detector.evaluation.params import STAT_NAMES
from detector.evaluation.tf_matching import bbox_iou as tf_bbox_iou
from detector.metrics.coco_map import CapacityExceededError, MeanAveragePrecision

D_SLOTS, M_SLOTS, BATCH = 160, 12, 6


def _data(seed, num_images=20):
    gt, results = testing.random_coco(seed, num_images=num_images, crowded_image=2)
    order = [im["id"] for im in gt["images"]]
    np.random.default_rng(seed).shuffle(order)            # streaming order is arbitrary
    return gt, results, testing.to_batches(gt, results, BATCH, M_SLOTS, D_SLOTS, order)


def _run(metric, batches, jit_compile=False):
    step = tf.function(metric.update_state, jit_compile=jit_compile)
    for g, d, v in batches:
        step(g, d, v)
    return {k: float(v) for k, v in metric.result().items()}


def _max_diff(a, b):
    return max(abs(a[k] - b[k]) for k in STAT_NAMES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_step_equals_pycocotools(seed):
    gt, results, batches = _data(seed)
    metric = MeanAveragePrecision(num_classes=5, max_detections_per_image=D_SLOTS, capacity=4000)
    stats = _run(metric, batches)
    ev = reference.pycocotools_eval(gt, results)
    assert list(stats) == list(STAT_NAMES)
    assert _max_diff(stats, dict(zip(STAT_NAMES, ev.stats))) <= 1e-12
    p = ev.eval["precision"][:, :, :, 0, -1]
    valid = (p > -1).all(axis=(0, 1))
    np.testing.assert_array_equal(metric.per_class_ap(), np.where(valid, p.mean(axis=(0, 1)), -1))
    curves = metric.pr_curves()
    np.testing.assert_array_equal(curves["precision_50"], np.where(valid[:, None], p[0].T, -1))
    np.testing.assert_array_equal(curves["precision"], np.where(valid[:, None], p.mean(0).T, -1))


def test_xla_compiled_step_and_unjitted_matching_equal_pycocotools():
    gt, results, batches = _data(7)
    ref = reference.pycocotools_stats(gt, results)
    jit = _run(MeanAveragePrecision(5, D_SLOTS, capacity=4000), batches, jit_compile=True)
    plain = _run(MeanAveragePrecision(5, D_SLOTS, capacity=4000, jit_matching=False), batches)
    assert _max_diff(jit, ref) <= 1e-12
    assert _max_diff(plain, ref) <= 1e-12


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_iou_is_bitwise_numpy_iou(jit_compile):
    # XLA's CPU backend contracts a*b+c into FMAs unless prevented (see tf_matching.bbox_iou)
    rng = np.random.default_rng(0)
    g = np.round(np.concatenate([rng.uniform(0, 600, (4, 80, 2)), rng.uniform(0, 300, (4, 80, 2))], -1), 2)
    d = (np.repeat(g, 2, axis=1) + rng.normal(0, 5, (4, 160, 4))).astype(np.float32)
    crowd = rng.random((4, 80)) < 0.2
    fn = tf.function(lambda a, b, c: tf_bbox_iou(tf.cast(a, tf.float64), b, c), jit_compile=jit_compile)
    ours = fn(d, g, crowd).numpy()
    dd = np.broadcast_to(d.astype(np.float64)[:, :, None], (4, 160, 80, 4)).reshape(-1, 4)
    gg = np.broadcast_to(g[:, None], (4, 160, 80, 4)).reshape(-1, 4)
    cc = np.broadcast_to(crowd[:, None], (4, 160, 80)).reshape(-1)
    ref = np_bbox_iou(dd, gg, cc).reshape(ours.shape)
    assert (ref > 0.5).sum() > 1000
    np.testing.assert_array_equal(ours, ref)


def test_mirrored_strategy_equals_single_device(two_replica_strategy):
    gt, results, batches = _data(5)
    single = _run(MeanAveragePrecision(5, D_SLOTS, capacity=4000), batches)

    strategy = two_replica_strategy
    with strategy.scope():
        metric = MeanAveragePrecision(5, D_SLOTS, capacity=4000)
    stacked = tuple({k: np.concatenate([b[i][k] for b in batches]) for k in batches[0][i]} for i in range(2))
    valid = np.concatenate([b[2] for b in batches])
    ds = tf.data.Dataset.from_tensor_slices((*stacked, valid)).batch(BATCH)
    iterator = iter(strategy.experimental_distribute_dataset(ds))

    @tf.function
    def step(it):
        g, d, v = next(it)
        strategy.run(metric.update_state, (g, d, v))

    for _ in batches:
        step(iterator)
    stats = {k: float(v) for k, v in metric.result().items()}
    assert stats == single                                      # exactly, not approximately
    assert _max_diff(stats, reference.pycocotools_stats(gt, results)) <= 1e-12
    assert (metric.count.numpy() > 0).all()                     # both replicas stored records
    assert int(metric.num_images.numpy()) == len(gt["images"])


def test_cocoapi_val2014_through_the_metric(coco_ref_dir):
    # the metric gets float32 detections, so the reference is pycocotools on float32 values
    gt = json.loads((coco_ref_dir / "instances_val2014_100.json").read_text())
    results = json.loads((coco_ref_dir / "instances_val2014_fakebbox100_results.json").read_text())
    for r in results:
        r["bbox"] = np.float32(r["bbox"]).tolist()
        r["score"] = float(np.float32(r["score"]))
    batches = testing.to_batches(gt, results, 16, 48, 100)
    stats = _run(MeanAveragePrecision(80, 100, capacity=2000), batches)
    assert _max_diff(stats, reference.pycocotools_stats(gt, results)) <= 1e-12


def test_capacity_overflow_is_reported_and_reset_clears_state():
    gt, results, batches = _data(0)
    metric = MeanAveragePrecision(5, D_SLOTS, capacity=50)
    step = tf.function(metric.update_state)
    for g, d, v in batches:
        step(g, d, v)
    with pytest.raises(CapacityExceededError, match=r"capacity=50\): \d+ detection records did not fit"):
        metric.result()
    metric.reset_state()
    assert int(metric.count.numpy().sum()) == 0 and int(metric.dropped.numpy().sum()) == 0
    assert metric.result()["AP"] == -1.0                         # nothing seen: pycocotools' -1


def test_keras_evaluate_reports_the_12_stats():
    gt, results, batches = _data(2)
    ref = reference.pycocotools_stats(gt, results)

    class Eval(keras.Model):
        def __init__(self):
            super().__init__()
            self.coco = MeanAveragePrecision(5, D_SLOTS, capacity=4000)

        def call(self, x):
            return x

        def test_step(self, data):
            g, d, v = data
            self.coco.update_state(g, d, v)
            return self.coco.result()          # graph-mode result(): numpy_function

    model = Eval()
    model.compile()
    stacked = tuple({k: np.concatenate([b[i][k] for b in batches]) for k in batches[0][i]} for i in range(2))
    ds = tf.data.Dataset.from_tensor_slices((*stacked, np.concatenate([b[2] for b in batches]))).batch(BATCH)
    logs = model.evaluate(ds, return_dict=True, verbose=0)
    assert _max_diff({k: logs[k] for k in STAT_NAMES}, ref) <= 1e-12


def test_update_state_rejects_wrong_slot_count():
    _, _, batches = _data(0)
    with pytest.raises(ValueError, match="max_detections_per_image=100"):
        MeanAveragePrecision(5, 100).update_state(*batches[0][:2])


def test_same_records_as_the_file_evaluator(tmp_path):
    gt, results, batches = _data(3)
    metric = MeanAveragePrecision(5, D_SLOTS, capacity=4000)
    _run(metric, batches)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    file_result, _ = evaluate_files(tmp_path / "gt.json", tmp_path / "dt.json")
    ours = metric.coco_result()
    np.testing.assert_array_equal(ours.precision, file_result.precision)
    np.testing.assert_array_equal(ours.recall, file_result.recall)
    np.testing.assert_array_equal(ours.npig, file_result.npig)


def test_images_marked_invalid_are_ignored():
    gt, results, batches = _data(4)
    g, d, v = batches[-1]
    assert not v.all()
    for arrays in (g, d):                   # fill the padding rows with a real image's data
        for k in arrays:
            arrays[k][~v] = arrays[k][0]
    stats = _run(MeanAveragePrecision(5, D_SLOTS, capacity=4000), batches)
    assert _max_diff(stats, reference.pycocotools_stats(gt, results)) <= 1e-12
