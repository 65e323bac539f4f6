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


class FakeClock:
    """Each batch takes ``per_step`` seconds (the first of a run ``first`` seconds: tracing)."""

    def __init__(self, per_step, first=None):
        self.t, self.per_step, self.first, self.calls = 0.0, per_step, first, 0

    def __call__(self):
        # called at batch begin (even call) and batch end (odd call)
        if self.calls % 2 == 1:
            self.t += self.first if (self.calls == 1 and self.first is not None) else self.per_step
        self.calls += 1
        return self.t


def _budget_run(tmp_path, clock, budget, epochs=6, resume=False, stop_after_epochs=None):
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model, opt = make_model(), keras.optimizers.SGD(0.5)
    cos = CosineAnnealing(0.2, total_steps=epochs * 5, warmup_steps=3, min_lr=0.02,
                          time_budget_s=budget, clock=clock)
    rec = LrRecorder()
    result = Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                     train_dataset_fn=dataset_fn(), steps_per_epoch=5,
                     epochs=stop_after_epochs or epochs, global_batch_size=BATCH, run_dir=tmp_path,
                     progress=False, callbacks=[cos, rec]).fit(resume=resume)
    return rec.rates, result, cos


def test_time_budget_unused_when_fast_enough(tmp_path):
    # 30 steps x 1 s (first step 4 s) fit in 40 s: exactly the plain schedule, all steps.
    rates, result, cos = _budget_run(tmp_path, FakeClock(1.0, first=4.0), budget=40.0)
    assert len(rates) == 30 and result.stop_reason == "completed" and cos.planned_steps == 30
    # bit-equal to the plain schedule (after the optimizer's float32 variable)
    np.testing.assert_array_equal(np.float32(rates), np.float32([cosine_rate(s, 0.2, 30, 3, 0.02)
                                                                 for s in range(30)]))


def test_time_budget_shortens_schedule_continuously(tmp_path):
    # 2 s per step but a budget of 40 s: after epoch 1 (10 s used) 15 more steps fit.
    rates, result, cos = _budget_run(tmp_path, FakeClock(2.0), budget=40.0)
    assert cos.planned_steps == 20 and len(rates) == 20
    assert result.stop_reason == "stop_training"
    np.testing.assert_array_equal(np.float32(rates[:5]),
                                  np.float32([cosine_rate(s, 0.2, 30, 3, 0.02) for s in range(5)]))
    # from step 5 on: progress p0 = (5-3)/27 at step 5, reaching 1 at step 20
    p0 = 2 / 27
    for s in range(5, 20):
        p = p0 + (1 - p0) * (s - 5) / 15
        assert rates[s] == pytest.approx(0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * p)), rel=1e-6)
    assert rates[5] == pytest.approx(cosine_rate(5, 0.2, 30, 3, 0.02), rel=1e-6)  # no jump
    assert cos.rate(20) == pytest.approx(0.02, rel=1e-12)  # the floor at the new end
    assert float(cos.checkpoint_state.elapsed_s.numpy()) == pytest.approx(40.0)


def test_time_budget_survives_resume(tmp_path):
    straight, _, _ = _budget_run(tmp_path / "a", FakeClock(2.0), budget=40.0)
    first, _, _ = _budget_run(tmp_path / "b", FakeClock(2.0), budget=40.0, stop_after_epochs=2)
    second, _, cos = _budget_run(tmp_path / "b", FakeClock(2.0), budget=40.0, resume=True)
    assert first + second == straight and cos.planned_steps == 20


class SlowThenFastClock(FakeClock):
    """3 s per step for the first ``slow`` steps, then 1 s."""

    def __init__(self, slow):
        super().__init__(1.0)
        self.slow = slow

    def __call__(self):
        if self.calls % 2 == 1:
            self.t += 3.0 if self.calls // 2 < self.slow else 1.0
        self.calls += 1
        return self.t


def test_time_budget_lengthens_again_after_a_slow_spell(tmp_path, capsys):
    # epoch 1: 5 x 3 s -> 25 s left at 3 s/step: end moves to step 13; epoch 2 at 1 s/step:
    # 20 s left -> 20 more steps: back to the planned 30, all of which then run in 40 s.
    rates, result, cos = _budget_run(tmp_path, SlowThenFastClock(slow=5), budget=40.0)
    err = capsys.readouterr().err
    assert "now ends at step 13 (planned: 30)" in err and "now ends at step 30 (planned: 30)" in err
    assert len(rates) == 30 and result.stop_reason == "completed" and cos.planned_steps == 30
    assert float(cos.checkpoint_state.elapsed_s.numpy()) == pytest.approx(40.0)
    assert cos.rate(30) == pytest.approx(0.02, rel=1e-12)
    assert np.all(np.diff(np.float64(rates[3:])) <= 1e-7)  # never rises after warm-up

    def lr(p):
        return 0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * p))
    p5 = 2 / 27                              # plan 1 (to step 30) at step 5
    p10 = p5 + (1 - p5) * 5 / 8              # plan 2 (from step 5 to 13) at step 10
    for step, p in ((5, p5), (9, p5 + (1 - p5) * 4 / 8), (10, p10), (29, p10 + (1 - p10) * 19 / 20)):
        assert rates[step] == pytest.approx(lr(p), rel=1e-6)
