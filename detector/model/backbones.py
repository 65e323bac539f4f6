"""Backbones: raw RGB pixels -> multi-scale feature maps.

Every backbone is a functional ``keras.Model`` taking float32 ``[B, S, S, 3]`` RGB
in ``0..255`` (normalisation is inside, so an exported model takes raw pixels) and
returning a list of feature maps for consecutive levels ``lo..hi`` (level ``l`` has
stride ``2**l``; backbones provide levels 2..5, i.e. strides 4..32).

* ``small_cnn``: a from-scratch CNN for fast CPU training: plain strided convs at
  high resolution, then depthwise-separable residual blocks; BN + ReLU/swish.
* ``mobilenet_v2`` / ``resnet50``: ``keras.applications`` trunks.  ``weights``:
  ``null`` (random init), ``"imagenet"`` (keras.applications fetches the file into its
  cache, ``~/.keras/models``, on first use; a fetch that fails is a :class:`UserError`
  naming the alternatives) or the PATH of a local weights file for the trunk without
  its classifier top (e.g. the ``..._no_top.h5`` file keras.applications downloads).
"""

from __future__ import annotations

import os

import keras

from detector.errors import UserError
from detector.model.dropblock import DropBlock2D
from detector.model.norm import FusedBatchNorm

BACKBONE_LEVELS = (2, 3, 4, 5)

# keras.applications layer names per level (stride 4, 8, 16, 32).
_APP_FEATURES = {
    "mobilenet_v2": {2: "block_3_expand_relu", 3: "block_6_expand_relu",
                     4: "block_13_expand_relu", 5: "out_relu"},
    "resnet50": {2: "conv2_block3_out", 3: "conv3_block4_out",
                 4: "conv4_block6_out", 5: "conv5_block3_out"},
}
SCRATCH_BN_MOMENTUM = 0.9   # BN momentum of a keras.applications trunk trained from scratch

_NORMALIZATION = {"small_cnn": "tf", "mobilenet_v2": "tf", "resnet50": "caffe"}


@keras.saving.register_keras_serializable(package="detector")
class ImageNormalization(keras.layers.Layer):
    """RGB ``0..255`` -> the backbone's input range.

    ``mode="tf"``: ``x / 127.5 - 1`` (MobileNetV2, small_cnn).  ``mode="caffe"``:
    RGB -> BGR minus the ImageNet channel means (ResNet50's ``preprocess_input``).
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe"):
            raise ValueError(f"ImageNormalization: mode must be 'tf' or 'caffe', got {mode!r}")
        self.mode = mode

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        x = x[..., ::-1]
        return x - keras.ops.convert_to_tensor([103.939, 116.779, 123.68], self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def conv_bn_act(x, filters: int, stride: int, activation: str, name: str, kernel_size: int = 3):
    x = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = FusedBatchNorm(name=f"{name}_bn")(x)
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def separable_block(x, filters: int, stride: int, activation: str, name: str):
    """Depthwise 3x3 (stride) + BN + act + pointwise 1x1 + BN (+ residual) + act."""
    inp = x
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = FusedBatchNorm(name=f"{name}_dw_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_dw_act")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = FusedBatchNorm(name=f"{name}_pw_bn")(x)
    if stride == 1 and inp.shape[-1] == filters:
        x = keras.layers.Add(name=f"{name}_add")([inp, x])
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def small_cnn(inputs, width: int, activation: str, blocks=(2, 3, 2),
              stem_activation: str | None = None, drop_block: float = 0.0,
              drop_block_size: int = 5) -> dict[int, object]:
    """Features ``{level: tensor}`` for levels 2..5 with ``w, 2w, 4w, 8w`` channels.

    Strides 2 and 4 use plain 3x3 convs with few channels (cheap and expressive at
    high resolution, where depthwise convs are memory-bound); stages 3, 4, 5 use
    separable blocks: one strided block then ``blocks[i]`` stride-1 residual blocks.
    ``stem_activation`` (default ``activation``) is the two stem convs' activation: their
    outputs are the largest tensors of the network, so a cheap relu there saves most of
    what swish costs elsewhere.  ``drop_block > 0``: a :class:`DropBlock2D` on the outputs
    of stages 4 and 5 (training only; they feed the FPN and the next stage).
    """
    stem_activation = stem_activation or activation
    x = conv_bn_act(inputs, max(8, width // 2), 2, stem_activation, "stem1")      # stride 2
    c2 = conv_bn_act(x, width, 2, stem_activation, "stem2")                      # stride 4
    feats, x = {2: c2}, c2
    for level, mult, count in zip((3, 4, 5), (2, 4, 8), blocks):
        x = separable_block(x, width * mult, 2, activation, f"stage{level}_0")
        for i in range(count):
            x = separable_block(x, width * mult, 1, activation, f"stage{level}_{i + 1}")
        if drop_block > 0 and level >= 4:
            x = DropBlock2D(drop_block, drop_block_size, name=f"stage{level}_dropblock")(x)
        feats[level] = x
    return feats


def build_backbone(backbone_cfg, image_size: int, min_level: int, max_level: int,
                   activation: str = "relu") -> tuple[keras.Model, list[int]]:
    """Backbone model and the levels it outputs.

    Args:
      backbone_cfg: :class:`~detector.config.BackboneConfig`.
      image_size: square input side ``S``.
      min_level, max_level: pyramid levels wanted by the FPN (``2 <= min_level``);
        levels above 5 are made later by the FPN from level 5.

    Returns:
      ``(model, levels)``: ``model([B,S,S,3] RGB 0..255) -> [C_lo, ..., C_hi]`` for
      ``levels = [min_level .. min(max_level, 5)]`` (at least ``[5]``).
    """
    if not 2 <= min_level <= 5:
        raise UserError(f"model.min_level: must be in 2..5 for the backbones, got {min_level}")
    levels = list(range(min_level, min(max_level, 5) + 1))
    name = backbone_cfg.name
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = ImageNormalization(_NORMALIZATION[name], name="normalize")(inputs)
    if name == "small_cnn":
        if backbone_cfg.weights is not None:
            raise UserError("model.backbone.weights: small_cnn is trained from scratch and has no "
                            f"pretrained weights; set it to null (got {backbone_cfg.weights!r})")
        feats = small_cnn(x, backbone_cfg.width, activation, backbone_cfg.blocks,
                          backbone_cfg.stem_activation, backbone_cfg.drop_block,
                          backbone_cfg.drop_block_size)
    elif name in _APP_FEATURES:
        app = _application(name, backbone_cfg, image_size)
        if backbone_cfg.weights is None:
            # keras.applications BN averages over ~1,000 steps (MobileNetV2 momentum 0.999,
            # ResNet50 0.99); from random weights the moving statistics then lag a short run
            # so far that inference collapses (MobileNetV2, 1,168 steps: val AP 0.002 at a
            # train loss of 0.5).  0.9 as in FusedBatchNorm; pretrained trunks keep theirs.
            for layer in app.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = min(layer.momentum, SCRATCH_BN_MOMENTUM)
        trunk = keras.Model(app.input, [app.get_layer(_APP_FEATURES[name][lvl]).output for lvl in levels],
                            name=f"{name}_trunk")
        outs = trunk(x)
        feats = dict(zip(levels, outs if isinstance(outs, (list, tuple)) else [outs]))
    else:
        raise UserError(f"model.backbone.name: unknown backbone {name!r}")
    model = keras.Model(inputs, [feats[lvl] for lvl in levels], name=f"backbone_{name}")
    if backbone_cfg.freeze_bn:
        # Keras 3 BN with trainable=False also runs in inference mode (frozen statistics).
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model, levels


def _application(name: str, backbone_cfg, image_size: int) -> keras.Model:
    weights = backbone_cfg.weights  # None, "imagenet" (fetched or cached), or a local file
    if weights not in (None, "imagenet"):
        path = os.path.expanduser(weights)
        if not os.path.isfile(path):
            raise UserError(f"model.backbone.weights: {weights!r} is neither 'imagenet', null, nor an "
                            "existing weights file")
        weights = path
    shape = (image_size, image_size, 3)
    try:
        if name == "mobilenet_v2":
            return keras.applications.MobileNetV2(input_shape=shape, alpha=backbone_cfg.alpha,
                                                  include_top=False, weights=weights)
        return keras.applications.ResNet50(input_shape=shape, include_top=False, weights=weights)
    except ValueError as e:  # e.g. an alpha without published ImageNet weights, or a file that does not fit
        raise UserError(f"model.backbone: cannot build {name} with weights={backbone_cfg.weights!r}: {e}") from None
    except Exception as e:  # keras.utils.get_file: "URL fetch failure ..." (no network, proxy, ...)
        if backbone_cfg.weights != "imagenet":
            raise
        raise UserError(
            f"model.backbone.weights: cannot fetch the ImageNet weights of {name} ({type(e).__name__}: "
            f"{str(e)[:200]}). Alternatives: copy the keras.applications weights file (the '_no_top' "
            "one) from a connected machine into ~/.keras/models/ (or $KERAS_HOME/models/); or set "
            "model.backbone.weights to the PATH of that file; or set model.backbone.weights: null to "
            "train from random initialisation (slower to converge)") from None
