"""Write the evaluation plots and the per-class table of one evaluation into a folder.

Files (all optional inputs permitting)::

    pr_curve.png          PR curves per class and overall, IoU 0.5 and 0.75   (curves.py)
    f1_curve.png          F1 / precision / recall vs score, best threshold      (curves.py)
    confusion_matrix.png  raw + row-normalised, background row and column      (confusion.py)
    labels.png            class histogram, box sizes, depths                    (labels_plot.py)
    per_class.csv         AP, AP50, AR100, GT count, depth error per class      (per_class.py)
    val_predictions.jpg   val images: ground truth beside predictions           (drawing.py)
    results.png           the run's results.csv curves                          (results_plot.py)

The confusion matrix and the prediction grid use the score threshold with the best
pooled F1 (stated in their titles), at IoU 0.5.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

CONFUSION_IOU = 0.5


def operating_threshold(data) -> float:
    """The score threshold with the best pooled F1 at IoU 0.5 (0.25 when nothing matched)."""
    from detector.visualize.curves import f1_curves

    f = f1_curves(data)
    return f["best_threshold"] if np.isfinite(f["best_f1"]) and f["best_f1"] > 0 else 0.25


def write_eval_plots(data, out_dir: str | Path, label_sets=None, grid_bgr: np.ndarray | None = None,
                     title: str = "", score_threshold: float | None = None, table_stream=sys.stderr,
                     max_table_rows: int = 40) -> dict[str, Path]:
    """Write the evaluation files of ``data`` (:class:`EvalData`) into ``out_dir``.

    Args:
      label_sets: :class:`LabelSet` list for labels.png (default: the evaluated GT).
      grid_bgr: a ready prediction grid (uint8 BGR) to save as val_predictions.jpg.
      score_threshold: for the confusion matrix (default :func:`operating_threshold`).
      table_stream: where the per-class table is printed (None: not printed).
    Returns ``{file name: path}``.
    """
    import cv2

    from detector.visualize.confusion import confusion_matrix, plot_confusion_matrix
    from detector.visualize.curves import plot_f1_curves, plot_pr_curves
    from detector.visualize.labels_plot import LabelSet, plot_labels
    from detector.visualize.per_class import format_per_class, per_class_table, write_per_class_csv
    from detector.visualize.style import save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{title}: " if title else ""
    thr = operating_threshold(data) if score_threshold is None else float(score_threshold)
    written = {}
    written["pr_curve.png"] = save_figure(plot_pr_curves(data, title=f"{prefix}precision-recall, "
                                                         f"{data.num_images} images"), out / "pr_curve.png")
    written["f1_curve.png"] = save_figure(plot_f1_curves(data, title=f"{prefix}F1 / precision / recall "
                                                         "against the score threshold"), out / "f1_curve.png")
    matrix = confusion_matrix(data, CONFUSION_IOU, thr)
    written["confusion_matrix.png"] = save_figure(
        plot_confusion_matrix(matrix, data.class_names, CONFUSION_IOU, thr,
                              note="best-F1 threshold" if score_threshold is None else ""),
        out / "confusion_matrix.png")
    sets = label_sets or [LabelSet.from_eval_data("evaluated GT", data)]
    written["labels.png"] = save_figure(plot_labels(sets, data.class_names, title=f"{prefix}labels"),
                                        out / "labels.png")
    rows = per_class_table(data)
    written["per_class.csv"] = write_per_class_csv(rows, out / "per_class.csv")
    if grid_bgr is not None:
        path = out / "val_predictions.jpg"
        cv2.imwrite(str(path), grid_bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        written["val_predictions.jpg"] = path
    if table_stream is not None:
        print(f"per-class results ({data.num_images} images; also in {out / 'per_class.csv'}):\n"
              + format_per_class(rows, max_table_rows), file=table_stream, flush=True)
    return written


def first_batch_grid(runner, dataset, class_names, score_threshold: float, max_images: int = 8) -> np.ndarray:
    """Prediction grid (ground truth beside predictions) of the first batch of a val dataset.

    Args:
      runner: a :class:`~detector.inference.runner.ModelRunner` (network-input boxes).
      dataset: pipeline dataset (``images`` float32 [B,S,S,3] 0..255, ``gt`` dict).
    """
    from detector.visualize.drawing import prediction_grid

    batch = next(iter(dataset.take(1)))
    images = batch["images"].numpy()
    gt = {k: v.numpy() for k, v in batch["gt"].items()}
    keep = np.flatnonzero(gt["valid"])[:max_images]
    images, gt = images[keep], {k: v[keep] for k, v in gt.items()}
    preds = runner(np.clip(np.round(images), 0, 255).astype(np.uint8))
    extent = np.asarray(gt["original_size"], np.float64) * np.asarray(gt["scale"], np.float64)[:, None]
    return prediction_grid(images, extent, gt, preds, class_names, score_threshold, max_images=max_images)


def label_sets_for(cfg, data) -> list:
    """Train and val annotations for labels.png (file-based sources: synthetic, coco_json,
    voc), else the evaluated GT (tfds)."""
    from detector.visualize.labels_plot import LabelSet

    if cfg.data.source in ("synthetic", "coco_json", "voc"):
        from detector.data.sources import load_records

        return [LabelSet.from_records("train", load_records(cfg, "train")[0]),
                LabelSet.from_records("val", load_records(cfg, "val")[0])]
    return [LabelSet.from_eval_data("val", data)]


def write_model_eval_plots(cfg, runner, data, out_dir: str | Path, val_dataset, title: str = "",
                           table_stream=sys.stderr, grid_images: int = 8) -> dict[str, Path]:
    """:func:`write_eval_plots` for a model evaluated on the config's val split: adds the
    prediction grid of the first val batch (``runner``: a model runner) and train + val labels."""
    thr = operating_threshold(data)
    grid = first_batch_grid(runner, val_dataset, cfg.data.classes, thr, max_images=grid_images)
    return write_eval_plots(data, out_dir, label_sets=label_sets_for(cfg, data), grid_bgr=grid, title=title,
                            table_stream=table_stream)


def write_results_plot(run_dir: str | Path) -> Path | None:
    """results.png from the run's results.csv (None when there is no results.csv yet)."""
    from detector.visualize.results_plot import plot_results
    from detector.visualize.style import save_figure

    csv_path = Path(run_dir) / "results.csv"
    if not csv_path.is_file():
        return None
    return save_figure(plot_results(csv_path, title=f"{Path(run_dir).name}: training"),
                       Path(run_dir) / "results.png")


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
