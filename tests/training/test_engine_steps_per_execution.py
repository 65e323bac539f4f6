"""train.steps_per_execution: several steps per tf.function call give the same training."""

import keras
import numpy as np
import tensorflow as tf
from toy_task import BATCH, dataset_fn, loss_fn, make_model

from detector.training.engine import Trainer


class BatchEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append((batch, int(self.model.optimizer.iterations.numpy()), logs["loss"]))


def _fit(tmp_path, k, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model, opt = make_model(seed=3), keras.optimizers.Adam(0.05)
    ends = BatchEnds()
    trainer = Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                      train_dataset_fn=dataset_fn(seed=1), steps_per_epoch=7, epochs=2,
                      global_batch_size=BATCH, clip_norm=1.0, run_dir=tmp_path / f"k{k}", progress=False,
                      steps_per_execution=k, checkpoint_every_n_steps=4, callbacks=[ends])
    result = trainer.fit()
    return model.get_weights(), result, ends.ends, trainer


def test_steps_per_execution_matches_single_steps(tmp_path, two_replica_strategy):
    w1, r1, ends1, _ = _fit(tmp_path, 1)
    w3, r3, ends3, trainer = _fit(tmp_path, 3, two_replica_strategy)
    assert r3.step == r1.step == 14
    for a, b in zip(w1, w3):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    np.testing.assert_allclose(r3.logs["loss"], r1.logs["loss"], rtol=1e-5)
    # 7 steps per epoch in calls of 3, 3, 1: callbacks see the last batch of each call
    assert [(b, s) for b, s, _ in ends3] == [(2, 3), (5, 6), (6, 7), (2, 10), (5, 13), (6, 14)]
    assert set(trainer.step_fn._multi) == {3}
    # a call's logged loss is the mean of its steps
    per_step = [loss for _, _, loss in ends1]
    np.testing.assert_allclose(ends3[0][2], np.mean(per_step[:3]), rtol=1e-5)
    # step checkpoints when the step count crosses a multiple of 4 (mid-epoch), plus epoch ends
    ckpts = sorted(int(p.name[5:-6]) for p in (tmp_path / "k3" / "checkpoints" / "last").glob("ckpt-*.index"))
    # saved: 6 (crossed 4), 7 (epoch end), 10 (crossed 8), 13 (crossed 12), 14 (end); the newest 3 kept
    assert ckpts == [10, 13, 14]
