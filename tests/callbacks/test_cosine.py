"""CosineAnnealing: closed form, model.fit, and continuation after a resume."""

import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from toy_task import BATCH, X, Y, dataset_fn, loss_fn, make_model  # noqa: E402

from detector.callbacks import CosineAnnealing, cosine_rate  # noqa: E402
from detector.training.engine import Trainer  # noqa: E402

# base 0.1, min 0.01, warm-up 4 steps, total 14 steps -> one cosine cycle of 10 steps.
HAND = [
    (0, 0.025),     # warm-up: 0.1 * 1/4
    (1, 0.05),
    (3, 0.1),       # last warm-up step reaches base_lr
    (4, 0.1),       # cosine t=0
    (9, 0.055),     # t=5 of 10: cos(pi/2)=0 -> 0.01 + 0.09/2
    (14, 0.01),     # end of the cycle
    (30, 0.01),     # stays at min_lr afterwards
]
# with restart_period=4 after the same warm-up
HAND_RESTART = [
    (4, 0.1), (6, 0.055),
    (7, 0.01 + 0.045 * (1 - math.sqrt(0.5))),   # t=3 of 4: cos(3pi/4) = -sqrt(1/2)
    (8, 0.1),                                    # restart boundary
    (9, 0.01 + 0.045 * (1 + math.sqrt(0.5))),   # t=1 of 4
    (12, 0.1), (16, 0.1),
]


@pytest.mark.parametrize("step,expected", HAND)
def test_closed_form_single_cycle(step, expected):
    assert cosine_rate(step, 0.1, 14, 4, 0.01) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step,expected", HAND_RESTART)
def test_closed_form_restarts(step, expected):
    assert cosine_rate(step, 0.1, 14, 4, 0.01, restart_period=4) == pytest.approx(expected, abs=1e-12)


class LrRecorder(keras.callbacks.Callback):
    """Reads the optimizer's rate at batch end: the rate the step actually used."""

    def __init__(self):
        super().__init__()
        self.rates, self.logged = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))
        self.logged.append(logs.get("lr"))


def test_drives_keras_fit():
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    cos = CosineAnnealing(0.1, total_steps=14, warmup_steps=4, min_lr=0.01, restart_period=4)
    rec = LrRecorder()
    model.fit(X, Y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[cos, rec], shuffle=False)
    assert len(rec.rates) == 16
    expected = [cosine_rate(s, 0.1, 14, 4, 0.01, 4) for s in range(16)]
    np.testing.assert_allclose(rec.rates, expected, rtol=1e-6)
    np.testing.assert_allclose(rec.logged, expected, rtol=1e-6)
    assert dict(HAND_RESTART)[7] == pytest.approx(rec.rates[7], rel=1e-6)


def test_schedule_continues_after_resume(tmp_path):
    def run(epochs, resume):
        strategy = tf.distribute.get_strategy()
        with strategy.scope():
            model, opt = make_model(), keras.optimizers.SGD(0.5)
        cos = CosineAnnealing(0.2, total_steps=20, warmup_steps=3, min_lr=0.02, restart_period=7,
                              log_dir=str(tmp_path / "tb"))
        rec = LrRecorder()
        Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                train_dataset_fn=dataset_fn(), steps_per_epoch=5, epochs=epochs,
                global_batch_size=BATCH, run_dir=tmp_path, progress=False,
                callbacks=[cos, rec]).fit(resume=resume)
        return rec.rates

    first = run(2, False)
    second = run(4, True)
    assert len(first) == 10 and len(second) == 10
    expected = [cosine_rate(s, 0.2, 20, 3, 0.02, 7) for s in range(20)]
    np.testing.assert_allclose(first + second, expected, rtol=1e-6)
    # the schedule was also written to TensorBoard, one value per global step
    steps = []
    for f in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                if v.tag == "learning_rate":
                    steps.append(e.step)
                    assert float(tf.make_ndarray(v.tensor)) == pytest.approx(expected[e.step], rel=1e-6)
    assert sorted(steps) == list(range(20))


def test_serializable_and_rejects_schedule_optimizers():
    cos = CosineAnnealing(0.1, 100, 10, 0.001, restart_period=30)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cos))
    assert isinstance(clone, CosineAnnealing) and clone.get_config() == cos.get_config()
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)),
                  loss="mse")
    with pytest.raises(ValueError, match="float learning_rate"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[cos])
