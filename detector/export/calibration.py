"""INT8 calibration images: real training images through the evaluation preprocessing.

``calibration_set(cfg, count, seed)`` draws ``count`` distinct positions of the
training split (file order, no repeat-factor oversampling) with
``numpy.random.default_rng(seed)`` and returns those images exactly as the
evaluation pipeline prepares an image: decoded RGB, scaled by ``S / max(h, w)``,
letterboxed at the top-left of an ``S x S`` zero canvas (no augmentation).  Never
random noise: the activation ranges must be those of real inputs.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

import numpy as np

from detector.errors import UserError


@dataclass
class CalibrationSet:
    """``images`` uint8 ``[n, S, S, 3]`` RGB letterboxed; ``image_ids`` the dataset ids;
    ``seed`` / ``requested`` as asked; ``split`` "train"."""

    images: np.ndarray
    image_ids: list[int]
    seed: int
    requested: int
    split: str = "train"
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self):
        """Iterator of float32 ``[1, S, S, 3]`` RGB 0..255 (the converter's representative dataset)."""
        for image in self.images:
            yield image[None].astype(np.float32)

    def describe(self) -> dict:
        """The metadata record (count, seed, split, source, image ids)."""
        return {"count": len(self), "requested": self.requested, "seed": self.seed, "split": self.split,
                "source": self.source, "preprocessing": "evaluation (letterbox, no augmentation)",
                "image_ids": [int(i) for i in self.image_ids]}


def calibration_set(cfg, count: int, seed: int = 0) -> CalibrationSet:
    """``count`` training images (fewer when the split is smaller), chosen with ``seed``."""
    import tensorflow as tf

    from detector.data import dataset_info, make_dataset

    if count <= 0:
        raise UserError(f"--calibration-images must be positive, got {count}")
    # the evaluation pipeline (training=False) on the train split; no oversampling
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, repeat_factor_threshold=0.0))
    info = dataset_info(cfg)
    total = info.num_train
    ds = make_dataset(cfg, "train", training=False, batch_size=1)
    if total is None:   # unknown size (some tfds builds): the first `count` images
        chosen = None
    else:
        rng = np.random.default_rng(seed)
        chosen = set(rng.permutation(total)[:count].tolist())
    images, ids = [], []
    for i, batch in enumerate(ds):
        if chosen is not None and i not in chosen:
            continue
        images.append(tf.cast(batch["images"][0], tf.uint8).numpy())
        ids.append(int(batch["gt"]["image_id"][0]))
        if len(images) >= count:
            break
    if not images:
        raise UserError(f"data.source {cfg.data.source}: no training images for INT8 calibration")
    if len(images) < count:
        print(f"note: calibrating on {len(images)} images (the train split has no more)", file=sys.stderr)
    return CalibrationSet(np.stack(images), ids, seed=int(seed), requested=int(count), source=cfg.data.source)
