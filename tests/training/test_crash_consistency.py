"""Crash consistency of a run directory (toy task, fast): a crash at any point of the
end-of-epoch writes, a full disk during a checkpoint write, and a corrupt newest
checkpoint all leave a run that --resume continues, with every epoch in results.csv
exactly once and the same weights as an uninterrupted run."""

import errno
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_task import BATCH, dataset_fn, loss_fn, make_model

from detector.errors import UserError
from detector.training.checkpoints import CheckpointWriteError
from detector.training.engine import Trainer
from detector.training.results import ResultsWriter, read_results

STEPS, EPOCHS = 3, 4


class Crash(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def _trainer(run_dir, epochs=EPOCHS):
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model(seed=3)
        opt = keras.optimizers.SGD(0.05, momentum=0.9)
    return Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                   train_dataset_fn=dataset_fn(seed=1), steps_per_epoch=STEPS, epochs=epochs,
                   global_batch_size=BATCH, run_dir=run_dir, progress=False, best_metric="loss",
                   best_mode="min", export_model=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    t = _trainer(tmp_path_factory.mktemp("uninterrupted"))
    t.fit()
    return t.model.get_weights()


def _epochs(run_dir):
    return [int(r["epoch"]) for r in read_results(run_dir / "results.csv")]


@pytest.mark.parametrize("where", ["results", "best", "last"])
def test_a_crash_anywhere_in_the_epoch_end_writes_loses_nothing_on_resume(tmp_path, monkeypatch, reference, where):
    t = _trainer(tmp_path)
    target = {"results": (ResultsWriter, "write"), "best": (t.checkpoints, "save_best"),
              "last": (t.checkpoints, "save_last")}[where]
    original = getattr(*target)
    calls = []

    def crash_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if t.checkpoints.epoch.numpy() == 2:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(*target, crash_in_epoch_2)
    with pytest.raises(Crash):
        t.fit()
    monkeypatch.undo()
    resumed = _trainer(tmp_path)
    result = resumed.fit(resume=True)
    assert result.epochs_done == EPOCHS
    assert _epochs(tmp_path) == [1, 2, 3, 4]                 # every epoch exactly once
    for a, b in zip(resumed.model.get_weights(), reference):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_results_csv_with_a_torn_or_duplicated_row_is_repaired_on_resume(tmp_path):
    t = _trainer(tmp_path, epochs=2)
    t.fit()
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1], "3,9"]) + "\n")     # epoch 1 twice, a torn row
    writer = ResultsWriter(path, keep_through_epoch=2)
    assert [int(r["epoch"]) for r in writer.rows] == [1, 2]


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, reference, capsys):
    t = _trainer(tmp_path)
    write = t.checkpoints.checkpoint._write

    def disk_full(prefix, options=None):
        if t.checkpoints.epoch.numpy() == 3:
            # what a full disk leaves: a part of the data file, no index, then ENOSPC
            with open(f"{prefix}.data-00000-of-00001", "wb") as f:
                f.write(b"\0" * 10)
            with open(f"{prefix}.index", "wb") as f:
                f.write(b"\1" * 7)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(prefix, options=options)

    monkeypatch.setattr(t.checkpoints.checkpoint, "_write", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*ckpt-9: No space left on device "
                                                   r"\(disk full\?\); the previous checkpoint .*ckpt-6 is kept"):
        t.fit()
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "last")).endswith("ckpt-6")
    resumed = _trainer(tmp_path)
    assert resumed.fit(resume=True).epochs_done == EPOCHS
    err = capsys.readouterr().err
    assert "ckpt-9 is unreadable" in err and "resuming from the newest loadable one" in err and "ckpt-6" in err
    assert _epochs(tmp_path) == [1, 2, 3, 4]
    for a, b in zip(resumed.model.get_weights(), reference):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("part", ["index", "data"])
def test_resume_skips_a_truncated_newest_checkpoint_saying_which(tmp_path, part, capsys):
    _trainer(tmp_path, epochs=2).fit()
    last = tmp_path / "checkpoints" / "last"
    victim = next(p for p in last.iterdir() if p.name.startswith("ckpt-6.") and part in p.name)
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
    resumed = _trainer(tmp_path, epochs=3)
    result = resumed.fit(resume=True)
    assert result.epochs_done == 3 and _epochs(tmp_path) == [1, 2, 3]
    err = capsys.readouterr().err
    assert f"checkpoint {last}/ckpt-6 is unreadable" in err and f"{last}/ckpt-3 (after epoch 1)" in err


def test_resume_with_no_loadable_checkpoint_is_a_user_error(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    for p in (tmp_path / "checkpoints" / "last").glob("ckpt-*.data-*"):
        p.write_bytes(b"")
    with pytest.raises(UserError, match=r"--resume: no loadable checkpoint in .*ckpt-3 is unreadable"):
        _trainer(tmp_path).fit(resume=True)
