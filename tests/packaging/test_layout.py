"""Architecture rules that keep the package a library: checked on the source tree."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "detector"
REPO = PACKAGE.parent
REPO_DIRS = {"detector", "docs", "tests", "tools", "configs", "deploy", "benchmarks", ".ci"}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_library_never_imports_the_program():
    program = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}
    offenders = [str(p.relative_to(REPO)) for p in _modules()
                 if p not in program and "detector.cli" in _imports(p)]
    assert not offenders, f"modules importing detector.cli: {offenders}"


def test_importing_a_library_module_sets_no_environment_variable():
    pattern = re.compile(r"os\.environ(\[[^\]]+\]\s*=|\.setdefault|\.update)|os\.putenv")
    offenders = []
    for p in _modules():
        if p.name == "cli.py":   # the program sets them, inside a function, before importing the rest
            continue
        tree = ast.parse(p.read_text())
        module_level = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        if any(pattern.search(ast.unparse(n)) for n in module_level):
            offenders.append(str(p.relative_to(REPO)))
    assert not offenders, f"modules setting environment variables on import: {offenders}"


def test_docstrings_name_only_files_in_the_repository():
    # file-like names ending in .md / .py / .yaml / .json that a docstring or comment mentions
    pattern = re.compile(r"\b((?:[\w.-]+/)*[\w-]+\.(?:md|yaml|json))\b")
    missing = []
    for p in [*_modules(), *sorted((REPO / "tests").rglob("*.py"))]:
        for name in set(pattern.findall(p.read_text())):
            top = name.split("/", 1)[0] if "/" in name else None
            if top not in REPO_DIRS and not name.endswith(".md"):
                continue   # run outputs (model.keras, OUT/predictions.json) are not repository files
            if not any((base / name).exists() for base in (REPO, PACKAGE, p.parent)) \
                    and not (REPO / "docs" / Path(name).name).exists():
                missing.append(f"{p.relative_to(REPO)}: {name}")
    assert not missing, "docstrings/comments naming files not in the repository:\n" + "\n".join(missing)


def test_importing_the_package_does_not_start_tensorflow():
    """No TensorFlow op at import time: it would initialise TensorFlow's context, after which
    MultiWorkerMirroredStrategy (and device configuration) can no longer be set up."""
    import subprocess
    import sys

    names = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in _modules()
             if p.name not in ("__main__.py",)]
    code = ("import importlib, sys\n"
            f"for n in {names!r}:\n    importlib.import_module(n.removesuffix('.__init__'))\n"
            "from tensorflow.python.eager import context\n"
            "sys.exit(0 if context.context()._context_handle is None else 3)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"importing the package initialised TensorFlow (exit {run.returncode}): " \
                                f"{run.stderr[-1500:]}"
