"""detector.atomic: a failed or interrupted write leaves the previous file whole and no
temporary file behind; the run's files (config.yaml, results.csv, model.keras) use it."""

import os

import pytest

from detector import atomic
from detector.config import SAVED_CONFIG_END, load_config, save_config
from detector.training.results import ResultsWriter, read_results


class Killed(BaseException):
    pass


def test_interrupted_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "results.csv"
    atomic.write_text(path, "old\n")
    with pytest.raises(Killed):
        with atomic.atomic_write(path) as f:
            f.write("half of the new")
            raise Killed
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["results.csv"]


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.bin"
    atomic.write_bytes(path, b"old")
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_write_with_keeps_the_suffix_for_writers_that_check_it(tmp_path):
    seen = []
    atomic.write_with(tmp_path / "model.keras", lambda p: (seen.append(p.name), p.write_bytes(b"k")))
    assert seen[0].endswith(".keras") and seen[0].startswith(".model.")
    assert (tmp_path / "model.keras").read_bytes() == b"k"


def test_run_files_are_written_atomically(tmp_path, monkeypatch):
    cfg = load_config("smoke.yaml")
    save_config(cfg, tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text().endswith(SAVED_CONFIG_END)
    w = ResultsWriter(tmp_path / "results.csv")
    w.write({"epoch": 1, "step": 2, "loss": 0.5})

    def killed_mid_write(*a):
        raise Killed

    monkeypatch.setattr(atomic.os, "fsync", killed_mid_write)
    with pytest.raises(Killed):
        save_config(cfg, tmp_path / "config.yaml")
    with pytest.raises(Killed):
        w.write({"epoch": 2, "step": 4, "loss": 0.4})
    monkeypatch.undo()
    assert load_config(tmp_path / "config.yaml") == cfg
    assert [r["epoch"] for r in read_results(tmp_path / "results.csv")] == ["1"]
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "results.csv"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from detector.atomic import write_text

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644   # not mkstemp's private 0600
