"""Train the detector.

    python tools/train.py --config synthetic.yaml [--set train.epochs=3 ...] [--run-dir DIR]
    python tools/train.py --resume [--run-dir DIR] [--config CFG] [--set train.epochs=30]

A run directory (default ``runs/<name>-<timestamp>``) receives config.yaml,
results.csv (one row per epoch), tb/ (TensorBoard), checkpoints/{last,best}/ and
model.keras.  ``--resume`` continues the newest run of the config's name (or
``--run-dir``) from its last checkpoint with optimizer state, step, epoch and LR
schedule intact; without ``--config`` it reuses the run's config.yaml.

Exit codes: 0 done, 1 training diverged (non-finite loss) or a file could not be written
(e.g. disk full; the previous checkpoint stays usable), 2 user error.  Every file of the
run directory is written atomically; ``--resume`` skips a truncated or corrupt newest
checkpoint for the one before it, saying so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.commands.common import add_config_args, config_from_args
from detector.config import SAVED_CONFIG_END, load_config
from detector.errors import UserError


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train the detector (see module docstring).")
    add_config_args(p, required=False)
    p.add_argument("--run-dir", help="run directory (default: <run_root>/<name>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint of --run-dir (or the newest run of this name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _config(args):
    if args.config:
        return config_from_args(args)
    if args.resume and args.run_dir:
        saved = Path(args.run_dir).expanduser() / "config.yaml"
        if not saved.is_file():
            raise UserError(f"--resume --run-dir {args.run_dir}: no config.yaml there; pass --config")
        try:
            complete = saved.read_text().endswith(SAVED_CONFIG_END)
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{saved}: cannot read it: {e}; pass --config") from None
        if not complete:
            # a YAML file cut short can still parse, with defaults for the lost keys
            raise UserError(f"{saved}: does not end with '{SAVED_CONFIG_END.strip()}': cut short, or "
                            "written by an older version; pass --config with the run's config")
        try:
            return load_config(saved, args.overrides)
        except UserError as e:
            raise UserError(f"{e} (the run's saved config; pass --config to use another)") from None
    raise UserError("--config is required (except with --resume --run-dir DIR, which reuses the "
                    "run's config.yaml)")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    cfg = _config(args)
    # Before TensorFlow initialises: a CPU split into logical devices is only possible now.
    from detector.training.strategy import configure_devices

    configure_devices(cfg.distribute)
    from detector.evaluation.evaluator import STAT_NAMES
    from detector.training.checkpoints import CheckpointWriteError
    from detector.training.detector_task import train
    from detector.training.engine import NonFiniteLossError
    from detector.training.results import format_metrics

    try:
        outcome = train(cfg, run_dir=args.run_dir, resume=args.resume, progress=not args.quiet)
    except NonFiniteLossError as e:
        print(f"training diverged: {e}", file=sys.stderr)
        return 1
    except CheckpointWriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    r = outcome.result
    print(f"run directory: {outcome.run_dir}")
    print(f"stopped: {r.stop_reason} after {r.epochs_done} epochs ({r.step} steps)")
    val = {k: r.logs[f"val_{k}"] for k in STAT_NAMES if f"val_{k}" in r.logs}
    print(f"final: {format_metrics(r.logs, ('loss', 'images_per_s', 'input_wait_share'))}")
    if val:
        print(f"final val: {format_metrics(val)}")
    if r.best_epoch is not None:
        print(f"best {cfg.train.best_metric} = {r.best_value:.4f} at epoch {r.best_epoch} "
              f"({r.best_checkpoint})")
    return 0

