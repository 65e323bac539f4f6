"""Plumbing shared by the subcommands: ``--config`` / ``--set`` and user-error handling.

Every subcommand builds its parser with :func:`add_config_args`, loads the config
with :func:`config_from_args`, and is run through :func:`run_main`, which turns user
mistakes (:class:`~detector.errors.UserError`, including ``ConfigError``) into a
one-line message on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from detector.config import Config, load_config
from detector.errors import UserError


def add_config_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, required: bool = True) -> None:
    parser.add_argument("--config", required=required,
                        help="config file path, or the name of a shipped config (e.g. synthetic.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Create the output folder ``path`` given by ``flag``; a :class:`UserError` when it cannot be."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {path}: is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create the folder: {e.strerror or e}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder is not writable")
    return p


def run_main(main: Callable[[], int | None]) -> int:
    """Call ``main`` and return its exit code.

    User errors print one line and give 2; an operating-system error (disk full,
    permission denied while writing) prints one line and gives 1: not the user's input,
    but not a bug to show a traceback for either.
    """
    try:
        return main() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
