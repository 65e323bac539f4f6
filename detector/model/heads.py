"""RetinaNet-style prediction subnets shared across pyramid levels.

A :class:`HeadTower` is ``num_convs x (3x3 conv -> norm -> act)``; the conv weights are
shared by all levels while each level has its own norm layer (as in EfficientDet: levels
have different activation statistics, so one BN would see a mixture).  The norm is
BatchNorm, or with ``norm="group"`` (``model.head_norm``) GroupNorm over ``gcd(16,
channels)`` groups of each image's channels: no batch statistics, so training and
inference normalise alike (as in FCOS' heads).  An
:class:`AnchorPredictor` is a shared 3x3 conv producing ``A*K`` channels per
location, reshaped ``[B, H, W, A*K] -> [B, H*W*A, K]`` and concatenated over
levels, which is exactly the anchor order of :mod:`detector.targets.anchors` (levels
ascending, locations row-major, ``scale_idx * len(ratios) + ratio_idx`` innermost).
"""

from __future__ import annotations

import math

import keras

from detector.model.fpn import make_conv
from detector.model.norm import FusedBatchNorm


@keras.saving.register_keras_serializable(package="detector")
class HeadTower(keras.layers.Layer):
    """``call([F_l per level]) -> [G_l per level]`` with ``channels`` channels each;
    ``norm``: ``"batch"`` or ``"group"``."""

    def __init__(self, num_levels: int, num_convs: int = 2, channels: int = 64, separable: bool = True,
                 activation: str = "relu", norm: str = "batch", **kwargs):
        super().__init__(**kwargs)
        self.num_levels, self.num_convs, self.channels = int(num_levels), int(num_convs), int(channels)
        self.separable, self.activation, self.norm = bool(separable), activation, str(norm)
        self._act = keras.activations.get(activation)
        self.convs = [make_conv(channels, separable, f"conv{i}") for i in range(num_convs)]
        if self.norm == "group":
            groups = math.gcd(16, self.channels)
            make_norm = lambda name: keras.layers.GroupNormalization(groups=groups, name=f"gn{name}")  # noqa: E731
        else:
            make_norm = lambda name: FusedBatchNorm(name=f"bn{name}")  # noqa: E731
        # Flat list, index i * num_levels + j (conv i, level j).
        self.norms = [make_norm(f"{i}_level{j}") for i in range(num_convs) for j in range(num_levels)]

    def call(self, features, training=None):
        outs = []
        for j, x in enumerate(features):
            for i, conv in enumerate(self.convs):
                x = self._act(self.norms[i * self.num_levels + j](conv(x), training=training))
            outs.append(x)
        return outs

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels, "num_convs": self.num_convs,
                "channels": self.channels, "separable": self.separable, "activation": self.activation,
                "norm": self.norm}


@keras.saving.register_keras_serializable(package="detector")
class AnchorPredictor(keras.layers.Layer):
    """Shared 3x3 conv to ``num_anchors * num_outputs`` channels, flattened over levels.

    ``call([G_l]) -> [B, N, num_outputs]`` (``N = sum_l H_l * W_l * num_anchors``).
    Kernels start at N(0, 0.01^2) and the bias at ``bias_init`` so that initial
    outputs are ~``bias_init`` (prior probability for the classifier, mean
    log-depth for the depth predictor).
    """

    def __init__(self, num_anchors: int, num_outputs: int, separable: bool = True, bias_init: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_anchors, self.num_outputs = int(num_anchors), int(num_outputs)
        self.separable, self.bias_init = bool(separable), float(bias_init)
        small = keras.initializers.RandomNormal(stddev=0.01)
        init = {"pointwise_initializer": small} if separable else {"kernel_initializer": small}
        self.conv = make_conv(self.num_anchors * self.num_outputs, separable, "conv", use_bias=True,
                              bias_initializer=keras.initializers.Constant(self.bias_init), **init)

    def call(self, features):
        flat = []
        for x in features:
            y = self.conv(x)
            h, w = y.shape[1], y.shape[2]
            if h is None or w is None:
                shape = (keras.ops.shape(y)[0], -1, self.num_outputs)
            else:  # static sizes keep the exported graph free of shape arithmetic
                shape = (-1, h * w * self.num_anchors, self.num_outputs)
            flat.append(keras.ops.reshape(y, shape))
        return keras.ops.concatenate(flat, axis=1) if len(flat) > 1 else flat[0]

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "num_outputs": self.num_outputs,
                "separable": self.separable, "bias_init": self.bias_init}


@keras.saving.register_keras_serializable(package="detector")
class ClassOffset(keras.layers.Layer):
    """``call(x [B, N]) -> [B, N, C]``: ``x[..., None] + offset[c]``, one learned offset per
    class (initialised to 0).

    The depth head's per-class term (``model.depth_per_class``): objects of different
    classes differ in physical size, so the same apparent size means a different
    distance; the shared predictor keeps learning what every class has in common
    (apparent size, occlusion) and each class only adds a constant in log-depth, which
    rare classes can learn from few examples.
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def build(self, input_shape=None):
        self.offset = self.add_weight(shape=(self.num_classes,), initializer="zeros", name="offset")

    def call(self, x):
        return keras.ops.expand_dims(x, -1) + keras.ops.cast(self.offset, x.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
