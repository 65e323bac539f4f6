"""Plots of a training run: TensorBoard images at every evaluation, files at the end.

:class:`RunPlots` wraps the trainer's evaluation function (``eval_fn``): it runs the
:class:`~detector.evaluation.evaluator.DetectionEvaluator` with an
:class:`~detector.visualize.evaldata.EvalCollector` sink, keeps the last evaluation's
GT and detections, and, when ``callbacks.tensorboard`` is on, writes two image
summaries into ``<run_dir>/tb`` at the evaluation's global step:
``eval/val_predictions`` (first val batch, ground truth beside predictions) and
``eval/pr_curve``.  :meth:`RunPlots.finish` (after ``fit``) writes ``results.png`` and,
from the last (= final) evaluation, the files of :mod:`detector.visualize.report`, and
prints the per-class table.  Only the chief writes; other workers just evaluate.

A failure while plotting prints one warning line and never fails the run (the model
and checkpoints are already saved by then).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

GRID_IMAGES = 8


class RunPlots:
    """``eval_fn`` for the trainer (``plots(model) -> stats``) plus :meth:`finish`.

    Args:
      cfg: the run config (``data.classes``, ``eval``, ``callbacks.tensorboard``).
      evaluator: ``evaluator(model, sink=None) -> {name: float}`` over the val split,
        with a ``dataset`` attribute (the val pipeline dataset).
      run_dir: the run directory (None: plots are off, the evaluator runs plain).
      chief: whether this process writes files.
    """

    def __init__(self, cfg, evaluator, run_dir: str | Path | None, chief: bool = True, progress: bool = True):
        self.cfg, self.evaluator = cfg, evaluator
        self.run_dir = Path(run_dir) if run_dir is not None and chief else None
        self.tb_dir = self.run_dir / "tb" if self.run_dir is not None and cfg.callbacks.tensorboard else None
        self.progress = progress
        self.collector = None
        self.model = None
        self._runner = None
        self._writer = None
        self.seconds = {"tensorboard": 0.0, "files": 0.0}

    def __call__(self, model) -> dict:
        if self.run_dir is None:
            return self.evaluator(model)
        from detector.visualize.evaldata import EvalCollector

        collector = EvalCollector()
        stats = self.evaluator(model, sink=collector)
        self.collector, self.model = collector, model
        if self.tb_dir is not None:
            t0 = time.perf_counter()
            try:
                self._tensorboard(model, collector)
            except Exception as e:  # noqa: BLE001 - a plot must never stop training
                self._warn("TensorBoard images", e)
            self.seconds["tensorboard"] += time.perf_counter() - t0
        return stats

    # ------------------------------------------------------------------ helpers

    def _warn(self, what: str, e: Exception) -> None:
        print(f"warning: {what} not written: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def runner(self, model):
        from detector.inference.runner import KerasRunner

        if self._runner is None or self._runner.model is not model:
            self._runner = KerasRunner(model, self.cfg.eval)
        else:
            self._runner.tta.sync()   # twins of eval.test_scales: the weights of this evaluation
        return self._runner

    def _tensorboard(self, model, collector) -> None:
        import keras
        import tensorflow as tf

        from detector.visualize.curves import plot_pr_curves
        from detector.visualize.report import first_batch_grid, operating_threshold
        from detector.visualize.style import figure_png
        from detector.visualize.tb_images import write_png_images

        data = collector.data(self.cfg.data.classes)
        thr = operating_threshold(data)
        grid = first_batch_grid(self.runner(model), self.evaluator.dataset, self.cfg.data.classes, thr,
                                max_images=GRID_IMAGES)
        pr = figure_png(plot_pr_curves(data), dpi=70)
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) if model.optimizer is not None else 0
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.tb_dir))
        with self._writer.as_default():
            write_png_images("eval/val_predictions", [_encode_png(grid)], step)
            write_png_images("eval/pr_curve", [pr], step)
        self._writer.flush()

    def finish(self) -> dict:
        """Write results.png and the final evaluation's files; returns ``{name: path}``."""
        if self.run_dir is None:
            return {}
        from detector.visualize.report import write_model_eval_plots, write_results_plot

        t0 = time.perf_counter()
        written = {}
        try:
            path = write_results_plot(self.run_dir)
            if path is not None:
                written["results.png"] = path
            if self.collector is not None and len(self.collector):
                data = self.collector.data(self.cfg.data.classes)
                written.update(write_model_eval_plots(self.cfg, self.runner(self.model), data, self.run_dir,
                                                      self.evaluator.dataset, title=self.run_dir.name,
                                                      grid_images=GRID_IMAGES))
        except Exception as e:  # noqa: BLE001 - the run's model and checkpoints are already saved
            self._warn("plots", e)
        self.seconds["files"] = time.perf_counter() - t0
        if self.progress:
            print(f"plots: {', '.join(written)} in {self.seconds['files']:.1f} s (TensorBoard images during "
                  f"training: {self.seconds['tensorboard']:.1f} s)", file=sys.stderr, flush=True)
        return written


def _encode_png(bgr) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("cannot encode the prediction grid as PNG")
    return buf.tobytes()
