"""The project installs the way users install Python tools: a wheel, not ``-e``.

Builds the wheel, installs it (without ``-e``) into a fresh virtual environment, and
runs ``detector eval`` (file mode) and ``detector train --config smoke.yaml`` from a
folder outside the repository, so nothing can be found next to the source tree.  The
third-party dependencies come from the test's own environment (a ``.pth`` file points
at its site-packages) so no download is needed; the package itself comes only from
the wheel, which the test checks.
"""

import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "data" / "cocoapi_val2014_100"


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_and_runs_from_any_folder(tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(ROOT)], cwd=tmp_path, env=env)
    wheel = next(dist.glob("detector-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "detector/configs/synthetic.yaml" in names and "detector/commands/train.py" in names
    assert not any(n.startswith(("tools/", "tests/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # dependencies from this environment; appended after the venv's own site-packages
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp_path, env=env)
    python, work = venv / "bin" / "python", tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import detector; print(detector.__file__)"], cwd=work, env=env).stdout
    assert where.strip().startswith(str(purelib)), where

    detector = [str(venv / "bin" / "detector")]   # the console entry point the wheel installed
    out = _run([*detector, "eval", "--gt", str(REF / "instances_val2014_100.json"),
                "--detections", str(REF / "instances_val2014_fakebbox100_results.json"), "--json"],
               cwd=work, env=env).stdout
    bbox_block = (REF / "val2014_fake_eval_res.txt").read_text().split("type=bbox", 1)[1]
    ref = [float(line.split()[-1]) for line in bbox_block.splitlines() if "Average" in line]
    stats = json.loads(out)
    assert abs(stats["AP"] - ref[0]) < 1e-3 and abs(stats["AR100"] - ref[8]) < 1e-3

    run_dir = tmp_path / "run"
    _run([*detector, "train", "--config", "smoke.yaml", "--run-dir", str(run_dir), "--quiet",
          "--set", f"data.synthetic.cache_dir={tmp_path / 'synthetic'}", "--set", f"data.cache_dir={tmp_path / 'c'}",
          "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2"], cwd=work, env=env)
    assert (run_dir / "model.keras").is_file() and (run_dir / "results.csv").is_file()
