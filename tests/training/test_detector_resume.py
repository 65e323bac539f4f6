"""The detector's training input across fits (smoke config): one input pipeline per fit, and a
run that crashed mid-epoch, resumed from its step checkpoint, ends with the weights of an
uninterrupted run (repeat factors, shuffling and augmentation on)."""

import keras
import numpy as np
import pytest
from toy_task import CrashAt

import detector.data
from detector.config import load_config
from detector.data.pipeline import Epochs
from detector.training.detector_task import train


def _weights(run_dir):
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    return model.get_weights()


@pytest.mark.slow   # three trainings, each tracing the model: ~30 s each on 2 busy cores
@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_crashed_mid_epoch_and_resumed_matches_an_uninterrupted_run(tmp_path, monkeypatch, backend):
    cfg = load_config("smoke", [f"data.synthetic.cache_dir={tmp_path / 'synthetic'}",
                                f"data.cache_dir={tmp_path / 'cache'}", f"data.augment.backend={backend}",
                                "data.repeat_factor_threshold=0.5", "train.epochs=2", "train.steps_per_epoch=3",
                                "train.checkpoint_every_n_steps=2", "eval.every_epochs=2", "eval.steps=1"])
    built = []
    real = detector.data.make_dataset

    def recording(cfg, split, training, **kw):
        if training:
            built.append(kw.get("epochs"))
        return real(cfg, split, training, **kw)

    monkeypatch.setattr(detector.data, "make_dataset", recording)
    full = train(cfg, run_dir=tmp_path / "full", progress=False)
    assert full.result.step == 6 and built == [Epochs(3, 0, 0)]   # one pipeline for both epochs
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, run_dir=tmp_path / "cut", progress=False, callbacks=[CrashAt(5)])
    built.clear()
    # the newest checkpoint is step 4: epoch 2 with 1 of its 3 batches done
    resumed = train(cfg, run_dir=tmp_path / "cut", resume=True, progress=False)
    assert built == [Epochs(3, start=1, skip_steps=1)]
    assert resumed.result.step == 6 and resumed.result.epochs_done == 2
    for a, b in zip(_weights(tmp_path / "full"), _weights(tmp_path / "cut")):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
