"""BinaryRecall, PrecisionRecallF1, OptimalF1 against numpy; replicas; config; fit/save."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detector.losses.dice import DiceLoss
from detector.metrics import BinaryRecall, OptimalF1, PrecisionRecallF1


def _np_counts(y, p, threshold, w=None):
    """Weighted (tp, fp, fn) with positive = y > 0.5, ignored = y < 0, predicted = p >= t."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float32).ravel()
    w = np.ones(y.size) if w is None else np.broadcast_to(np.asarray(w, np.float64), y.shape).ravel()
    y = y.ravel()
    w = w * (y >= 0)
    pos, pred = y > 0.5, p >= threshold
    return np.sum(w * (pred & pos)), np.sum(w * (pred & ~pos)), np.sum(w * (~pred & pos))


def _np_prf(tp, fp, fn):
    def div(a, b):
        return a / b if b else 0.0

    return {"precision": div(tp, tp + fp), "recall": div(tp, tp + fn), "f1": div(2 * tp, 2 * tp + fp + fn)}


def _np_f1_scan(y, p, thresholds, w=None):
    """Exhaustive scan: F1 at every threshold by direct comparison."""
    return np.array([_np_prf(*_np_counts(y, p, t, w))["f1"] for t in thresholds])


@pytest.fixture
def batches():
    """Three updates with bool / int / float labels, some probabilities exactly on thresholds."""
    rng = np.random.default_rng(0)
    out = []
    for dtype in (bool, np.int32, np.float32):
        p = rng.random((16, 1)).astype(np.float32)
        p[:4, 0] = [0.0, 0.5, 1.0, 0.25]
        y = rng.random((16, 1)) > 0.6
        out.append((y.astype(dtype), p, rng.uniform(0.5, 2.0, 16).astype(np.float32)))
    return out


def _all(batches):
    ys = np.concatenate([b[0].astype(np.float64) for b in batches])
    return ys, np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches])


@pytest.mark.parametrize("weighted", [False, True])
def test_recall_and_prf_match_numpy(batches, weighted):
    recall, prf = BinaryRecall(threshold=0.5), PrecisionRecallF1(threshold=0.5)
    for y, p, w in batches:
        recall.update_state(y, p, sample_weight=w if weighted else None)
        prf.update_state(y, p, sample_weight=w if weighted else None)
    y, p, w = _all(batches)
    expected = _np_prf(*_np_counts(y, p, 0.5, w[:, None] if weighted else None))
    assert float(recall.result()) == pytest.approx(expected["recall"], rel=1e-6)
    got = {k: float(v) for k, v in prf.result().items()}
    assert got == pytest.approx(expected, rel=1e-6)


def test_from_logits_and_ignored_labels():
    logits = np.array([[-3.0, 0.5, 2.0], [1.0, -0.2, 0.1]], np.float32)
    y = np.array([[1, -1, 1], [0, 1, -2]], np.int64)  # -1/-2 ignored
    prf = PrecisionRecallF1(threshold=0.5, from_logits=True)
    prf.update_state(y, logits)
    # kept: (-3,1) FN, (2,1) TP, (1,0) FP, (-0.2,1) FN
    assert {k: float(v) for k, v in prf.result().items()} == pytest.approx(
        {"precision": 0.5, "recall": 1 / 3, "f1": 2 / (2 + 1 + 2)})


def test_edge_cases_no_positives_all_positives_empty():
    recall, prf = BinaryRecall(), PrecisionRecallF1()
    for m in (recall, prf):
        m.update_state(np.zeros((0, 1)), np.zeros((0, 1)))  # empty batch: no change
    assert float(recall.result()) == 0.0 and all(float(v) == 0.0 for v in prf.result().values())
    prf.update_state(np.zeros(4), np.array([0.9, 0.1, 0.7, 0.2]))  # no positives
    assert {k: float(v) for k, v in prf.result().items()} == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    all_pos = PrecisionRecallF1()
    all_pos.update_state(np.ones(4, bool), np.array([0.9, 0.1, 0.7, 0.2]))
    assert {k: float(v) for k, v in all_pos.result().items()} == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3})


@pytest.mark.parametrize("weighted", [False, True])
def test_optimal_f1_matches_exhaustive_scan(batches, weighted):
    metric = OptimalF1(num_thresholds=101)
    for y, p, w in batches:
        metric.update_state(y, p, sample_weight=w if weighted else None)
    y, p, w = _all(batches)
    scan = _np_f1_scan(y, p, metric.thresholds, w[:, None] if weighted else None)
    np.testing.assert_allclose(metric.f1_curve().numpy(), scan, rtol=1e-12, atol=1e-12)
    assert float(metric.result()) == pytest.approx(scan.max(), rel=1e-6)
    assert float(metric.best_threshold()) == metric.thresholds[np.argmax(scan)]
    tp, fp, fn = _np_counts(y, p, metric.thresholds[37], w[:, None] if weighted else None)
    np.testing.assert_allclose(
        [metric.true_positives.numpy()[37], metric.false_positives.numpy()[37], metric.false_negatives.numpy()[37]],
        [tp, fp, fn], rtol=1e-12)


def test_optimal_f1_edge_cases():
    metric = OptimalF1(num_thresholds=5, from_logits=True)
    metric.update_state(np.zeros((0,)), np.zeros((0,)))
    assert float(metric.result()) == 0.0 and float(metric.best_threshold()) == 0.0
    metric.update_state(np.zeros(3), np.array([-1.0, 0.0, 5.0]))  # no positives: F1 0 everywhere
    assert float(metric.result()) == 0.0
    metric.reset_state()
    metric.update_state(np.ones(3), np.array([-1.0, 0.0, 5.0]))  # probs .27, .5, .99; all positive
    assert float(metric.result()) == 1.0 and float(metric.best_threshold()) == 0.0
    np.testing.assert_allclose(metric.f1_curve().numpy(), [1.0, 1.0, 0.8, 0.5, 0.0])


def _distributed_vs_single(strategy, make_metric, y, p, w):
    with strategy.scope():
        dist_metric = make_metric()

    def shard(a):
        half = len(a) // 2
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(a[half * ctx.replica_id_in_sync_group: half * (ctx.replica_id_in_sync_group + 1)]))

    @tf.function
    def step(yy, pp, ww):
        strategy.run(dist_metric.update_state, args=(yy, pp), kwargs={"sample_weight": ww})

    for _ in range(2):  # two steps accumulate
        step(shard(y), shard(p), shard(w))
    single = make_metric()
    for _ in range(2):
        single.update_state(y, p, sample_weight=w)
    with strategy.scope():
        dist_vars = [v.numpy() for v in dist_metric.variables]
        dist_result = tf.nest.map_structure(lambda t: t.numpy(), dist_metric.result())
    return dist_vars, [v.numpy() for v in single.variables], dist_result, tf.nest.map_structure(
        lambda t: t.numpy(), single.result())


@pytest.mark.parametrize("make_metric", [BinaryRecall, PrecisionRecallF1, lambda: OptimalF1(num_thresholds=21)])
def test_two_replicas_equal_single_device(two_replica_strategy, make_metric):
    rng = np.random.default_rng(3)
    p = rng.random((8, 3)).astype(np.float32)
    y = (rng.random((8, 3)) > 0.5).astype(np.float32)
    w = np.ones(8, np.float32)  # integer-valued counts: exact equality
    dist_vars, single_vars, dist_result, single_result = _distributed_vs_single(
        two_replica_strategy, make_metric, y, p, w)
    assert any(np.any(v > 0) for v in single_vars)
    for dv, sv in zip(dist_vars, single_vars):
        np.testing.assert_array_equal(dv, sv)
    assert dist_result == single_result


@pytest.mark.parametrize("metric", [BinaryRecall(0.3, True, name="r"), PrecisionRecallF1(0.7, False, name="prf"),
                                    OptimalF1(11, True, name="of1")])
def test_config_round_trip(metric):
    clone = type(metric).from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    serialized = keras.saving.serialize_keras_object(metric)
    assert serialized["registered_name"] == f"detector>{type(metric).__name__}"
    assert keras.saving.deserialize_keras_object(serialized).get_config() == metric.get_config()


def test_fit_evaluate_logs_match_numpy_and_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (x[:, :1] + 0.5 * rng.normal(size=(32, 1)) > 0).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=DiceLoss(),
                  metrics=[BinaryRecall(from_logits=True), OptimalF1(from_logits=True),
                           PrecisionRecallF1(from_logits=True)])
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "binary_recall", "optimal_f1", "precision", "recall", "f1"}
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)

    logits = model.predict(x, verbose=0).astype(np.float64)
    prob = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    expected = _np_prf(*_np_counts(y, prob, 0.5))
    thresholds = np.linspace(0, 1, 101).astype(np.float32)
    dice = 1.0 - (2 * np.sum(prob * y) + 1.0) / (prob.sum() + y.sum() + 1.0)
    assert logs["loss"] == pytest.approx(dice, rel=1e-5)
    assert logs["binary_recall"] == pytest.approx(expected["recall"], rel=1e-6)
    assert logs["optimal_f1"] == pytest.approx(_np_f1_scan(y, prob, thresholds).max(), rel=1e-6)
    assert {k: logs[k] for k in ("precision", "recall", "f1")} == pytest.approx(expected, rel=1e-6)

    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.loss, DiceLoss)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.evaluate(x, y, batch_size=32, verbose=0, return_dict=True) == logs


def test_fit_under_two_replicas_matches_single_device(two_replica_strategy):
    """Batch-Dice gradients and epoch-end metric logs are replica-count invariant."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (x[:, :1] + 0.5 * rng.normal(size=(32, 1)) > 0).astype(np.float32)

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=DiceLoss(),
                          metrics=[BinaryRecall(from_logits=True), OptimalF1(from_logits=True),
                                   PrecisionRecallF1(from_logits=True)])
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False).history
        return history, model.get_weights()

    single_history, single_weights = run(tf.distribute.get_strategy())
    dist_history, dist_weights = run(two_replica_strategy)
    assert single_history.keys() == dist_history.keys()
    for key, values in single_history.items():
        np.testing.assert_allclose(dist_history[key], values, rtol=1e-6, err_msg=key)
    for dw, sw in zip(dist_weights, single_weights):
        np.testing.assert_allclose(dw, sw, atol=1e-6)
    assert single_history["loss"][1] < single_history["loss"][0]  # it trains
