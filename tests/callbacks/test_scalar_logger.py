"""ScalarLogger and the tensorboard-free summary writers."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from toy_task import BATCH, X, Y, make_model  # noqa: E402

from detector.callbacks import ScalarLogger  # noqa: E402
from detector.callbacks.summaries import histogram_buckets  # noqa: E402


def _events(log_dir):
    out = {}
    for f in Path(log_dir).glob("events.out.tfevents.*"):
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                assert v.metadata.plugin_data.plugin_name == "scalars"
                out[(v.tag, e.step)] = float(tf.make_ndarray(v.tensor))
    return out


def test_scalar_logger_with_fit(tmp_path):
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    history = model.fit(X, Y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
                        callbacks=[ScalarLogger(str(tmp_path), every_n_steps=3)])
    ev = _events(tmp_path)
    assert sorted(s for t, s in ev if t == "step/loss") == [3, 6, 9, 12, 15]
    assert ev[("epoch/loss", 1)] == pytest.approx(history.history["loss"][0], rel=1e-6)
    assert ev[("epoch/loss", 2)] == pytest.approx(history.history["loss"][1], rel=1e-6)


def test_histogram_buckets():
    b = histogram_buckets([0.0, 1.0, 1.0, 3.0, np.nan, np.inf], bucket_count=3)
    np.testing.assert_allclose(b, [[0, 1, 1], [1, 2, 2], [2, 3, 1]])
    np.testing.assert_allclose(histogram_buckets([2.0, 2.0]), [[1.5, 2.5, 2]])
    assert histogram_buckets([]).shape == (0, 3)
