"""`python tools/export_tflite.py ...` = `detector export ...` (see `detector/commands/`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from detector.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("export", sys.argv[1:]))
