"""Test-session set-up.

The CPU is split into two logical devices before TensorFlow initialises, so that
tests can build ``tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])`` and compare
it with the single-device result (see docs/conventions.md §10).  Tests that do
not ask for a strategy run on ``/cpu:0`` as usual.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


def _split_cpu() -> None:
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # already initialised (e.g. a plugin touched TF first)
        pass


_split_cpu()


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    """Give every MirroredStrategy of a test its own collective-op keys.

    Collective instances are cached process-wide by key and each new MirroredStrategy
    restarts from the same keys, so a later strategy's all-reduce of another shape would
    abort with "Shape mismatch in the collective instance" (TF's own
    strategy_combinations bump the base the same way).
    """
    import tensorflow as tf

    tf.distribute.MirroredStrategy._collective_key_base += 100000


@pytest.fixture
def two_replica_strategy():
    """MirroredStrategy over two logical CPU devices."""
    import tensorflow as tf

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.fail("two logical CPU devices are not available; conftest could not split the CPU")
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def coco_ref_dir() -> Path:
    """Real COCO val2014 subset with the COCO API's published results (tests/data)."""
    return ROOT / "tests" / "data" / "cocoapi_val2014_100"
