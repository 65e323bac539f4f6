"""Print the config reference (every key, its type, default and meaning) as Markdown.

    python tools/config_reference.py            # print the table
    python tools/config_reference.py --check    # exit 1 if README.md's table is stale

The meaning of a key is the comment written beside its field in detector/config.py,
so the README table cannot drift from the code (a test runs ``--check``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

from detector import config as config_module

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def _comments(cls: type) -> dict[str, str]:
    """Trailing ``# comment`` of each field line in the dataclass source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):[^#]*#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def rows(cls: type = config_module.Config, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(rows(tp, key + "."))
            continue
        type_name = config_module._type_name(tp).replace("|", "\\|")
        meaning = notes.get(f.name, "").replace("|", "\\|")
        out.append(f"| `{key}` | {type_name} | `{_fmt(_default(f))}` | {meaning} |")
    return out


def table() -> str:
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows()])


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the table in --readme")
    parser.add_argument("--readme", type=Path, default=Path("README.md"),
                        help="the Markdown file holding the table (default: ./README.md)")
    args = parser.parse_args(argv)
    text = table()
    if not args.check:
        print(text)
        return 0
    readme = args.readme.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"{args.readme} has no config-reference markers", file=sys.stderr)
        return 1
    current = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    if current != text:
        print(f"{args.readme}: config reference is stale: run python tools/config_reference.py "
              "and paste its output between the markers", file=sys.stderr)
        return 1
    return 0

