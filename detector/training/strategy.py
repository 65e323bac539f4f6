"""Build the ``tf.distribute`` strategy named by ``cfg.distribute``.

``configure_devices`` must run before TensorFlow initialises its devices (before
the first op or device query), because splitting the CPU into logical devices is
only possible then; ``tools/train.py`` calls it right after loading the config.

Strategies:

* ``default``: ``tf.distribute.get_strategy()`` (one device, no replication).
* ``mirrored``: all visible GPUs if there are any, else the first
  ``distribute.num_cpu_devices`` logical CPU devices (``/cpu:0 .. /cpu:n-1``).
* ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from the
  ``TF_CONFIG`` environment variable (one process per worker).
* ``tpu``: ``TPUStrategy`` on ``distribute.tpu_address`` (``None`` = the local TPU VM).
"""

from __future__ import annotations

import json
import os
import sys

import tensorflow as tf

from detector.config import DistributeConfig
from detector.errors import UserError


def configure_devices(dist: DistributeConfig) -> None:
    """Split the first CPU into ``dist.num_cpu_devices`` logical devices.

    A no-op for one device.  If TensorFlow is already initialised, the split is
    accepted when enough logical CPU devices exist already (e.g. under pytest,
    whose conftest splits the CPU in two); otherwise a UserError explains why.
    """
    n = dist.num_cpu_devices
    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise UserError(
                f"distribute.num_cpu_devices={n}: TensorFlow was initialised before the CPU "
                f"could be split and only {have} logical CPU device(s) exist; call "
                "configure_devices() before any TensorFlow op") from None


def build_strategy(dist: DistributeConfig) -> tf.distribute.Strategy:
    """The strategy for ``dist.strategy``; see the module docstring."""
    if dist.strategy == "default":
        return tf.distribute.get_strategy()
    if dist.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        cpus = tf.config.list_logical_devices("CPU")
        n = dist.num_cpu_devices
        if len(cpus) < n:
            raise UserError(f"distribute.num_cpu_devices={n} but only {len(cpus)} logical CPU "
                            "device(s) exist; call configure_devices() first")
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    if dist.strategy == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            print("warning: distribute.strategy=multi_worker without TF_CONFIG runs as a single "
                  "worker", file=sys.stderr)
        else:
            try:
                json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if dist.strategy == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=dist.tpu_address or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as e:
            raise UserError(f"distribute.tpu_address={dist.tpu_address!r}: cannot reach a TPU: {e}") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"distribute.strategy: unknown strategy {dist.strategy!r}")  # config rejects this first


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes the run directory (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 0
    return int(resolver.task_id or 0)
