"""Resume equivalence, NaN stop, early stopping and best checkpoint, time limit."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_task import BATCH, CrashAt, X, Y, dataset_fn, loss_fn, make_model, numpy_loss

from detector.callbacks import CosineAnnealing
from detector.training.engine import EarlyStopping, NonFiniteLossError, Trainer
from detector.training.results import read_results

STEPS = 5


def _trainer(run_dir, epochs, total_epochs=4, loss=loss_fn, callbacks=(), data=None, **kw):
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model(seed=7)
        opt = keras.optimizers.AdamW(0.05, weight_decay=0.01)
    cos = CosineAnnealing(0.05, total_steps=total_epochs * STEPS, warmup_steps=3, min_lr=0.001,
                          restart_period=6)
    return Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss,
                   train_dataset_fn=data or dataset_fn(seed=2), steps_per_epoch=STEPS, epochs=epochs,
                   global_batch_size=BATCH, clip_norm=2.0, run_dir=run_dir, progress=False,
                   callbacks=[cos, *callbacks], **kw)


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full", epochs=4)
    full.fit()
    half = _trainer(tmp_path / "split", epochs=2)
    half.fit()
    resumed = _trainer(tmp_path / "split", epochs=4)
    # the fresh model starts from the init weights: restoring must replace them
    assert not np.allclose(resumed.model.get_weights()[0], full.model.get_weights()[0])
    result = resumed.fit(resume=True)
    assert result.epochs_done == 4 and result.step == 4 * STEPS
    assert int(resumed.optimizer.iterations.numpy()) == 4 * STEPS
    for a, b in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    # optimizer slots restored too (not just the weights)
    for a, b in zip(full.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, rtol=0)
    rows_full = read_results(tmp_path / "full" / "results.csv")
    rows_split = read_results(tmp_path / "split" / "results.csv")
    assert [r["epoch"] for r in rows_split] == ["1", "2", "3", "4"]
    for a, b in zip(rows_full, rows_split):
        assert a["step"] == b["step"]
        assert float(a["lr"]) == pytest.approx(float(b["lr"]), rel=1e-6)
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)


def test_one_input_pipeline_per_fit_and_an_exact_mid_epoch_resume(tmp_path):
    calls = []

    def data(*args):
        calls.append(args)
        return dataset_fn(seed=2)(*args)

    full = _trainer(tmp_path / "full", epochs=3, data=data)
    full.fit()
    assert calls == [(0, 0, STEPS)]   # (start_epoch, skip, steps_per_epoch): once for 3 epochs
    cut = _trainer(tmp_path / "cut", epochs=3, data=data, checkpoint_every_n_steps=3, callbacks=[CrashAt(8)])
    with pytest.raises(RuntimeError, match="crash"):
        cut.fit()
    # the newest checkpoint is step 6: epoch 2 with 1 of its 5 batches done
    calls.clear()
    resumed = _trainer(tmp_path / "cut", epochs=3, data=data)
    result = resumed.fit(resume=True)
    assert calls == [(1, 1, STEPS)]
    assert result.step == 3 * STEPS and result.epochs_done == 3
    for a, b in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    bad_step = 7  # epoch 2, batch 3 with 5 steps per epoch
    holder = {}

    def nan_loss(batch, outputs, count):
        losses = loss_fn(batch, outputs, count)
        it = holder["opt"].iterations
        # a multiplicative NaN so that the gradients are NaN too (as in a real divergence)
        losses["total"] *= tf.where(tf.equal(it, bad_step), tf.constant(math.nan), 1.0)
        return losses

    snapshots = {}
    snap = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.__setitem__(epoch, trainer.model.get_weights()))
    trainer = _trainer(tmp_path, epochs=3, loss=nan_loss, callbacks=[snap])
    holder["opt"] = trainer.optimizer
    with pytest.raises(NonFiniteLossError, match=r"step 7 \(epoch 2, batch 3\).*ckpt-5 \(after epoch 1\)"):
        trainer.fit()
    assert trainer.checkpoints.last.latest_checkpoint.endswith("ckpt-5")
    assert not (tmp_path / "model.keras").exists()
    assert [r["epoch"] for r in read_results(tmp_path / "results.csv")] == ["1"]
    # the checkpoint holds the finite weights of epoch 1, not the NaN-corrupted ones
    assert not np.all(np.isfinite(trainer.model.get_weights()[0]))
    fresh = _trainer(tmp_path, epochs=3)
    assert fresh.checkpoints.restore_last() == 1
    for a, b in zip(fresh.model.get_weights(), snapshots[0]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_and_best_checkpoint(tmp_path):
    scores = iter([0.1, 0.3, 0.3, 0.25, 0.9, 0.95])

    trainer = _trainer(tmp_path, epochs=6, eval_fn=lambda m: {"AP": next(scores)},
                       best_metric="val_AP", best_mode="max",
                       early_stopping=EarlyStopping("val_AP", "max", patience=2, min_delta=0.01))
    result = trainer.fit()
    # 0.1 -> 0.3 (best, epoch 2) -> 0.3 (no gain: wait 1) -> 0.25 (wait 2: stop after epoch 4)
    assert result.stop_reason == "early_stopping"
    assert result.epochs_done == 4
    assert result.best_epoch == 2 and result.best_value == pytest.approx(0.3)
    assert result.best_checkpoint.endswith(f"ckpt-{2 * STEPS}")
    rows = read_results(tmp_path / "results.csv")
    assert [float(r["val_AP"]) for r in rows] == [0.1, 0.3, 0.3, 0.25]
    assert (tmp_path / "model.keras").exists()
    # resuming an early-stopped run does not train further
    again = _trainer(tmp_path, epochs=6, eval_fn=lambda m: {"AP": 1.0}, best_metric="val_AP",
                     early_stopping=EarlyStopping("val_AP", "max", patience=2, min_delta=0.01))
    assert again.fit(resume=True).stop_reason == "early_stopping"
    assert int(again.optimizer.iterations.numpy()) == 4 * STEPS


def test_time_limit_stops_and_evaluates(tmp_path):
    calls = []
    trainer = _trainer(tmp_path, epochs=5, time_limit_s=1e-9, eval_every=3,
                       eval_fn=lambda m: calls.append(1) or {"loss": numpy_loss(m, X, Y)})
    result = trainer.fit()
    assert result.stop_reason == "time_limit"
    assert result.step == 1 and result.epochs_done == 1
    assert len(calls) == 1 and "val_loss" in result.logs
    assert trainer.checkpoints.last.latest_checkpoint.endswith("ckpt-1")
