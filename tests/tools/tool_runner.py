"""Run a subcommand in this process exactly as the ``detector`` program does."""

import contextlib
import importlib
import io

from detector.cli import COMMANDS, run


def load_tool(name: str):
    """The module behind subcommand ``name`` (e.g. ``"eval"`` -> ``detector.commands.eval``)."""
    return importlib.import_module(f"detector.commands.{COMMANDS[name][0]}")


def run_in_process(name: str, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``detector <name> argv``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(name, argv)
    return code, out.getvalue(), err.getvalue()
