"""The same engine under MultiWorkerMirroredStrategy: 2 local worker processes that are
interrupted and resumed, against one uninterrupted single-device process (slow: ~30 s)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from net import free_ports

WORKER = Path(__file__).resolve().parent / "mwms_worker.py"


@pytest.mark.slow
def test_two_workers_with_resume_match_single_device(tmp_path):
    ports = ",".join(map(str, free_ports(2)))
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), ports, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1, -1)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]
    w0, w1, single = (np.load(tmp_path / f"weights_{i}.npy") for i in (0, 1, -1))
    np.testing.assert_array_equal(w0, w1)
    np.testing.assert_allclose(w0, single, atol=1e-6, rtol=0)
    # the chief (worker 0) wrote the shared run directory, the other worker wrote nothing there
    assert [r.split(",")[0] for r in (tmp_path / "run" / "results.csv").read_text().split()[1:]] == ["1", "2"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "last").iterdir()) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index", "ckpt-6.data-00000-of-00001",
        "ckpt-6.index"]
