"""The weights' moving average: its values, and that eval, checkpoints and model.keras see it
while training and --resume continue the raw weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_task import BATCH, dataset_fn, loss_fn, make_model

from detector.training.checkpoints import restore_model
from detector.training.ema import warm_up_average
from detector.training.engine import Trainer

STEPS, M = 4, 0.2


def momentum(t: int) -> float:
    """The average's momentum at update ``t`` (0-based): 0, then min(M, (1 + t) / (10 + t))."""
    return 0.0 if t == 0 else min(M, (1 + t) / (10 + t))


def _trainer(run_dir, epochs, eval_fn=None, callbacks=(), strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model(seed=3)
        opt = warm_up_average(keras.optimizers.AdamW(0.05, weight_decay=0.01, use_ema=True, ema_momentum=M))
    return Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                   train_dataset_fn=dataset_fn(seed=1), steps_per_epoch=STEPS, epochs=epochs,
                   global_batch_size=BATCH, run_dir=run_dir, progress=False, eval_fn=eval_fn,
                   callbacks=list(callbacks))


@pytest.mark.parametrize("replicas", [1, 2])
def test_average_is_evaluated_saved_and_exported_while_training_continues_raw(tmp_path, request, replicas):
    strategy = request.getfixturevalue("two_replica_strategy") if replicas == 2 else None
    raw_after_step, seen_by_eval = [], []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: raw_after_step.append(trainer.model.get_weights()))

    def eval_fn(model):
        seen_by_eval.append(model.get_weights())
        return {"AP": 0.0}

    trainer = _trainer(tmp_path, epochs=2, eval_fn=eval_fn, callbacks=[record], strategy=strategy)
    trainer.fit()
    # closed form of the optimizer's average: the first step copies, then m_t * avg + (1 - m_t) * w
    # with the warmed-up momentum (M = 0.2 from t = 2 on: 1.2 / 11 ~ 0.18 at t = 1)
    averages, avg = [], None
    for t, w in enumerate(raw_after_step):
        m = momentum(t)
        avg = [x.copy() for x in w] if avg is None else [m * a + (1 - m) * x for a, x in zip(avg, w)]
        averages.append(avg)
    for got, want in zip(seen_by_eval, (averages[STEPS - 1], averages[2 * STEPS - 1])):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(trainer.model.get_weights(), raw_after_step[-1]):   # raw weights after fit
        np.testing.assert_array_equal(a, b)
    checkpoint_model = make_model(seed=9)
    restore_model(checkpoint_model, trainer.checkpoints.last.latest_checkpoint)
    exported = keras.saving.load_model(tmp_path / "model.keras")
    for a, b, c in zip(checkpoint_model.get_weights(), exported.get_weights(), averages[-1]):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, c, rtol=1e-5, atol=1e-6)


def test_resume_with_an_average_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full", epochs=3)
    full.fit()
    _trainer(tmp_path / "split", epochs=1).fit()
    resumed = _trainer(tmp_path / "split", epochs=3)
    resumed.fit(resume=True)
    for a, b in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    for a, b in zip(full.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, rtol=0)


def test_momentum_warms_up_to_the_configured_value():
    """(1 + t) / (10 + t) reaches 0.5 at t = 8; the first update copies the weights."""
    var = keras.Variable(np.zeros(3, np.float32))
    opt = warm_up_average(keras.optimizers.AdamW(0.1, weight_decay=0.0, use_ema=True, ema_momentum=0.5))
    opt.build([var])
    avg = None
    for t in range(12):
        opt.apply_gradients([(tf.constant([1.0, -2.0, 0.5]) * (t + 1), var)])
        w = var.numpy()
        m = 0.0 if t == 0 else min(0.5, (1 + t) / (10 + t))
        avg = w.copy() if avg is None else m * avg + (1 - m) * w
        np.testing.assert_allclose(opt._model_variables_moving_average[0].numpy(), avg, rtol=1e-5, atol=1e-7)
