"""Run directory layout and the per-epoch ``results.csv``.

Run directory (default ``<run_root>/<name>-<YYYYmmdd-HHMMSS>``)::

    config.yaml          fully resolved config (load_config(path) reproduces it)
    results.csv          one row per epoch (see ResultsWriter)
    tb/                  TensorBoard: scalars, gradient histograms, profiler traces
    checkpoints/last/    latest checkpoints (model, optimizer, step, epoch, trackers)
    checkpoints/best/    the checkpoint with the best train.best_metric
    model.keras          the final model, exported at the end of training
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable
from pathlib import Path

from detector.atomic import atomic_write
from detector.config import Config, save_config
from detector.errors import UserError

# Columns always written first, in this order; others (val metrics, extra loss terms)
# follow in order of first appearance.
LEADING_COLUMNS = ("epoch", "step", "loss", "cls_loss", "box_loss", "depth_loss", "lr", "grad_norm")
TRAILING_COLUMNS = ("epoch_time_s", "images_per_s", "input_wait_share")


def new_run_dir(cfg: Config, run_dir: str | Path | None = None) -> Path:
    """Create the run directory (``run_dir`` or a fresh timestamped one) and write config.yaml."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(cfg.run_root).expanduser() / f"{cfg.name}-{stamp}"
        suffix = 1
        while path.exists():  # two runs started within the same second
            suffix += 1
            path = Path(cfg.run_root).expanduser() / f"{cfg.name}-{stamp}-{suffix}"
    else:
        path = Path(run_dir).expanduser()
        if path.exists() and not path.is_dir():
            raise UserError(f"--run-dir {run_dir}: is a file, not a folder")
        if (path / "checkpoints").exists() and any((path / "checkpoints").iterdir()):
            raise UserError(f"--run-dir {path}: already holds checkpoints; pass --resume to "
                            "continue that run or choose another directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"run directory {path}: cannot create it: {e.strerror or e}") from None
    save_config(cfg, path / "config.yaml")
    return path


def find_resume_dir(cfg: Config, run_dir: str | Path | None = None) -> Path:
    """``run_dir`` if given, else the newest ``<run_root>/<name>-*`` that has checkpoints."""
    if run_dir is not None:
        path = Path(run_dir).expanduser()
        if not (path / "checkpoints" / "last").is_dir():
            raise UserError(f"--resume: {path} has no checkpoints/last/ to resume from")
        return path
    root = Path(cfg.run_root).expanduser()
    candidates = sorted((p for p in root.glob(f"{cfg.name}-*") if (p / "checkpoints" / "last").is_dir()),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise UserError(f"--resume: no run of '{cfg.name}' with checkpoints under {root}/; "
                        "pass --run-dir DIR")
    return candidates[-1]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class ResultsWriter:
    """``results.csv``: one row per epoch, columns grown as new keys appear.

    Keys: ``epoch`` (1-based), ``step`` (global step after the epoch), training
    losses (``loss`` = total, ``<term>_loss``), ``lr``, ``grad_norm``, validation
    metrics ``val_*`` (empty on epochs without evaluation), ``epoch_time_s``,
    ``images_per_s`` and ``input_wait_share`` (time blocked waiting for the next
    batch / total train-step time).  The file is rewritten whole on every row so
    that a new column (e.g. the first evaluation) keeps the header consistent.
    """

    def __init__(self, path: str | Path, keep_through_epoch: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = []
        if keep_through_epoch is not None and self.path.exists():
            # One row per epoch (the last written wins); a torn or edited line is dropped.
            by_epoch: dict[int, dict] = {}
            with self.path.open(newline="") as f:
                for r in csv.DictReader(f):
                    epoch = str(r.get("epoch") or "")
                    if epoch.isdigit() and 0 < int(epoch) <= keep_through_epoch:
                        by_epoch[int(epoch)] = {k: v for k, v in r.items() if k is not None}
            self.rows = [by_epoch[k] for k in sorted(by_epoch)]

    def columns(self) -> list[str]:
        keys: list[str] = []
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        lead = [k for k in LEADING_COLUMNS if k in keys]
        trail = [k for k in TRAILING_COLUMNS if k in keys]
        middle = [k for k in keys if k not in lead and k not in trail]
        middle = [k for k in middle if not k.startswith("val_")] + [k for k in middle if k.startswith("val_")]
        return lead + middle + trail

    def write(self, row: dict) -> None:
        self.rows.append(dict(row))
        cols = self.columns()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in self.rows:
                w.writerow([_fmt(r.get(c)) for c in cols])


def read_results(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def format_metrics(logs: dict, keys: Iterable[str] | None = None) -> str:
    keys = list(keys) if keys is not None else list(logs)
    return "  ".join(f"{k}={logs[k]:.4g}" if isinstance(logs[k], float) else f"{k}={logs[k]}"
                     for k in keys if k in logs)
