"""Run a tool's ``main`` in this process exactly as its script does (``run_main``)."""

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest

from detector.cli import run_main

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}_under_test", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(name: str, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``tools/<name>.py argv``."""
    main = load_tool(name).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        run_main(lambda: main(argv))
    return exc.value.code, out.getvalue(), err.getvalue()
