"""Feature pyramid network (Lin et al. 2017) with extra stride-2 levels.

Inputs: backbone features ``C_l`` for consecutive levels ``lo..hi`` (``hi <= 5``).
Outputs: ``P_l`` for ``min_level..max_level``, all with ``channels`` channels::

    L_l = conv1x1(C_l)
    T_hi = L_hi,  T_l = L_l + upsample2x(T_{l+1})       (top-down, nearest)
    P_l = BN(conv3x3(T_l))                               (l <= hi)
    P_{hi+1} = BN(conv3x3/s2(P_hi)),  P_{l+1} = BN(conv3x3/s2(act(P_l)))   (l > hi)

Nearest up-sampling, 3x3 (optionally depthwise-separable) convs and BN all map to
plain TFLite builtins, and nothing depends on data at run time.
"""

from __future__ import annotations

import keras

from detector.model.norm import FusedBatchNorm


def make_conv(filters: int, separable: bool, name: str, strides: int = 1, use_bias: bool = False, **init):
    """3x3 'same' conv, depthwise-separable or plain (``init``: initialiser kwargs)."""
    if separable:
        return keras.layers.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=use_bias,
                                            name=name, **init)
    return keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=use_bias, name=name, **init)


@keras.saving.register_keras_serializable(package="detector")
class FeaturePyramid(keras.layers.Layer):
    """FPN over backbone levels ``backbone_levels`` producing ``min_level..max_level``.

    ``call([C_lo, ..., C_hi]) -> [P_min, ..., P_max]``, each ``[B, S/2**l, S/2**l, channels]``.
    """

    def __init__(self, min_level: int, max_level: int, backbone_levels, channels: int = 64,
                 separable: bool = True, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.backbone_levels = [int(v) for v in backbone_levels]
        if self.backbone_levels != list(range(self.min_level, self.backbone_levels[-1] + 1)):
            raise ValueError(f"FeaturePyramid: backbone levels {self.backbone_levels} must start at "
                             f"min_level {self.min_level} and be consecutive")
        self.channels, self.separable, self.activation = int(channels), bool(separable), activation
        self._act = keras.activations.get(activation)
        self.lateral = [keras.layers.Conv2D(channels, 1, name=f"lateral_p{lvl}") for lvl in self.backbone_levels]
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample")
        self.output_convs = [make_conv(channels, separable, f"output_p{lvl}") for lvl in self.backbone_levels]
        self.extra_convs = [make_conv(channels, separable, f"extra_p{lvl}", strides=2)
                            for lvl in range(self.backbone_levels[-1] + 1, self.max_level + 1)]
        self.norms = [FusedBatchNorm(name=f"bn_p{lvl}")
                      for lvl in range(self.min_level, self.max_level + 1)]

    def call(self, features, training=None):
        if len(features) != len(self.backbone_levels):
            raise ValueError(f"FeaturePyramid expects {len(self.backbone_levels)} inputs, got {len(features)}")
        top_down = [None] * len(features)
        for i in reversed(range(len(features))):
            lat = self.lateral[i](features[i])
            top_down[i] = lat if i == len(features) - 1 else lat + self.upsample(top_down[i + 1])
        outs = [self.norms[i](conv(t), training=training)
                for i, (conv, t) in enumerate(zip(self.output_convs, top_down))]
        for j, conv in enumerate(self.extra_convs):
            x = outs[-1] if j == 0 else self._act(outs[-1])
            outs.append(self.norms[len(features) + j](conv(x), training=training))
        return outs

    def get_config(self):
        return {**super().get_config(), "min_level": self.min_level, "max_level": self.max_level,
                "backbone_levels": self.backbone_levels, "channels": self.channels,
                "separable": self.separable, "activation": self.activation}
