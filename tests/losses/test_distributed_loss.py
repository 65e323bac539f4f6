"""Global positive-count normalisation: the per-replica gradients of a 2-replica
MirroredStrategy sum to the single-device gradient (what Keras' SUM all-reduce applies)."""

import numpy as np
import pytest
import tensorflow as tf

from detector.config import from_dict
from detector.losses import all_reduce_sum, count_positives
from detector.model import build_detector

GLOBAL_BATCH = 4


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    # Each MirroredStrategy restarts TF's process-wide collective keys; a second
    # strategy in the same process would otherwise clash (see tests/losses/test_dice.py).
    tf.distribute.MirroredStrategy._collective_key_base += 100000


def _cfg(weighting):
    return from_dict({"data": {"classes": ["a", "b"], "image_size": 64},
                      "model": {"backbone": {"width": 8}, "fpn_channels": 8, "head_channels": 8,
                                "head_convs": 1, "anchors": {"num_scales": 1, "aspect_ratios": [1.0]}},
                      "loss": {"weighting": weighting}})


def _batch(num_anchors, seed=0):
    rng = np.random.default_rng(seed)
    cls = rng.choice([-2, -1, 0, 1], size=(GLOBAL_BATCH, num_anchors), p=[0.1, 0.7, 0.1, 0.1]).astype(np.int32)
    cls[1] = -1  # an image without objects: replicas see different positive counts
    targets = {"cls": cls, "box": rng.normal(size=(GLOBAL_BATCH, num_anchors, 4)).astype(np.float32),
               "depth": rng.normal(2, 0.5, (GLOBAL_BATCH, num_anchors)).astype(np.float32),
               "depth_mask": ((cls >= 0) & (rng.random(cls.shape) < 0.5)).astype(np.float32)}
    images = rng.uniform(0, 255, (GLOBAL_BATCH, 64, 64, 3)).astype(np.float32)
    return images, targets


def _loss_and_grads(model, images, targets):
    # training=False: BN uses its moving statistics, so the forward pass does not
    # depend on how the batch is split and the comparison isolates the loss scaling.
    with tf.GradientTape() as tape:
        outputs = model(images, training=False)
        num_positives = all_reduce_sum(count_positives(targets))
        total = model.detection_loss(targets, outputs, num_positives)["total"]
    return total, tape.gradient(total, model.trainable_variables)


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_sum_of_replica_gradients_equals_single_device(two_replica_strategy, weighting):
    strategy = two_replica_strategy
    cfg = _cfg(weighting)
    with strategy.scope():
        dist_model = build_detector(cfg)
    single_model = build_detector(cfg)
    single_model.set_weights([np.asarray(w) for w in dist_model.get_weights()])
    if weighting == "uncertainty":  # non-zero log-variances exercise exp(-s) and the s/N split
        for m in (dist_model, single_model):
            m.task_uncertainty.log_variance.assign([0.3, -0.2, 0.5])
    images, targets = _batch(dist_model.anchors().shape[0])
    ref_loss, ref_grads = _loss_and_grads(single_model, images, targets)

    per_replica = GLOBAL_BATCH // strategy.num_replicas_in_sync

    def shard(ctx):
        lo = ctx.replica_id_in_sync_group * per_replica
        return (images[lo:lo + per_replica], {k: v[lo:lo + per_replica] for k, v in targets.items()})

    dist_inputs = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def replica_step(inputs):
        return strategy.run(lambda x, t: _loss_and_grads(dist_model, x, t), args=inputs)

    losses, grads = replica_step(dist_inputs)
    loss_sum = sum(float(v) for v in strategy.experimental_local_results(losses))
    np.testing.assert_allclose(loss_sum, float(ref_loss), rtol=1e-6)
    assert len(grads) == len(ref_grads) > 0
    for g, ref, var in zip(grads, ref_grads, single_model.trainable_variables):
        summed = sum(np.asarray(x) for x in strategy.experimental_local_results(g))
        np.testing.assert_allclose(summed, ref.numpy(), rtol=1e-5, atol=1e-6, err_msg=var.path)


def test_compute_loss_uses_global_positive_count(two_replica_strategy):
    """Detector.compute_loss (what fit calls) all-reduces the count by itself."""
    strategy = two_replica_strategy
    cfg = _cfg("fixed")
    with strategy.scope():
        model = build_detector(cfg)
    images, targets = _batch(model.anchors().shape[0], seed=1)
    outputs = model(images, training=False)
    expected = float(model.detection_loss(targets, outputs, count_positives(targets))["total"])

    def shard(ctx):
        lo = ctx.replica_id_in_sync_group * 2
        return images[lo:lo + 2], {k: v[lo:lo + 2] for k, v in targets.items()}

    @tf.function
    def step(inputs):
        def fn(x, t):
            return model.compute_loss(x=x, y=t, y_pred=model(x, training=False))
        return strategy.run(fn, args=inputs)

    per_replica = step(strategy.experimental_distribute_values_from_function(shard))
    np.testing.assert_allclose(sum(float(v) for v in strategy.experimental_local_results(per_replica)),
                               expected, rtol=1e-6)


def test_keras_fit_matches_the_engine_step_under_mirrored(two_replica_strategy):
    """``model.fit`` (the Keras path) and the engine's TrainStep take the same SGD step
    on 2 replicas: same global batch, same split, same weights afterwards."""
    import keras

    from detector.training.step import TrainStep

    strategy = two_replica_strategy
    cfg = _cfg("fixed")
    with strategy.scope():
        keras_model = build_detector(cfg)
        engine_model = build_detector(cfg)
        engine_model.set_weights(keras_model.get_weights())
        keras_model.compile(optimizer=keras.optimizers.SGD(0.05))
        optimizer = keras.optimizers.SGD(0.05)
    images, targets = _batch(keras_model.anchors().shape[0], seed=2)
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(GLOBAL_BATCH)
    history = keras_model.fit(ds, epochs=1, verbose=0, shuffle=False).history

    step = TrainStep(strategy, engine_model, optimizer,
                     loss_fn=lambda batch, outputs, count: engine_model.detection_loss(batch[1], outputs, count),
                     forward_fn=lambda m, batch, training: m(batch[0], training=training),
                     count_fn=lambda batch: count_positives(batch[1]))
    logs = step(next(iter(strategy.experimental_distribute_dataset(ds))))
    np.testing.assert_allclose(history["loss"][0], float(logs["total"]), rtol=1e-5)
    for a, b in zip(keras_model.trainable_weights, engine_model.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=a.path)
