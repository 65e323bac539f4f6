"""Typed configuration: one frozen dataclass tree, loaded from YAML.

Every tool takes ``--config PATH_OR_NAME`` (a path, or a bare file name found in
``configs/``) and any number of ``--set key.path=value`` overrides (values parsed
as YAML scalars).  Loading rejects unknown keys, wrong types and impossible values
with a :class:`ConfigError` whose message names the file and the dotted key path.

Conventions used throughout the project (stated once here, repeated in docstrings):

* Class indices are contiguous ``0 .. num_classes-1`` in the order of
  ``data.classes``; there is **no** background slot.  ``-1`` marks padding.
* Boxes inside the model and the input pipeline are ``[ymin, xmin, ymax, xmax]``
  in absolute pixels of the (resized, padded) network input.  COCO files use
  ``[x, y, w, h]`` in original-image pixels.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detector.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped configs (package data)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class SyntheticConfig:
    """Procedurally generated dataset written once to ``cache_dir`` as COCO-JSON."""

    num_train: int = 2000  # train images
    num_val: int = 300  # val images
    height: int = 256          # generated image height in pixels
    width: int = 256           # generated image width in pixels
    seed: int = 0  # generator seed (changing any key regenerates)
    cache_dir: str = "~/.cache/detector/synthetic"  # generated once into a sub-folder named by a hash of these keys
    max_objects: int = 10      # objects per non-empty image: uniform 1..max_objects
    empty_fraction: float = 0.08   # share of images without any object
    crowd_fraction: float = 0.06   # share of images with one iscrowd cluster
    imbalance: float = 15.0    # expected frequency ratio first class : last class


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (never applied to the val split)."""

    backend: Literal["albumentations", "tf", "none"] = "albumentations"  # tf: no Python, 2x faster (no EXIF rotation)
    hflip: float = 0.5                         # probability of a horizontal flip
    scale: tuple[float, float] = (0.75, 1.25)  # random rescale range, then crop/pad
    crop_prob: float = 0.5                     # probability of a box-safe random crop
    brightness: float = 0.2                    # max relative brightness change
    contrast: float = 0.2                      # max relative contrast change
    hue_saturation: float = 0.1                # colour jitter strength in [0, 1]
    min_visibility: float = 0.3                # drop boxes cut to less than this share
    rescale_depth: bool = True                 # depth /= zoom factor (pinhole-consistent)
    mosaic: float = 0.0  # probability that a training image becomes a mosaic of 4 of its batch (not with backend none)
    mosaic_window: tuple[float, float] = (1.0, 2.0)  # mosaic: side of the window cut from the 2x2 tiling / image_size
    mosaic_off_last: float = 0.0  # last share of the (time-fitted) schedule trained without the mosaic

    @property
    def mosaic_on(self) -> bool:
        """Whether training images are mixed into mosaics (the mosaic needs an augmenting backend)."""
        return self.mosaic > 0 and self.backend != "none"


@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic", "coco_json", "voc", "tfds"] = "synthetic"  # where images and annotations come from
    classes: tuple[str, ...] = ()              # class names; index = class id
    image_size: int = 256                      # square network input, multiple of 2**max_level
    max_boxes: int = 100                       # boxes per image kept (first in file order), in training and evaluation
    max_images: int | None = None  # use at most this many images of each split (a quick real-data run); null = all
    max_images_seed: int = 0  # which images data.max_images picks (file-based sources; tfds takes the first N)
    # coco_json: annotation files and image folders
    train_json: str | None = None  # coco_json: train annotation file
    train_images: str | None = None  # coco_json: train image folder
    val_json: str | None = None  # coco_json: val annotation file
    val_images: str | None = None  # coco_json: val image folder
    # voc: dataset root holding Annotations/, JPEGImages/, ImageSets/Main/
    voc_root: str | None = None  # voc: folder with Annotations/, JPEGImages/, ImageSets/Main/
    train_split: str = "train"                 # split name (VOC image set / tfds split)
    val_split: str = "val"  # val split name (VOC image set / tfds split)
    # tfds: builder name and data dir (coco/2017, kitti)
    tfds_name: str | None = None  # tfds: builder name, e.g. coco/2017 or kitti
    tfds_data_dir: str | None = None  # tfds: data dir (null = tfds default)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    shuffle_buffer: int = 1024  # training shuffle buffer (images)
    num_parallel_calls: int = -1               # -1 = tf.data.AUTOTUNE
    seed: int | None = 0                    # null = non-deterministic
    repeat_factor_threshold: float = 0.0  # >0: oversample images of rare classes (LVIS repeat factors); not for tfds
    cache_images: bool | Literal["decoded"] = True  # train images in memory: encoded bytes, or decoded (EXIF applied)
    cache_max_side: int | None = None  # decoded cache: longer side; null = image_size * max(1, augment.scale[1])
    unknown_classes: Literal["error", "skip"] = "error"   # category names not in data.classes
    cache_dir: str = "~/.cache/detector"       # written GT JSON files (voc, filtered sets)


@dataclass(frozen=True)
class AnchorConfig:
    num_scales: int = 3  # octave sub-scales per level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)   # width / height
    anchor_size: float = 4.0                              # base size = anchor_size * stride


@dataclass(frozen=True)
class BackboneConfig:
    name: Literal["small_cnn", "mobilenet_v2", "resnet50"] = "small_cnn"  # feature extractor
    weights: str | None = None  # imagenet (keras.applications download/cache), a local weights file PATH, or null
    width: int = 32                            # small_cnn base channel count
    freeze_bn: bool = False  # keep backbone BatchNorm in inference mode (fine-tuning)
    alpha: float = 1.0                         # mobilenet_v2 width multiplier (imagenet: 0.35..1.4)
    blocks: tuple[int, int, int] = (2, 3, 2)   # small_cnn stride-1 blocks in stages 3, 4, 5
    stem_activation: Literal["relu", "swish"] | None = None  # small_cnn stem convs (strides 2, 4); null = activation
    drop_block: float = 0.0  # small_cnn: DropBlock rate on the stage 4 and 5 outputs, training only (0 = off)
    drop_block_size: int = 5  # small_cnn: side of a dropped DropBlock square, in feature-map cells


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    min_level: int = 3  # finest pyramid level (stride 2**min_level)
    max_level: int = 5  # coarsest pyramid level
    fpn_channels: int = 64  # FPN feature channels
    head_convs: int = 2  # conv layers in each class/box tower
    head_channels: int = 64  # channels of the tower convs
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    prior_probability: float = 0.01  # initial foreground probability of the class logits
    box_scale_factors: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # box coder (sy, sx, sh, sw)
    separable: bool = True                     # depthwise-separable convs in FPN and heads
    activation: Literal["relu", "swish"] = "relu"  # activation in backbone, FPN and heads
    depth_head: Literal["box_tower", "own_tower"] = "box_tower"   # depth predictor's tower
    head_norm: Literal["batch", "group"] = "batch"  # head towers: BatchNorm, or GroupNorm (gcd(16, channels) groups)
    depth_prior: float = 10.0                  # metres; depth predictor bias = log(depth_prior)
    depth_per_class: bool = False  # log-depth per anchor and class: the shared prediction + a learned offset per class
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (all replicas) instead of per replica


@dataclass(frozen=True)
class MatchingConfig:
    method: Literal["iou", "atss"] = "iou"  # fixed IoU thresholds, or ATSS's adaptive per-box threshold
    positive_iou: float = 0.5  # iou: anchor IoU >= this: positive
    negative_iou: float = 0.4  # iou: anchor IoU < this: background; in between: ignored (also crowd overlap)
    atss_top_k: int = 9  # atss: candidates per box and level, nearest anchor centres
    force_match: bool = True  # every box also claims its best anchor
    force_match_top_k: int = 1  # with force_match: claim the k best anchors (ranks 2..k never override a positive)


@dataclass(frozen=True)
class LossConfig:
    # quality_focal (Li et al. 2020): soft target = IoU of the decoded predicted and target boxes on the
    # positive's class (no gradient into the boxes), loss BCE * |target - p|**focal_gamma; focal_alpha unused;
    # the score then estimates the IoU, so eval.score_threshold is an IoU-like level (docs/conventions.md §8)
    cls_loss: Literal["focal", "quality_focal"] = "focal"  # focal on one-hot targets, or quality_focal (IoU targets)
    focal_alpha: float = 0.25  # focal weight of positives (negatives get 1 - alpha); unused by quality_focal
    focal_gamma: float = 2.0  # focal loss focusing exponent (quality_focal's beta)
    huber_delta: float = 1.0  # Huber transition point (box codes and log-depth)
    cls_weight: float = 1.0  # weight of the classification (focal or quality_focal) term
    box_weight: float = 0.7  # weight of the box term; giou: mmdetection ATSS/GFL use 2.0 with focal 1.0
    depth_weight: float = 0.3  # weight of the log-depth term
    depth_loss: Literal["huber", "squared"] = "huber"  # error on log-depth
    # giou: pred and target codes decoded against a unit anchor (exact for any anchor: docs/conventions.md §8);
    # weights elsewhere: mmdetection ATSS / GFL GIoU 2.0 with focal 1.0; detectron2 RetinaNet "giou" 1.0
    box_loss: Literal["huber", "giou"] = "huber"  # huber on the 4 codes, or giou: 1 - GIoU in [0, 2)
    weighting: Literal["fixed", "uncertainty"] = "fixed"  # fixed weights, or learned task uncertainty (Kendall et al.)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = False  # stop when the metric stops improving
    metric: str = "val_AP"  # a results.csv column, e.g. val_AP or val_loss
    mode: Literal["max", "min"] = "max"  # max: higher is better
    patience: int = 5  # evaluations without improvement before stopping
    min_delta: float = 0.0  # smallest change that counts as improvement


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # passes over the train split (or steps_per_epoch steps)
    steps_per_epoch: int | None = None      # cap per epoch; null = whole split
    batch_size: int = 16  # global batch size (split across replicas)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # AdamW or SGD with momentum
    learning_rate: float = 2e-3  # peak rate of the cosine schedule
    weight_decay: float = 1e-4  # decoupled weight decay
    ema_momentum: float | None = None  # average the weights for eval/save/export (momentum min(m, (1+t)/(10+t)))
    momentum: float = 0.9  # SGD momentum
    warmup_steps: int = 200  # linear warm-up steps
    min_learning_rate: float = 0.0  # floor of the cosine schedule
    restart_period_epochs: int | None = None   # cosine warm restarts; null = none
    clip_norm: float | None = 10.0  # clip gradients by global norm; null = off
    seed: int = 0  # weights init and data order
    best_metric: str = "val_AP"  # results.csv column that selects checkpoints/best
    best_mode: Literal["max", "min"] = "max"  # max: higher is better
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    time_limit_minutes: float | None = None     # stop after this much training time
    fit_schedule_to_time_limit: bool = True  # re-plan the cosine schedule at epoch ends to anneal within the limit
    jit_compile: bool = False  # compile the train step and the eval forward + decode with XLA (TPU: always)
    steps_per_execution: int = 1  # train steps per tf.function call (no host sync in between)
    checkpoint_every_n_steps: int | None = None  # also save checkpoints/last mid-epoch every N steps; null = epoch ends


@dataclass(frozen=True)
class EvalConfig:
    every_epochs: int = 1  # evaluate on the val split every N epochs (and at the end)
    batch_size: int = 16  # val batch size
    score_threshold: float = 0.05  # drop detections below this score before NMS
    pre_nms_top_k: int = 1000  # candidates (anchor x class) kept before NMS
    nms_iou: float = 0.5  # NMS IoU threshold
    max_detections: int = 100  # detections per image after NMS
    class_agnostic_nms: bool = False  # NMS across classes instead of per class
    flip_test: bool = False  # average outputs over the image and its mirror (2x eval cost; not exported)
    # the model also runs on the input resized to round(S * f) for each factor f; the candidates of all
    # passes go through one NMS (detector/model/tta.py).  Cost ~ sum of f**2 forward passes; not exported.
    test_scales: tuple[float, ...] = (1.0,)  # test-time input scales f (side round(S*f), a multiple of 2**max_level)
    box_voting_iou: float | None = None  # after NMS: box = score-weighted mean of candidates at IoU >= this; null off
    steps: int | None = None                 # cap on val batches; null = whole split

    def single_pass(self) -> EvalConfig:
        """These settings without test-time augmentation (flip test, extra scales, box voting):
        what an exported model computes."""
        return dataclasses.replace(self, flip_test=False, test_scales=(1.0,), box_voting_iou=None)


@dataclass(frozen=True)
class ProfilingConfig:
    enabled: bool = False  # capture a TensorFlow profiler trace into tb/
    start_step: int = 10  # first profiled step (after the compiling steps)
    stop_step: int = 15  # profiling stops before this step


@dataclass(frozen=True)
class GradientMonitorConfig:
    enabled: bool = False  # per-layer gradient norms to TensorBoard
    every_n_steps: int = 100  # monitoring interval
    histograms: bool = True  # also write gradient histograms


@dataclass(frozen=True)
class CallbacksConfig:
    profiling: ProfilingConfig = field(default_factory=ProfilingConfig)
    gradient_monitor: GradientMonitorConfig = field(default_factory=GradientMonitorConfig)
    tensorboard: bool = True  # write TensorBoard logs into tb/
    tensorboard_every_n_steps: int = 10        # per-step scalars (losses, lr) every N steps


@dataclass(frozen=True)
class DistributeConfig:
    strategy: Literal["default", "mirrored", "multi_worker", "tpu"] = "default"  # tf.distribute strategy
    num_cpu_devices: int = 1          # >1 splits the CPU into logical devices (tests, demos)
    tpu_address: str | None = None  # TPU name or grpc:// address (tpu strategy)


@dataclass(frozen=True)
class Config:
    name: str = "run"  # run name; run directories are <run_root>/<name>-<timestamp>
    run_root: str = "runs"  # folder holding run directories
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against type ``tp`` and convert it (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {value!r}")
        return _build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {len(value)} values")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept plain numeric spellings.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in this file


def _build(cls: type, data: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key '{where}{unknown[0]}' (valid keys under '{path or '<top>'}': "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        kwargs[name] = _convert(value, hints[name], key)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    """Reject values that type-check but cannot work."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    need(len(d.classes) > 0, "data.classes", "the class list is empty; list at least one class name")
    need(len(set(d.classes)) == len(d.classes), "data.classes", "class names must be unique")
    need(d.image_size > 0, "data.image_size", f"must be positive, got {d.image_size}")
    need(1 <= m.min_level <= m.max_level <= 7, "model.max_level",
         f"need 1 <= min_level <= max_level <= 7, got {m.min_level}..{m.max_level}")
    stride = 2 ** m.max_level
    need(d.image_size % stride == 0, "data.image_size",
         f"{d.image_size} is not a multiple of the largest stride 2**max_level = {stride}")
    need(d.max_boxes > 0, "data.max_boxes", f"must be positive, got {d.max_boxes}")
    need(d.max_images is None or d.max_images > 0, "data.max_images", "must be positive or null")
    need(d.cache_max_side is None or d.cache_max_side > 0, "data.cache_max_side", "must be positive or null")
    need(0 <= d.augment.mosaic <= 1, "data.augment.mosaic", "must be in [0, 1]")
    need(1 <= d.augment.mosaic_window[0] <= d.augment.mosaic_window[1] <= 2, "data.augment.mosaic_window",
         "must be [lo, hi] with 1 <= lo <= hi <= 2")
    need(0 <= d.augment.mosaic_off_last < 1, "data.augment.mosaic_off_last", "must be in [0, 1)")
    need(d.shuffle_buffer >= 0, "data.shuffle_buffer", "must be >= 0")
    need(d.repeat_factor_threshold >= 0, "data.repeat_factor_threshold", "must be >= 0 (0 = off)")
    need(d.repeat_factor_threshold == 0 or d.source != "tfds", "data.repeat_factor_threshold",
         "repeat-factor sampling needs a file-based source (synthetic, coco_json, voc), not tfds")
    need(d.num_parallel_calls == -1 or d.num_parallel_calls > 0, "data.num_parallel_calls",
         "must be -1 (autotune) or positive")
    s = d.synthetic
    for k in ("num_train", "num_val", "height", "width"):
        need(getattr(s, k) > 0, f"data.synthetic.{k}", f"must be positive, got {getattr(s, k)}")
    need(s.max_objects > 0, "data.synthetic.max_objects", f"must be positive, got {s.max_objects}")
    for k in ("empty_fraction", "crowd_fraction"):
        need(0.0 <= getattr(s, k) <= 1.0, f"data.synthetic.{k}", "must be in [0, 1]")
    need(s.imbalance >= 1.0, "data.synthetic.imbalance", f"must be >= 1, got {s.imbalance}")
    a = d.augment
    for k in ("hflip", "crop_prob", "min_visibility"):
        need(0.0 <= getattr(a, k) <= 1.0, f"data.augment.{k}", "must be in [0, 1]")
    need(0 < a.scale[0] <= a.scale[1], "data.augment.scale", f"need 0 < min <= max, got {list(a.scale)}")
    for k in ("brightness", "contrast", "hue_saturation"):
        need(0.0 <= getattr(a, k) <= 1.0, f"data.augment.{k}", "must be in [0, 1]")
    if d.source == "coco_json":
        for k in ("train_json", "train_images", "val_json", "val_images"):
            need(getattr(d, k) is not None, f"data.{k}", "required when data.source is coco_json")
    if d.source == "voc":
        need(d.voc_root is not None, "data.voc_root", "required when data.source is voc")
    if d.source == "tfds":
        need(d.tfds_name is not None, "data.tfds_name", "required when data.source is tfds")
    need(m.anchors.num_scales > 0, "model.anchors.num_scales", "must be positive")
    need(len(m.anchors.aspect_ratios) > 0 and all(r > 0 for r in m.anchors.aspect_ratios),
         "model.anchors.aspect_ratios", "need at least one positive ratio")
    need(m.anchors.anchor_size > 0, "model.anchors.anchor_size", "must be positive")
    need(m.backbone.width > 0, "model.backbone.width", "must be positive")
    for k in ("fpn_channels", "head_channels"):
        need(getattr(m, k) > 0, f"model.{k}", "must be positive")
    need(m.head_convs >= 0, "model.head_convs", "must be >= 0")
    need(2 <= m.min_level <= 5, "model.min_level",
         f"must be in 2..5 (backbones provide strides 4..32), got {m.min_level}")
    need(m.depth_prior > 0, "model.depth_prior", "must be positive (metres)")
    need(m.backbone.alpha > 0, "model.backbone.alpha", "must be positive")
    need(all(b >= 0 for b in m.backbone.blocks), "model.backbone.blocks", "must be >= 0")
    need(0 <= m.backbone.drop_block < 1, "model.backbone.drop_block", "must be in [0, 1)")
    need(m.backbone.drop_block_size >= 1, "model.backbone.drop_block_size", "must be >= 1")
    need(m.backbone.drop_block == 0 or m.backbone.name == "small_cnn", "model.backbone.drop_block",
         f"applies to the small_cnn backbone only; set it to 0 for {m.backbone.name}")
    need(0 < m.prior_probability < 1, "model.prior_probability", "must be in (0, 1)")
    need(all(f > 0 for f in m.box_scale_factors), "model.box_scale_factors", "must be positive")
    mt = cfg.matching
    need(mt.force_match_top_k >= 1, "matching.force_match_top_k", f"must be >= 1, got {mt.force_match_top_k}")
    need(0 <= mt.negative_iou <= mt.positive_iou <= 1, "matching.negative_iou",
         f"need 0 <= negative_iou <= positive_iou <= 1, got {mt.negative_iou}, {mt.positive_iou}")
    lo = cfg.loss
    need(lo.focal_gamma >= 0, "loss.focal_gamma", "must be >= 0")
    need(0 <= lo.focal_alpha <= 1, "loss.focal_alpha", "must be in [0, 1]")
    need(lo.huber_delta > 0, "loss.huber_delta", "must be positive")
    for k in ("cls_weight", "box_weight", "depth_weight"):
        need(getattr(lo, k) >= 0, f"loss.{k}", "must be >= 0")
    need(t.epochs > 0, "train.epochs", f"must be positive, got {t.epochs}")
    need(t.steps_per_epoch is None or t.steps_per_epoch > 0, "train.steps_per_epoch",
         "must be positive or null")
    need(t.batch_size > 0, "train.batch_size", f"must be positive, got {t.batch_size}")
    need(t.learning_rate > 0, "train.learning_rate", "must be positive")
    need(0 <= t.min_learning_rate <= t.learning_rate, "train.min_learning_rate",
         "must be in [0, learning_rate]")
    need(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    need(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    need(t.ema_momentum is None or 0 < t.ema_momentum < 1, "train.ema_momentum", "must be in (0, 1) or null")
    need(t.restart_period_epochs is None or t.restart_period_epochs > 0,
         "train.restart_period_epochs", "must be positive or null")
    need(t.clip_norm is None or t.clip_norm > 0, "train.clip_norm", "must be positive or null")
    need(t.early_stopping.patience > 0, "train.early_stopping.patience", "must be positive")
    need(t.time_limit_minutes is None or t.time_limit_minutes > 0, "train.time_limit_minutes",
         "must be positive or null")
    need(t.steps_per_execution > 0, "train.steps_per_execution", "must be positive")
    need(t.checkpoint_every_n_steps is None or t.checkpoint_every_n_steps > 0,
         "train.checkpoint_every_n_steps", "must be positive or null")
    need(e.every_epochs > 0, "eval.every_epochs", "must be positive")
    need(e.batch_size > 0, "eval.batch_size", "must be positive")
    need(0 <= e.score_threshold < 1, "eval.score_threshold", "must be in [0, 1)")
    need(0 < e.nms_iou <= 1, "eval.nms_iou", "must be in (0, 1]")
    need(e.max_detections > 0, "eval.max_detections", "must be positive")
    need(e.pre_nms_top_k >= e.max_detections, "eval.pre_nms_top_k", "must be >= eval.max_detections")
    need(e.steps is None or e.steps > 0, "eval.steps", "must be positive or null")
    need(len(e.test_scales) > 0 and all(f > 0 for f in e.test_scales), "eval.test_scales",
         f"must be a non-empty list of positive factors, got {list(e.test_scales)}")
    for f in e.test_scales:
        side = round(d.image_size * f)
        need(side >= stride and side % stride == 0, "eval.test_scales",
             f"factor {f} gives an input side of {side} px; it must be a multiple of 2**model.max_level = {stride}")
    need(e.box_voting_iou is None or 0 < e.box_voting_iou <= 1, "eval.box_voting_iou", "must be in (0, 1] or null")
    p = cfg.callbacks.profiling
    need(0 < p.start_step < p.stop_step, "callbacks.profiling.stop_step",
         "need 0 < start_step < stop_step (step 0 compiles; profile later steps)")
    need(cfg.callbacks.gradient_monitor.every_n_steps > 0,
         "callbacks.gradient_monitor.every_n_steps", "must be positive")
    need(cfg.callbacks.tensorboard_every_n_steps > 0, "callbacks.tensorboard_every_n_steps",
         "must be positive")
    need(cfg.distribute.num_cpu_devices > 0, "distribute.num_cpu_devices", "must be positive")


# --------------------------------------------------------------------------- public API


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A path as given if it exists, else the same name inside ``configs/``."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    candidates = [CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    available = ", ".join(sorted(x.name for x in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file '{name_or_path}' not found (configs/ has: {available})")


def _set_override(tree: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}': expected key.path=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set '{assignment}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(data: dict | None, overrides: list[str] | tuple[str, ...] = (), source: str = "<dict>") -> Config:
    """Build and validate a :class:`Config` from a nested dict plus ``key.path=value`` overrides."""
    tree = dict(data or {})
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    for ov in overrides:
        _set_override(tree, ov)
    try:
        cfg = _build(Config, tree, "")
        _check(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_config(name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``name_or_path`` (a file, or a name in ``configs/``) and apply ``--set`` overrides."""
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return from_dict(data, overrides, source=str(path))


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists) suitable for YAML."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(cfg)


# Last line of a saved config: a copy cut short (e.g. by another tool) is recognisable.
SAVED_CONFIG_END = "# end of config\n"


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the fully resolved config; ``load_config(path)`` reproduces ``cfg`` exactly.

    Written atomically (never a torn file) and ending with :data:`SAVED_CONFIG_END`.
    """
    from detector.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False) + SAVED_CONFIG_END)

