"""Detection training from a config: strategy, data, model, loss, optimizer, callbacks.

``train(cfg, run_dir=None, resume=False)`` builds everything from ``cfg`` and runs
the generic :class:`~detector.training.engine.Trainer`; see ``tools/train.py``.

Training batch structure (detector.data, ``with_gt=False``): ``{"images" [B,S,S,3],
"targets" {...}}`` (float32/int32 only; the evaluation ground truth stays on the host);
the model sees ``images``, :class:`~detector.losses.DetectionLoss` (the model's
``detection_loss``) sees ``targets`` and the GLOBAL positive-anchor count.

Input: one ``tf.data`` pipeline per ``fit`` yields the batches of all its epochs in
sequence (:func:`detector.data.make_dataset` with :class:`~detector.data.pipeline.Epochs`):
epoch ``e`` is ``steps_per_epoch`` batches whose images, order, repeats and
augmentation depend only on (``data.seed``, ``e``) (and ``train.seed`` for the
shuffle), whichever epoch the pipeline started at; a resumed run starts it at its epoch
and skips the trained part at the record level, before decoding.  Under distribution:
one device or MirroredStrategy: one pipeline of GLOBAL batches (``train.batch_size``),
split over the replicas.  MultiWorkerMirroredStrategy: each worker builds its own
pipeline over its shard of the file list (sharded before reading), batched per replica
(``train.batch_size / replicas``).

Besides the losses, every train step updates two anchor-level metrics of the
classification head (:class:`AnchorMetrics`), logged per epoch as
``anchor_recall`` and ``anchor_best_f1`` (results.csv columns).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from detector.callbacks import CosineAnnealing, GradientMonitor, MosaicSwitch, ProfilingCallback, ScalarLogger
from detector.config import Config, ConfigError, TrainConfig, save_config
from detector.evaluation.evaluator import EXTRA_STATS, STAT_NAMES, DetectionEvaluator
from detector.training.ema import averaged, warm_up_average
from detector.training.engine import EarlyStopping, FitResult, Trainer
from detector.training.results import find_resume_dir, new_run_dir
from detector.training.strategy import build_strategy, configure_devices, is_chief
from detector.visualize.training import RunPlots

ANCHOR_METRICS = ("anchor_recall", "anchor_best_f1")
TRAIN_METRICS = ("loss", "cls_loss", "box_loss", "depth_loss", *ANCHOR_METRICS)
VAL_METRICS = tuple(f"val_{k}" for k in STAT_NAMES + EXTRA_STATS)


class AnchorMetrics:
    """Anchor-level recall and best F1 of the classification head, over one epoch.

    Every (anchor, class) pair of a train batch is one binary decision: positive when
    the anchor's target class (``targets["cls"]`` >= 0) is that class, scored by
    ``sigmoid(cls_logits)`` of the training forward pass.  Negative anchors (-1)
    contribute all-negative rows; ignored anchors (-2) are left out (label -1).
    ``anchor_recall``: :class:`BinaryRecall` at 0.5; ``anchor_best_f1``:
    :class:`OptimalF1` over ``num_thresholds`` thresholds 0, 1/(T-1), ..., 1 (21 keeps
    the per-step cost low).  Create under ``strategy.scope()``: the counts are
    SUM-synchronised, so the values read in :meth:`results` are those of the global data.
    Each step contributes its first ``sample_images`` images per replica (a cheap sample).
    """

    def __init__(self, num_classes: int, num_thresholds: int = 21, sample_images: int = 2):
        from detector.metrics import BinaryRecall, OptimalF1

        self.num_classes = int(num_classes)
        self.sample_images = int(sample_images)
        self.recall = BinaryRecall(threshold=0.5, name="anchor_recall")
        self.best_f1 = OptimalF1(num_thresholds=num_thresholds, name="anchor_best_f1")

    def update(self, batch: dict, outputs: dict) -> None:
        """Replica-context update from a per-replica batch and the model outputs."""
        from detector.targets.assign import IGNORE

        # The first `sample_images` images of each replica batch only: the full batch cost
        # ~10% of a train step (1.2M decisions at 256 px), a sample keeps it near 1%.
        k = self.sample_images
        cls = batch["targets"]["cls"][:k]                         # int32 [k, N]
        y_true = tf.one_hot(cls, self.num_classes)                # negative ids -> all-zero rows
        # label -1 = ignored by the metrics; ~1.5x cheaper than a broadcast sample weight
        y_true = tf.where(tf.equal(cls, IGNORE)[..., None], -1.0, y_true)
        prob = tf.sigmoid(outputs["cls_logits"][:k])
        self.recall.update_state(y_true, prob)
        self.best_f1.update_state(y_true, prob)

    def reset(self) -> None:
        self.recall.reset_state()
        self.best_f1.reset_state()

    def results(self) -> dict[str, float]:
        """Epoch values; call in cross-replica context (``with strategy.scope()``)."""
        return {"anchor_recall": float(self.recall.result()),
                "anchor_best_f1": float(self.best_f1.result())}


class DetectorTrainer(Trainer):
    """:class:`Trainer` that also updates :class:`AnchorMetrics` in every train step and
    adds their epoch values to the epoch logs (reset at the start of each epoch)."""

    def __init__(self, *, anchor_metrics: AnchorMetrics, **kwargs):
        super().__init__(**kwargs)
        self.anchor_metrics = anchor_metrics
        self.step_fn.metrics_fn = anchor_metrics.update   # set before the first trace

    def _train_epoch(self, epoch: int, callbacks, iterator, skip: int = 0):
        from detector.data.augment import NO_READABLE_IMAGES
        from detector.errors import UserError

        with self.strategy.scope():   # cross-replica context: reads sum the replicas
            self.anchor_metrics.reset()
        try:
            logs, stop = super()._train_epoch(epoch, callbacks, iterator, skip)
        except tf.errors.OpError as e:   # raised in the input pipeline's numpy function
            if NO_READABLE_IMAGES not in str(e):
                raise
            text = str(e)[str(e).index(NO_READABLE_IMAGES):].splitlines()[0]
            raise UserError(f"training split: {text}") from None
        stats = getattr(self, "pipeline_stats", None)
        if stats is not None and stats.notable and self.chief:
            print(f"train input after epoch {epoch + 1}: {stats.summary()}", file=sys.stderr, flush=True)
        with self.strategy.scope():
            logs.update(self.anchor_metrics.results())
        return logs, stop


@dataclass
class TrainOutcome:
    run_dir: Path | None
    result: FitResult
    steps_per_epoch: int


def check_metric_names(cfg: Config) -> None:
    """Fail before training if train.best_metric / early_stopping.metric can never be logged."""
    valid = TRAIN_METRICS + VAL_METRICS
    for key, name in (("train.best_metric", cfg.train.best_metric),
                      ("train.early_stopping.metric", cfg.train.early_stopping.metric)):
        if name not in valid:
            raise ConfigError(f"{key}: unknown metric '{name}' (valid: {', '.join(valid)})")


def build_optimizer(t: TrainConfig) -> keras.optimizers.Optimizer:
    """AdamW or SGD+momentum with a float (assignable) learning rate; call under strategy.scope().

    Weight decay skips biases and normalisation scales/offsets (decaying them only
    fights the normalisation).
    """
    # the weights' moving average, with a momentum warm-up (detector/training/ema.py)
    average = {"use_ema": True, "ema_momentum": t.ema_momentum} if t.ema_momentum else {}
    if t.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=t.learning_rate, weight_decay=t.weight_decay, **average)
    else:
        opt = keras.optimizers.SGD(learning_rate=t.learning_rate, momentum=t.momentum,
                                   weight_decay=t.weight_decay or None, **average)
    if t.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return warm_up_average(opt)


def train_dataset_fn(cfg: Config, stats=None,
                     mosaic_until: tf.Variable | None = None) -> Callable[[int, int, int], tf.data.Dataset]:
    """``(start_epoch, skip, steps_per_epoch) -> dataset`` of global training batches
    ``{"images", "targets"}`` of every epoch from ``start_epoch`` on (the engine's
    contract); ``stats`` (a PipelineStats) collects the skip/repair counts;
    ``mosaic_until``: the first epoch without the mosaic (see :func:`mosaic_switch`)."""
    from detector.data import make_dataset
    from detector.data.pipeline import Epochs

    def fn(start_epoch: int, skip: int, steps: int) -> tf.data.Dataset:
        return make_dataset(cfg, "train", training=True, stats=stats, with_gt=False,
                            epochs=Epochs(steps, start_epoch, skip, mosaic_until))

    return fn


def sharded_train_dataset_fn(cfg: Config, mosaic_until: tf.Variable | None = None
                             ) -> Callable[[int, int, int, tf.distribute.InputContext], tf.data.Dataset]:
    """``(start_epoch, skip, steps_per_epoch, input_context) -> dataset`` of this worker's
    shard, per-replica batches, the same epochs."""
    from detector.data import make_dataset
    from detector.data.pipeline import Epochs

    def fn(start_epoch: int, skip: int, steps: int, ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(cfg, "train", training=True, with_gt=False, input_context=ctx,
                            epochs=Epochs(steps, start_epoch, skip, mosaic_until))

    return fn


def check_multi_worker(cfg: Config) -> None:
    """Refuse what would make the workers' shards overlap or miss images.

    File sources shard the file list before anything random happens (each worker then
    draws the repeat factors of its own images), so any ``data.seed`` works; tfds shards
    the record stream after its file shuffle, which needs the same seed on every worker."""
    d = cfg.data
    if d.seed is None and d.source == "tfds":
        raise ConfigError("data.seed: null with distribute.strategy=multi_worker: tfds shuffles its files "
                          "with a different random order on every worker, so the workers' shards would "
                          "overlap and miss images; set data.seed to an integer")


def steps_per_epoch(cfg: Config, num_train: int | None) -> int:
    if cfg.train.steps_per_epoch is not None:
        return cfg.train.steps_per_epoch
    if not num_train:
        raise ConfigError("train.steps_per_epoch: the training split size is unknown; set it explicitly")
    return max(1, num_train // cfg.train.batch_size)


def mosaic_switch(cfg: Config) -> tf.Variable | None:
    """The pipeline's "first epoch without the mosaic" variable when
    ``data.augment.mosaic_off_last`` is set (and the mosaic is on), else None.  Create it
    outside ``strategy.scope()``: it belongs to the input pipeline, on the host."""
    a = cfg.data.augment
    if a.mosaic_on and a.mosaic_off_last > 0:
        return tf.Variable(cfg.train.epochs, dtype=tf.int64, trainable=False, name="mosaic_until")
    return None


def build_callbacks(cfg: Config, run_dir: Path | None, steps: int, multi_worker: bool = False,
                    mosaic_until: tf.Variable | None = None,
                    progress: bool = True) -> list[keras.callbacks.Callback]:
    t, c = cfg.train, cfg.callbacks
    restart = t.restart_period_epochs * steps if t.restart_period_epochs else None
    # A per-process time decision would let workers' schedules diverge: single worker only.
    budget = (t.time_limit_minutes * 60 if t.time_limit_minutes and t.fit_schedule_to_time_limit
              and restart is None and not multi_worker else None)
    schedule = CosineAnnealing(t.learning_rate, total_steps=t.epochs * steps, warmup_steps=t.warmup_steps,
                               min_lr=t.min_learning_rate, restart_period=restart, time_budget_s=budget)
    callbacks: list[keras.callbacks.Callback] = [schedule]
    if mosaic_until is not None:   # after the schedule: it sees the epoch-end re-plan
        callbacks.append(MosaicSwitch(mosaic_until, cfg.data.augment.mosaic_off_last, steps, schedule, progress))
    if run_dir is None:
        return callbacks
    tb = str(run_dir / "tb")
    if c.tensorboard:
        callbacks.append(ScalarLogger(tb, every_n_steps=c.tensorboard_every_n_steps))
    if c.profiling.enabled:
        callbacks.append(ProfilingCallback(tb, c.profiling.start_step, c.profiling.stop_step))
    if c.gradient_monitor.enabled:
        callbacks.append(GradientMonitor(tb, c.gradient_monitor.every_n_steps, c.gradient_monitor.histograms))
    return callbacks


def _check_batch_sizes(cfg: Config, replicas: int) -> None:
    for key, value in (("train.batch_size", cfg.train.batch_size), ("eval.batch_size", cfg.eval.batch_size)):
        if value % replicas:
            raise ConfigError(f"{key}: {value} is not a multiple of the {replicas} replicas of "
                              f"distribute.strategy={cfg.distribute.strategy}")


def _run_dir(cfg: Config, run_dir, resume: bool, chief: bool) -> Path | None:
    """The chief creates the run dir; other workers only need it to resume (shared file system)."""
    if resume:
        path = find_resume_dir(cfg, run_dir)
        if chief:
            save_config(cfg, path / "config.yaml")  # e.g. more epochs: the dir shows what ran last
        return path
    return new_run_dir(cfg, run_dir) if chief else None


def train(cfg: Config, run_dir: str | Path | None = None, resume: bool = False,
          strategy: tf.distribute.Strategy | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = (), progress: bool = True) -> TrainOutcome:
    """Train the detector described by ``cfg``; returns the run dir and the fit result."""
    from detector.data import dataset_info, make_dataset
    from detector.data.pipeline import check_split_readable
    from detector.model import build_detector

    check_metric_names(cfg)
    if strategy is None:
        configure_devices(cfg.distribute)
        strategy = build_strategy(cfg.distribute)
    _check_batch_sizes(cfg, strategy.num_replicas_in_sync)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker:
        check_multi_worker(cfg)
    chief = is_chief(strategy)
    # Data and pretrained weights are checked BEFORE the run directory exists: a machine
    # without the dataset or the weights gets a UserError and no empty run directory.
    keras.utils.set_random_seed(cfg.train.seed)
    info = dataset_info(cfg)
    for split in ("train", "val"):   # before building anything: seconds, not an epoch, to find out
        check_split_readable(cfg, split)
    steps = steps_per_epoch(cfg, info.num_train)
    if chief:
        report_anchor_fit(cfg)
    with strategy.scope():
        model = build_detector(cfg)
        optimizer = build_optimizer(cfg.train)
        anchor_metrics = AnchorMetrics(cfg.num_classes)
    path = _run_dir(cfg, run_dir, resume, chief)
    if chief and progress:
        print(f"run directory: {path}", file=sys.stderr, flush=True)
    evaluator = DetectionEvaluator(cfg, strategy, make_dataset(cfg, "val", training=False),
                                   info.num_val, progress=progress and chief,
                                   jit_compile=cfg.train.jit_compile)
    plots = RunPlots(cfg, evaluator, path, chief=chief, progress=progress)   # plots at each evaluation
    es = cfg.train.early_stopping
    from detector.data import PipelineStats

    pipeline_stats = PipelineStats()
    mosaic_until = mosaic_switch(cfg)
    trainer = DetectorTrainer(
        anchor_metrics=anchor_metrics, strategy=strategy, model=model, optimizer=optimizer,
        loss_fn=lambda batch, outputs, count: model.detection_loss(batch["targets"], outputs, count),
        forward_fn=lambda m, batch, training: m(batch["images"], training=training),
        count_fn=lambda batch: _count_positives(batch["targets"]),
        train_dataset_fn=train_dataset_fn(cfg, pipeline_stats, mosaic_until),
        sharded_dataset_fn=sharded_train_dataset_fn(cfg, mosaic_until),
        steps_per_epoch=steps, epochs=cfg.train.epochs,
        global_batch_size=cfg.train.batch_size, eval_fn=plots, eval_every=cfg.eval.every_epochs,
        callbacks=[*build_callbacks(cfg, path, steps, multi_worker=multi_worker, mosaic_until=mosaic_until,
                                    progress=progress and chief), *callbacks],
        clip_norm=cfg.train.clip_norm, jit_compile=cfg.train.jit_compile,
        checkpoint_every_n_steps=cfg.train.checkpoint_every_n_steps,
        steps_per_execution=cfg.train.steps_per_execution,
        run_dir=path, best_metric=cfg.train.best_metric, best_mode=cfg.train.best_mode,
        early_stopping=(EarlyStopping(es.metric, es.mode, es.patience, es.min_delta)
                        if es.enabled else None),
        time_limit_s=cfg.train.time_limit_minutes * 60 if cfg.train.time_limit_minutes else None,
        progress=progress, chief=chief)
    trainer.pipeline_stats = pipeline_stats
    result = trainer.fit(resume=resume)
    with averaged(optimizer):   # the final plots show the weights that were evaluated
        plots.finish()
    return TrainOutcome(path, result, steps)


def report_anchor_fit(cfg: Config) -> None:
    """Log the anchors' best possible recall on the train boxes; warn (with the fix) when low.

    File-based sources only (a tfds split would have to be read in full first; use
    ``detector inspect --config ... --fit-anchors`` on a sample of it).
    """
    from detector.data.sources import load_records
    from detector.targets.anchor_fit import advice, anchor_recall, network_boxes

    if cfg.data.source == "tfds":
        return
    records, _ = load_records(cfg, "train")
    report = anchor_recall(network_boxes(records, cfg.data.image_size), cfg)
    for line in report.lines():
        print(line, file=sys.stderr, flush=True)
    warning = advice(report, cfg)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def _count_positives(targets) -> tf.Tensor:
    from detector.losses import count_positives

    return count_positives(targets)
