"""GradientMonitor logs the norms of the real step gradients (single device and 2 replicas)."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from toy_task import BATCH, dataset_fn, epoch_batches, loss_fn, make_model  # noqa: E402

from detector.callbacks import GradientMonitor  # noqa: E402
from detector.training.engine import Trainer  # noqa: E402


def _read_events(log_dir):
    scalars, histos = {}, {}
    for f in Path(log_dir).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                if v.tag.startswith("grad_norm/"):
                    scalars[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
                else:
                    assert v.metadata.plugin_data.plugin_name == "histograms"
                    histos[(v.tag, event.step)] = tf.make_ndarray(v.tensor)
    return scalars, histos


@pytest.mark.parametrize("replicas", [1, 2])
def test_logged_norms_equal_independent_gradients(tmp_path, replicas, request):
    strategy = (request.getfixturevalue("two_replica_strategy") if replicas == 2
                else tf.distribute.get_strategy())
    weights_at = {}

    class Snap(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            weights_at[batch] = self.model.get_weights()

    monitor = GradientMonitor(str(tmp_path), every_n_steps=3, histograms=True)
    with strategy.scope():
        model = make_model(seed=5)
        opt = keras.optimizers.Adam(0.05)
    trainer = Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                      train_dataset_fn=dataset_fn(seed=4), steps_per_epoch=7, epochs=1,
                      global_batch_size=BATCH, clip_norm=0.5, progress=False,
                      callbacks=[Snap(), monitor])
    trainer.fit()
    scalars, histos = _read_events(tmp_path)
    assert sorted({s for _, s in scalars}) == [0, 3, 6]

    batches = list(epoch_batches(0, seed=4).take(7))
    reference = make_model(seed=0)
    names = [v.path for v in reference.trainable_variables]
    assert names == ["hidden/kernel", "hidden/bias", "out/kernel", "out/bias"]
    for step in (3, 6):
        reference.set_weights(weights_at[step])
        x, y = batches[step]
        with tf.GradientTape() as tape:
            total = loss_fn((x, y), reference(x), tf.constant(float(BATCH)))["total"]
        grads = tape.gradient(total, reference.trainable_variables)
        for name, g in zip(names, grads):
            # unclipped gradients (clip_norm=0.5 is far below these norms)
            np.testing.assert_allclose(scalars[(f"grad_norm/{name}", step)], tf.norm(g).numpy(),
                                       rtol=1e-5)
            buckets = histos[(f"grad/{name}", step)]  # rows: left edge, right edge, count
            assert buckets[:, 2].sum() == g.numpy().size
            np.testing.assert_allclose([buckets[0, 0], buckets[-1, 1]],
                                       [g.numpy().min(), g.numpy().max()], rtol=1e-5, atol=1e-7)
        global_norm = tf.linalg.global_norm(grads).numpy()
        assert global_norm > 0.5
        np.testing.assert_allclose(scalars[("grad_norm/global", step)], global_norm, rtol=1e-5)
    assert monitor.last_step == 6
