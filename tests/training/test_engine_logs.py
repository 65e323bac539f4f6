"""results.csv contents, run-dir files and the Keras callback hooks the engine drives."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_task import BATCH, X, Y, dataset_fn, epoch_batches, loss_fn, make_model, numpy_loss

from detector.training.engine import Trainer


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []
        self.batch_logs = []
        self.epoch_logs = []

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch))
        self.batch_logs.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch))
        self.epoch_logs.append(dict(logs))

    def on_train_end(self, logs=None):
        self.events.append(("train_end",))


def _fit(run_dir, callbacks, epochs=2, steps=3, **kw):
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model(seed=11)
        opt = keras.optimizers.SGD(0.01)
    trainer = Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                      train_dataset_fn=dataset_fn(), steps_per_epoch=steps, epochs=epochs,
                      global_batch_size=BATCH, run_dir=run_dir, progress=False,
                      callbacks=callbacks, **kw)
    return trainer, trainer.fit()


def test_user_callback_receives_every_hook_in_order(tmp_path):
    rec = Recorder()
    trainer, _ = _fit(tmp_path, [rec], eval_fn=lambda m: {"loss": numpy_loss(m, X, Y)})
    assert rec.model is trainer.model
    expected = [("train_begin",)]
    for e in range(2):
        expected.append(("epoch_begin", e))
        for b in range(3):
            expected += [("batch_begin", b), ("batch_end", b)]
        expected.append(("epoch_end", e))
    expected.append(("train_end",))
    assert rec.events == expected
    assert set(rec.batch_logs[0]) == {"loss", "cls_loss", "box_loss", "grad_norm", "lr"}
    assert rec.batch_logs[0]["lr"] == pytest.approx(0.01)
    # the epoch loss is the mean of the step losses; val metrics are in the epoch logs
    np.testing.assert_allclose(rec.epoch_logs[0]["loss"],
                               np.mean([b["loss"] for b in rec.batch_logs[:3]]), rtol=1e-6)
    assert rec.epoch_logs[1]["val_loss"] == pytest.approx(numpy_loss(trainer.model, X, Y), rel=1e-5)


def test_stop_training_from_a_keras_callback(tmp_path):
    stopper = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: setattr(stopper.model, "stop_training", b == 1))
    _, result = _fit(tmp_path, [stopper], epochs=3, steps=4)
    assert result.stop_reason == "stop_training" and result.step == 2


def test_step_loss_is_the_loss_before_the_update(tmp_path):
    """The logged step loss equals the numpy loss of the weights the step started from."""
    seen = {}

    class Snap(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                seen["w"] = self.model.get_weights()

        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                seen["loss"] = logs["loss"]

    trainer, _ = _fit(tmp_path, [Snap()], epochs=1)
    xb, yb = [t.numpy() for t in list(epoch_batches(0).take(3))[2]]
    trainer.model.set_weights(seen["w"])
    assert seen["loss"] == pytest.approx(numpy_loss(trainer.model, xb, yb), rel=1e-5)


def test_results_csv_columns_and_run_files(tmp_path):
    trainer, _ = _fit(tmp_path, [], epochs=3, eval_every=2,
                      eval_fn=lambda m: {"AP": 0.5, "AP50": 0.75})
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "step", "loss", "cls_loss", "box_loss", "lr", "grad_norm",
                       "val_AP", "val_AP50", "epoch_time_s", "images_per_s", "input_wait_share"]
    assert [r[:2] for r in rows[1:]] == [["1", "3"], ["2", "6"], ["3", "9"]]
    # evaluated on epoch 2 (every 2) and the last epoch; empty cells otherwise
    assert [r[7] for r in rows[1:]] == ["", "0.5", "0.5"]
    for r in rows[1:]:
        assert float(r[10]) > 0 and 0 <= float(r[11]) <= 1
    assert (tmp_path / "model.keras").is_file()
    restored = keras.models.load_model(tmp_path / "model.keras")
    for a, b in zip(restored.get_weights(), trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last"]
