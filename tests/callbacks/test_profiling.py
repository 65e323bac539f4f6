"""ProfilingCallback writes a TensorBoard-readable trace for the configured steps only."""

import sys
from pathlib import Path

import keras
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from toy_task import BATCH, dataset_fn, loss_fn, make_model  # noqa: E402

from detector.callbacks import ProfilingCallback  # noqa: E402
from detector.training.engine import Trainer  # noqa: E402


class Window(keras.callbacks.Callback):
    """Records at which batches the profiler is running (placed after the profiler)."""

    def __init__(self, profiler):
        super().__init__()
        self.profiler, self.active = profiler, []

    def on_train_batch_end(self, batch, logs=None):
        self.active.append(self.profiler._active)


def test_trace_files_for_step_range(tmp_path):
    prof = ProfilingCallback(str(tmp_path), start_step=2, stop_step=4)
    window = Window(prof)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model, opt = make_model(), keras.optimizers.SGD(0.01)
    Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
            train_dataset_fn=dataset_fn(), steps_per_epoch=3, epochs=2, global_batch_size=BATCH,
            progress=False, callbacks=[window, prof]).fit()
    traces = list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    # Window runs before the profiler's batch_end: active during steps 2 and 3 only
    assert window.active == [False, False, True, True, False, False]
    assert prof.traced
