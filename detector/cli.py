"""Shared command-line plumbing: ``--config`` / ``--set`` and user-error handling.

Every tool in ``tools/`` builds its parser with :func:`add_config_args`, loads the
config with :func:`config_from_args`, and runs its body through :func:`run_main`,
which turns user mistakes (:class:`UserError`, :class:`ConfigError`) into a one-line
message on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from detector.config import Config, ConfigError, load_config

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """Bad input from the user (a file, a field, a flag); the message names it."""


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required,
                        help="config file path, or a file name in configs/ (e.g. synthetic.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def run_main(main: Callable[[], int | None]) -> None:
    """Call ``main`` and exit; user errors exit 2 with a message naming the culprit."""
    try:
        code = main()
    except (UserError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def _tool(name: str) -> Callable[[], None]:
    def entry() -> None:
        import importlib.util
        from pathlib import Path

        path = Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run_main(module.main)

    return entry


train_main = _tool("train")
eval_main = _tool("eval")
inspect_data_main = _tool("inspect_data")
