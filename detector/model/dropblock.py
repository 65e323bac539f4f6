"""DropBlock: structured dropout for convolutional feature maps (training only).

Dropout of single activations barely regularises a conv net, because neighbouring
activations carry the same information.  DropBlock (Ghiasi, Lin and Le, NeurIPS 2018)
drops contiguous ``block_size x block_size`` squares of each channel instead, so the
layers after it must use evidence from the rest of the object; it helped RetinaNet
trained from scratch in that paper.  Here it is an option of the ``small_cnn``
backbone (``model.backbone.drop_block``), for small datasets trained from scratch.

At inference (and in an exported model) the layer is the identity.
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="detector")
class DropBlock2D(keras.layers.Layer):
    """``[B, H, W, C] -> [B, H, W, C]``: in training, zero blocks covering ~``rate`` of each map.

    Block centres are drawn independently per example and channel, among the
    ``(H-b+1) * (W-b+1)`` positions where a whole block fits (``b = min(block_size, H, W)``),
    with probability ``gamma = rate / b**2 * H*W / ((H-b+1) * (W-b+1))``; each centre zeroes
    the ``b x b`` square around it (a stride-1 max-pool of the centres), so about ``rate``
    of the map is dropped (a little less where blocks overlap); the kept activations are
    scaled by ``numel / kept`` so that the sum of the batch's maps is unchanged.
    ``rate = 0`` or ``training=False``: identity.
    """

    def __init__(self, rate: float, block_size: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropBlock2D: rate must be in [0, 1), got {rate}")
        if block_size < 1:
            raise ValueError(f"DropBlock2D: block_size must be >= 1, got {block_size}")
        self.rate = float(rate)
        self.block_size = int(block_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        height, width = x.shape[1], x.shape[2]
        b = min(self.block_size, height, width)
        gamma = self.rate / (b * b) * (height * width) / ((height - b + 1) * (width - b + 1))
        # Centres only where the whole square fits (a stride-1 'same' max-pool window at
        # row i spans rows i - (b-1)//2 .. i + b//2), as in the paper.
        valid = np.zeros((1, height, width, 1), np.float32)
        valid[:, b // 2:height - (b - 1) // 2, b // 2:width - (b - 1) // 2] = 1.0
        valid = keras.ops.cast(valid, x.dtype)
        centres = keras.ops.cast(
            keras.random.uniform(keras.ops.shape(x), seed=self.seed_generator) < gamma, x.dtype) * valid
        dropped = keras.ops.max_pool(centres, pool_size=b, strides=1, padding="same")
        keep = 1.0 - dropped
        numel = keras.ops.cast(keras.ops.size(keep), x.dtype)
        scale = numel / keras.ops.maximum(keras.ops.sum(keep), 1.0)
        return x * keep * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "block_size": self.block_size, "seed": self.seed}
