"""Plumbing shared by the subcommands: ``--config`` / ``--set`` and user-error handling.

Every subcommand builds its parser with :func:`add_config_args`, loads the config
with :func:`config_from_args`, and is run through :func:`run_main`, which turns user
mistakes (:class:`~detector.errors.UserError`, including ``ConfigError``) into a
one-line message on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from detector.config import Config, load_config
from detector.errors import UserError


def add_config_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, required: bool = True) -> None:
    parser.add_argument("--config", required=required,
                        help="config file path, or the name of a shipped config (e.g. synthetic.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def run_main(main: Callable[[], int | None]) -> int:
    """Call ``main`` and return its exit code; user errors print one line and give 2."""
    try:
        return main() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
