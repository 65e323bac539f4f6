"""Training-step speed of the detector on random data (no dataset needed).

    detector benchmark --config synthetic.yaml [--batch 16] [--steps 15] [--set k=v]

Times one compiled step = forward (training mode) + DetectionLoss + backward +
AdamW update on a fixed random batch at ``data.image_size``, after 3 warm-up
steps, and prints the parameter count, median / min step time and images/s.
On a shared machine the median is the honest figure; the minimum shows the
uncontended speed.
"""

from __future__ import annotations

import argparse
import sys
import time

from detector.commands.common import add_config_args, config_from_args
from detector.errors import UserError


def step_times(cfg, batch: int, steps: int, seed: int = 0) -> tuple[int, list[float]]:
    """``(num_params, [seconds per step])`` for ``steps`` timed training steps."""
    import keras
    import numpy as np
    import tensorflow as tf

    from detector.losses import count_positives
    from detector.model import build_detector

    model = build_detector(cfg)
    s, n, c = cfg.data.image_size, model.anchors().shape[0], cfg.num_classes
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(0, 255, (batch, s, s, 3)).astype(np.float32))
    # ~1.5% positives, 2% ignored: a typical matched batch
    cls = rng.choice([-2, -1, *range(c)], size=(batch, n), p=[0.02, 0.965] + [0.015 / c] * c)
    targets = {"cls": tf.constant(cls.astype(np.int32)),
               "box": tf.constant(rng.normal(size=(batch, n, 4)).astype(np.float32)),
               "depth": tf.constant(rng.normal(2.0, 0.5, (batch, n)).astype(np.float32)),
               "depth_mask": tf.constant((cls >= 0).astype(np.float32))}
    optimizer = keras.optimizers.AdamW(1e-3)

    @tf.function
    def step(x, t):
        with tf.GradientTape() as tape:
            loss = model.detection_loss(t, model(x, training=True), count_positives(t))["total"]
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    for _ in range(3):
        step(images, targets).numpy()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(images, targets).numpy()
        times.append(time.perf_counter() - t0)
        print(f"\rstep {i + 1}/{steps}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return model.count_params(), times


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--batch", type=int, default=None, help="batch size (default train.batch_size)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    for flag, value in (("--batch", args.batch), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be 1 or more")
    batch = args.batch or cfg.train.batch_size
    params, times = step_times(cfg, batch, args.steps)
    med, best = sorted(times)[len(times) // 2], min(times)
    print(f"{cfg.model.backbone.name} @ {cfg.data.image_size}px, batch {batch}: {params:,} params; "
          f"step median {med * 1000:.0f} ms ({batch / med:.1f} img/s), min {best * 1000:.0f} ms "
          f"({batch / best:.1f} img/s)")
    return 0

