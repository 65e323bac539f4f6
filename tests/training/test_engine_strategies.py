"""The engine gives the same weights under MirroredStrategy (2 CPU replicas) as on one device."""

import keras
import numpy as np
import tensorflow as tf
from toy_task import BATCH, dataset_fn, loss_fn, make_model

from detector.training.engine import Trainer


def _train(strategy, steps, clip_norm):
    with strategy.scope():
        model = make_model(seed=3)
        opt = keras.optimizers.Adam(0.05)
    trainer = Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                      train_dataset_fn=dataset_fn(seed=1), steps_per_epoch=steps, epochs=1,
                      global_batch_size=BATCH, clip_norm=clip_norm, progress=False)
    result = trainer.fit()
    return [np.array(w) for w in model.get_weights()], result


def test_mirrored_two_replicas_matches_default(two_replica_strategy):
    assert two_replica_strategy.num_replicas_in_sync == 2
    # clip_norm=1.0 is well below the toy's gradient norm (~5-8), so clipping is
    # active: it must use the norm of the GLOBAL gradient, not of each replica's half.
    w_one, r_one = _train(tf.distribute.get_strategy(), steps=6, clip_norm=1.0)
    w_two, r_two = _train(two_replica_strategy, steps=6, clip_norm=1.0)
    assert r_one.logs["grad_norm"] > 1.0
    # initial weights moved by the training (the comparison below is not vacuous)
    w0 = make_model(seed=3).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(w_one, w0)) > 0.05
    for a, b in zip(w_one, w_two):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # logged losses are the global-batch losses on both
    np.testing.assert_allclose(r_one.logs["loss"], r_two.logs["loss"], rtol=1e-5)
    np.testing.assert_allclose(r_one.logs["grad_norm"], r_two.logs["grad_norm"], rtol=1e-5)
