"""``make_dataset``: canonical elements -> batched network input + per-anchor targets.

Output (``B`` = train.batch_size when training else eval.batch_size, ``S`` =
data.image_size, ``N`` anchors, ``M`` = data.max_boxes), all shapes static::

    {"images": float32 [B,S,S,3] RGB 0..255, letterboxed (pad bottom/right with 0),
     "targets": {"cls": int32 [B,N] (class, -1 background, -2 ignore), "box": float32 [B,N,4],
                 "depth": float32 [B,N] log metres, "depth_mask": float32 [B,N]},
     "gt": {"boxes": float32 [B,M,4] yxyx network px, "boxes_xywh": float64 [B,M,4],
            "classes": int32 [B,M] (-1 pad), "is_crowd": bool [B,M], "area": float64 [B,M],
            "depth": float32 [B,M] metres (-1 unknown), "num_boxes": int32 [B],
            "image_id": int64 [B], "scale": float32 [B], "original_size": int32 [B,2],
            "valid": bool [B]}}

Training: shuffled, repeated forever, augmented, ``valid`` all True.  With
``with_gt=False`` (what the trainer uses) a batch is only ``{"images", "targets"}``:
no float64/int64/bool tensors go to the accelerator (TPU-supported dtypes only).

Training epochs (``epochs=Epochs(steps_per_epoch, start, skip_steps)``, what the
trainer uses): ONE pipeline yields epochs ``start, start + 1, ...`` back to back, each
exactly ``steps_per_epoch`` steps of batches and never mixed with the next (an epoch is
its own sub-stream of that many elements, after unreadable images are dropped).  Epoch
``e`` uses the data seed ``epoch_seed(data.seed, e)`` for everything random: the
repeat-factor draws, the shuffle (keyed by that seed and ``train.seed``; reshuffled
for each pass when an epoch is longer than the split) and each image's augmentation
(its position in the epoch), so its batches are the same whichever epoch the pipeline
started at.  ``skip_steps`` (a resumed run) skips records, not batches: the skipped
images are never decoded.  Encoded image bytes are cached in memory
(``data.cache_images``, file sources; ``decoded``: the decoded, shrunk pixels instead,
:mod:`detector.data.decoded_cache`): the pipeline reads every image of its split (or
shard) once, in one pass before the first batch, and every epoch reads the cache.
Without ``epochs`` the stream is one endless epoch with data seed ``data.seed`` (its
cache fills during the first pass).
With an ``input_context`` of several input pipelines (one per worker), the FILE LIST
is sharded before anything is read or decoded: pipeline ``i`` of ``n`` takes images
``i, i+n, i+2n, ...`` of the fixed source order, and batches are per-replica
(``input_context.get_per_replica_batch_size``).  Evaluation
(``training=False``): finite, file order, every readable image exactly once, the last
batch completed with ``valid=False`` padding images (targets all ignore, no boxes);
``gt.boxes_xywh``/``gt.area`` are the annotation values untouched, in file order.

Per image: ONE ``tf.numpy_function`` (decode + albumentations + letterbox, see
:mod:`detector.data.augment`) or the pure-TF path (:mod:`detector.data.augment_tf`,
``data.augment.backend: tf``/``none``), in training optionally mixed into mosaics by
groups of one step's images (``data.augment.mosaic``, :mod:`detector.data.mosaic`;
not in epochs from ``Epochs.mosaic_until`` on, read as each epoch starts), then targets from
:func:`detector.targets.assign.assign_targets` in the graph.  Unreadable images are
filtered out (warning + count in :class:`PipelineStats`); randomness is seeded per
element from ``data.seed`` and the element's position, so with a seed the stream is
reproducible regardless of thread scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from detector.config import Config
from detector.data import augment_tf
from detector.data.augment import NO_READABLE_IMAGES, OUTPUT_DTYPES, Processor
from detector.data.decoded_cache import cache_max_side, decode_for_cache
from detector.data.mosaic import mosaic_batch
from detector.data.records import PipelineStats
from detector.data.sampling import epoch_repeat_counts
from detector.data.sources import load_records, repeat_factors, source_dataset
from detector.targets.anchors import anchors_for_config, level_sizes
from detector.targets.assign import IGNORE, assign_targets, prepare_anchors

_GT_KEYS = ("boxes", "boxes_xywh", "classes", "is_crowd", "area", "depth", "num_boxes",
            "scale", "original_size")


def _numpy_step(processor: Processor, data_cfg):
    s, m = data_cfg.image_size, data_cfg.max_boxes
    shapes = ([], [s, s, 3], [m, 4], [m, 4], [m], [m], [m], [m], [], [], [2])

    def step(e, seed):
        size = e.get("size", tf.zeros([2], tf.int32))   # annotated (h, w); 0 = unknown (tfds)
        outs = tf.numpy_function(
            processor, [e["image"], e["name"], e["boxes"], e["classes"], e["is_crowd"], e["area"],
                        e["depth"], seed, size], OUTPUT_DTYPES, stateful=True)
        for t, shape in zip(outs, shapes):
            t.set_shape(shape)
        return dict(zip(("ok", "image") + _GT_KEYS, outs))

    return step


def _tf_step(data_cfg, training: bool):
    augmenting = training and data_cfg.augment.backend == "tf"

    def step(e, seed):
        args = (e["image"], e["boxes"], e["classes"], e["is_crowd"], e["area"], e["depth"])
        size = e.get("size", tf.zeros([2], tf.int32))
        if augmenting:
            base = data_cfg.seed if data_cfg.seed is not None else 0
            return augment_tf.tf_train(*args, tf.stack([tf.constant(base, tf.int64), seed]), data_cfg,
                                       size=size)
        return augment_tf.tf_eval(*args, data_cfg, size=size)

    return step


def _targets_step(cfg, with_gt: bool = True):
    anchors = prepare_anchors(anchors_for_config(cfg))
    n_anchors = int(anchors.boxes.shape[0])
    levels = level_sizes(cfg)

    def step(e):
        n = e["num_boxes"]
        t = assign_targets(anchors, e["boxes"][:n], e["classes"][:n], e["is_crowd"][:n],
                           e["depth"][:n], cfg.matching, cfg.model.box_scale_factors, levels)
        t["cls"].set_shape([n_anchors])
        t["box"].set_shape([n_anchors, 4])
        t["depth"].set_shape([n_anchors])
        t["depth_mask"].set_shape([n_anchors])
        if not with_gt:
            return {"images": e["image"], "targets": t}
        gt = {k: e[k] for k in _GT_KEYS}
        gt["image_id"] = e["image_id"]
        gt["valid"] = tf.constant(True)
        return {"images": e["image"], "targets": t, "gt": gt}

    return step


def _padding(spec) -> tf.data.Dataset:
    """One ``valid=False`` element matching ``spec``: no boxes, all anchors ignored."""
    zeros = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)
    zeros["targets"]["cls"] = tf.fill(spec["targets"]["cls"].shape, tf.constant(IGNORE, tf.int32))
    zeros["gt"]["classes"] = -tf.ones_like(zeros["gt"]["classes"])
    zeros["gt"]["depth"] = -tf.ones_like(zeros["gt"]["depth"])
    zeros["gt"]["image_id"] = tf.constant(-1, tf.int64)
    zeros["gt"]["valid"] = tf.constant(False)
    return tf.data.Dataset.from_tensors(zeros)


def _check_one_image_decodes(ds: tf.data.Dataset, split: str, num_images: int | None) -> None:
    """Raise when no image of ``split`` decodes on the TF path: the repeated training stream
    would otherwise drop every element with ``ignore_errors`` and never yield a batch.

    Stops at the first decodable image (one decode in the normal case)."""
    from detector.errors import UserError

    probe = ds.map(lambda e: tf.shape(augment_tf.decode(e["image"], e.get("size")))).ignore_errors().take(1)
    if not any(True for _ in probe):
        raise UserError(f"{split} split: {NO_READABLE_IMAGES}: none of the {num_images or 'its'} images could "
                        "be decoded (TF decoder; the albumentations backend names the files)")


def check_split_readable(cfg: Config, split: str) -> None:
    """A :class:`UserError` when no image of a file-based ``split`` decodes, found before any
    training or model building (stops at the first image that decodes: one read in the
    normal case).  tfds sources are checked when their dataset is built."""
    from detector.data.augment import decode_checked
    from detector.errors import UserError

    if cfg.data.source == "tfds":
        return
    records, _ = load_records(cfg, split)
    python_free = cfg.data.augment.backend in ("tf", "none")
    for r in records:
        try:
            data = Path(r.image).read_bytes()
        except OSError:
            continue
        if python_free:
            try:
                augment_tf.decode(tf.constant(data))
                return
            except tf.errors.OpError:
                continue
        if decode_checked(data)[0] is not None:
            return
    if records:
        raise UserError(f"{split} split: {NO_READABLE_IMAGES}: none of its {len(records)} images could be "
                        f"decoded (first: {records[0].image})")


@dataclass(frozen=True)
class Epochs:
    """Which training batches :func:`make_dataset` yields: epochs ``start``, ``start + 1``, ...
    (without end) of ``steps_per_epoch`` train steps each, leaving out the first
    ``skip_steps`` steps of epoch ``start`` (where a resumed run continues)."""
    steps_per_epoch: int
    start: int = 0
    skip_steps: int = 0
    # With data.augment.mosaic: the first epoch without the mosaic (int64 scalar variable,
    # read when each epoch starts, so a callback can move it; see MosaicSwitch); None: all.
    mosaic_until: tf.Variable | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.steps_per_epoch < 1 or self.start < 0 or not 0 <= self.skip_steps < self.steps_per_epoch:
            raise ValueError(f"invalid {self}")


def epoch_seed(seed, epoch):
    """The data seed of ``epoch``: depends only on (seed, epoch); Python ints or int64 tensors."""
    return (seed * 1_000_003 + epoch) % (2 ** 31 - 1)


def _training_source(cfg: Config, split: str, shard, stats: PipelineStats):
    """``(dataset to probe, number of images, dataset to fill the cache or None, one_pass)``.

    ``one_pass(seed)`` (``seed`` an int64 tensor: the epoch's data seed) gives one pass over
    this pipeline's images before shuffling: file sources in file order from the
    in-memory cache (``data.cache_images``: encoded bytes, or decoded pixels, see
    :mod:`detector.data.decoded_cache`), each image repeated by its repeat factor drawn
    from ``seed``; tfds reads its files in an order shuffled by ``seed``.
    """
    d = cfg.data
    if d.source == "tfds":
        probe, num_images = source_dataset(cfg, split, True, shard=shard)
        return probe, num_images, None, lambda seed: source_dataset(cfg, split, True, shard=shard, seed=seed)[0]
    probe, num_images = source_dataset(cfg, split, True, shard=shard)
    ds, fill = probe, None
    if d.cache_images == "decoded":   # pixels: decoded (EXIF applied) and shrunk once, every pass reads memory
        ds = fill = decode_for_cache(probe, cache_max_side(d), stats, num_images).cache()
    elif d.cache_images:
        ds = fill = ds.cache()  # encoded bytes only: filled once, then every pass of every epoch reads memory
    factors = repeat_factors(cfg, split)
    if factors is None:
        return probe, num_images, fill, lambda seed: ds

    def one_pass(seed):
        counts = epoch_repeat_counts(factors, seed)   # drawn for all images: the same on every worker
        if shard is not None and shard[0] > 1:
            counts = counts[shard[1]::shard[0]]
        return tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(counts))).flat_map(
            lambda e, k: tf.data.Dataset.from_tensors(e).repeat(k))

    return probe, num_images, fill, one_pass


def _training_stream(cfg: Config, one_pass, fill, process, epochs: Epochs | None, per_step: int) -> tf.data.Dataset:
    """The processed training elements of all epochs in sequence (see :func:`make_dataset`),
    before target assignment; with ``data.augment.mosaic`` the images of each step are
    mixed (:mod:`detector.data.mosaic`)."""
    d = cfg.data
    a = d.augment
    mix = None
    if a.mosaic_on:
        def mix(e, on):
            return mosaic_batch(e, a.mosaic * on, a.mosaic_window, a.min_visibility, a.rescale_depth)
    # data.seed null: a fresh seed per pipeline (not reproducible), used as a seed would be
    base = d.seed if d.seed is not None else int(tf.random.uniform([], 0, 2 ** 31 - 1, tf.int64))
    graph_seed = cfg.train.seed % (2 ** 31 - 1) + 1   # never 0: a 0 graph seed rejects tensor op seeds

    def epoch_elements(seed, skip, take, mosaic_on):
        # This function graph's seed only (the process-wide seed is untouched): the shuffles
        # are keyed by (train.seed, the epoch's data seed), whatever ran before.
        tf.random.set_seed(graph_seed)
        ds = one_pass(seed)
        if d.shuffle_buffer > 0:
            ds = ds.shuffle(d.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # Skipping here, at the record level, spares decoding and augmenting the skipped images;
        # the position i still counts them, so the rest get the same per-image seeds.
        ds = ds.repeat().enumerate().skip(skip)
        ds = process(ds, seed * 1_000_003).take(take)
        if mix is not None:   # groups of one step's images: an epoch is a whole number of them
            on = tf.cast(mosaic_on, tf.float32)
            ds = ds.batch(per_step, drop_remainder=True).map(lambda e: mix(e, on)).unbatch()
        return ds

    if epochs is None:   # one endless epoch with data seed data.seed
        starts = tf.data.Dataset.from_tensors(tf.constant([base, 0, -1, 1], tf.int64))
    else:
        first, until = epochs.start, epochs.mosaic_until
        size, skip = epochs.steps_per_epoch * per_step, epochs.skip_steps * per_step

        def start(e):   # (data seed, records to skip, elements to take) of epoch e
            skipped = tf.cast(tf.equal(e, first), tf.int64) * skip
            on = tf.constant(1, tf.int64) if until is None else tf.cast(e < until.read_value(), tf.int64)
            return tf.stack([epoch_seed(base, e), skipped, size - skipped, on])

        starts = tf.data.Dataset.range(first, 2 ** 62).map(start)
    # Read every image into the cache first, in one complete pass: tf.data keeps an in-memory
    # cache only once a pass over it ends, and an epoch may stop inside a pass.  (The endless
    # stream without epochs completes its first pass by itself, if read that far.)
    if fill is not None and epochs is not None:
        nothing = fill.filter(lambda e: tf.constant(False))
        starts = nothing.map(lambda _: tf.zeros([4], tf.int64)).concatenate(starts)
    return starts.flat_map(lambda t: epoch_elements(t[0], t[1], t[2], t[3]))


def make_dataset(cfg: Config, split: str, training: bool, stats: PipelineStats | None = None,
                 batch_size: int | None = None, with_gt: bool = True,
                 input_context: tf.distribute.InputContext | None = None,
                 epochs: Epochs | None = None) -> tf.data.Dataset:
    """Batched dataset of ``split`` ("train" or "val"); see the module docstring.

    ``stats`` (optional) receives the skip/drop counters; ``batch_size`` overrides the
    config's (e.g. a per-replica size).  ``with_gt=False`` (training only) leaves out
    ``gt``; ``input_context``: shard the source and batch per replica (multi-worker).
    ``epochs`` (training only): yield those epochs in sequence, each exactly
    ``steps_per_epoch`` steps of batches (with an ``input_context``: the pipeline's
    replicas' batches of each step); None: one endless stream seeded by ``data.seed``.
    """
    if not with_gt and not training:
        raise ValueError("with_gt=False is for training batches; evaluation needs the ground truth")
    if epochs is not None and not training:
        raise ValueError("epochs is for training; evaluation yields the split once")
    d = cfg.data
    stats = stats if stats is not None else PipelineStats()
    batch = batch_size or (cfg.train.batch_size if training else cfg.eval.batch_size)
    parallel = tf.data.AUTOTUNE if d.num_parallel_calls == -1 else d.num_parallel_calls
    # Order-preserving parallel maps keep the passes of an epoch apart: a non-deterministic map
    # lets an image of the next pass overtake a slow one of this pass, so a worker's epoch could
    # repeat one image and miss another.  Sharded (multi-worker) input keeps them apart even
    # without a seed.  (Epochs are kept apart by construction: each is its own stream.)
    deterministic = d.seed is not None or input_context is not None
    shard, replicas = None, 1
    if input_context is not None:
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch = input_context.get_per_replica_batch_size(batch)
        replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    if training:
        ds, num_images, fill, one_pass = _training_source(cfg, split, shard, stats)
    else:
        ds, num_images = source_dataset(cfg, split, training, shard=shard)
    python_free = d.augment.backend in ("tf", "none")
    decoded_cache = training and d.cache_images == "decoded" and d.source != "tfds"
    if training and python_free and not decoded_cache:   # the decoded cache decodes with OpenCV and checks itself
        _check_one_image_decodes(ds, split, num_images)
    step = (_tf_step(d, training) if python_free
            else _numpy_step(Processor(d, training, stats, num_images if training else None), d))

    def process(ds: tf.data.Dataset, seed_base) -> tf.data.Dataset:
        """(position i, canonical element) -> augmented, letterboxed image and its boxes (targets
        come later); unreadable images dropped.  The element's position seeds its randomness
        (``seed_base + i``, kept as ``aug_seed`` for the mosaic)."""
        ds = ds.map(lambda i, e: dict(step(e, seed_base + i), image_id=e["image_id"], aug_seed=seed_base + i),
                    num_parallel_calls=parallel, deterministic=deterministic)
        if python_free:
            ds = ds.ignore_errors(log_warning=True)
        else:
            ds = ds.filter(lambda e: e["ok"])
        return ds

    targets = _targets_step(cfg, with_gt)
    if training:
        ds = _training_stream(cfg, one_pass, fill, process, epochs, batch * replicas)
        ds = ds.map(targets, num_parallel_calls=parallel, deterministic=deterministic)
    else:
        ds = process(ds.enumerate(), 0).map(targets, num_parallel_calls=parallel, deterministic=deterministic)
        # B-1 padding elements then drop_remainder: every image once, no all-padding batch.
        ds = ds.concatenate(_padding(ds.element_spec).repeat(batch - 1))
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda b: dict(b, images=tf.cast(b["images"], tf.float32)))
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    ds.stats = stats
    return ds
