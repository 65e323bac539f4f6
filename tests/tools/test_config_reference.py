"""README's config reference is generated from detector/config.py and must not go stale."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_config_reference_is_current():
    r = subprocess.run([sys.executable, "tools/config_reference.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_key_has_a_meaning():
    out = subprocess.run([sys.executable, "tools/config_reference.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines()[2:] if line.startswith("| `")]
    assert len(rows) > 80
    assert not [r for r in rows if r.rstrip().endswith("|  |")]
