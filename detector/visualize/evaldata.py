"""Everything the evaluation plots need, as flat numpy arrays (numpy only, no TensorFlow).

:class:`EvalData` holds one evaluation: the ground truth and the detections of every
image, and the exact COCO matching of them (:func:`detector.evaluation.matching.match`,
the numpy twin of the streaming metric, so its numbers are pycocotools' numbers).  It
is built from

* a model evaluation: :class:`EvalCollector` is a ``sink`` for
  :class:`~detector.evaluation.evaluator.DetectionEvaluator` (training's final
  evaluation, ``tools/eval.py`` model mode);
* two COCO files: :func:`eval_data_from_files` (``tools/eval.py --gt --detections``).

Conventions: boxes are COCO ``[x, y, w, h]`` in ORIGINAL image pixels; class indices are
``0..K-1`` in the order of ``class_names`` (no background slot); ``image`` is the
position of the image id in the sorted image ids (pycocotools' ``imgIds`` order);
depth in metres, ``nan`` (detections) or ``<= 0`` (GT) when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.evaluation.accumulate import CocoEvalResult, MatchRecords, accumulate
from detector.evaluation.matching import DetectionArrays, GroundTruthArrays, match


@dataclass(frozen=True)
class EvalData:
    """One evaluation over ``num_images`` images and ``K = len(class_names)`` classes.

    Attributes:
      class_names: K names, index = class id.
      image_ids: int64 [I] sorted image ids.
      gt: :class:`GroundTruthArrays` (G boxes, file order) plus ``gt_depth`` float64 [G].
      dets: :class:`DetectionArrays` (N detections, submission order) plus
        ``det_depth`` float64 [N].
      records: COCO matching outcome of the detections kept by COCO (rank < 100 per
        image and class); ``npig`` int64 [K, A] non-ignored GT per class and area range.
      result: :class:`CocoEvalResult` (precision [T, R, K, A], recall [T, K, A, M]).
    """

    class_names: tuple[str, ...]
    image_ids: np.ndarray
    gt: GroundTruthArrays
    gt_depth: np.ndarray
    dets: DetectionArrays
    det_depth: np.ndarray
    records: MatchRecords
    npig: np.ndarray
    result: CocoEvalResult

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @staticmethod
    def build(class_names, image_ids, gt: GroundTruthArrays, gt_depth, dets: DetectionArrays,
              det_depth) -> EvalData:
        """Run the COCO matching on the arrays and wrap everything up."""
        records, npig = match(gt, dets, len(class_names), len(image_ids))
        return EvalData(tuple(class_names), np.asarray(image_ids, np.int64), gt,
                        np.asarray(gt_depth, np.float64), dets, np.asarray(det_depth, np.float64),
                        records, npig, accumulate(records, npig))

    def image_slices(self):
        """Yield ``(image index, gt indices, detection indices)`` for every image (index arrays
        keep file / submission order)."""
        g_order = np.argsort(self.gt.image, kind="stable")
        d_order = np.argsort(self.dets.image, kind="stable")
        g_bounds = np.searchsorted(self.gt.image[g_order], np.arange(self.num_images + 1))
        d_bounds = np.searchsorted(self.dets.image[d_order], np.arange(self.num_images + 1))
        for i in range(self.num_images):
            yield (i, g_order[g_bounds[i]:g_bounds[i + 1]], d_order[d_bounds[i]:d_bounds[i + 1]])


class EvalCollector:
    """``sink(gt, detections)`` for ``DetectionEvaluator.__call__``: keeps every valid image's
    GT and detections on the host; :meth:`data` turns them into :class:`EvalData`.

    Per batch (numpy): ``gt`` is the pipeline's gt dict (``boxes_xywh`` [B,M,4] original
    px, ``classes`` [B,M] (-1 pad), ``is_crowd``, ``area``, ``depth`` [B,M] metres (-1
    unknown), ``image_id`` [B], ``valid`` [B]); ``detections`` has ``boxes_xywh``
    [B,D,4] original px, ``scores``, ``classes`` [B,D] (-1 pad), ``depth`` [B,D] metres.
    """

    def __init__(self):
        self._gt: list[tuple] = []
        self._dt: list[tuple] = []
        self._ids: list[int] = []

    def __call__(self, gt: dict, detections: dict) -> None:
        for b in np.flatnonzero(np.asarray(gt["valid"], bool)):
            image_id = int(gt["image_id"][b])
            self._ids.append(image_id)
            g = np.flatnonzero(np.asarray(gt["classes"][b]) >= 0)
            self._gt.append((image_id, np.asarray(gt["classes"][b])[g], np.asarray(gt["boxes_xywh"][b])[g],
                             np.asarray(gt["is_crowd"][b])[g], np.asarray(gt["area"][b])[g],
                             np.asarray(gt["depth"][b])[g]))
            d = np.flatnonzero(np.asarray(detections["classes"][b]) >= 0)   # slot order = submission order
            self._dt.append((image_id, np.asarray(detections["classes"][b])[d],
                             np.asarray(detections["boxes_xywh"][b])[d], np.asarray(detections["scores"][b])[d],
                             np.asarray(detections["depth"][b])[d]))

    sink = __call__

    def __len__(self) -> int:
        return len(self._ids)

    def data(self, class_names) -> EvalData:
        image_ids = np.unique(np.asarray(self._ids, np.int64))
        index = {int(v): i for i, v in enumerate(image_ids)}

        def cat(parts, col, dtype, width=0):
            arrays = [np.asarray(p[col], dtype).reshape((-1, width) if width else -1) for p in parts]
            return np.concatenate(arrays) if arrays else np.zeros((0, width) if width else 0, dtype)

        def images(parts):
            return np.concatenate([np.full(len(p[1]), index[p[0]], np.int64) for p in parts]) \
                if parts else np.zeros(0, np.int64)

        gt = GroundTruthArrays(image=images(self._gt), category=cat(self._gt, 1, np.int64),
                               bbox_xywh=cat(self._gt, 2, np.float64, 4), iscrowd=cat(self._gt, 3, bool),
                               area=cat(self._gt, 4, np.float64))
        # detections: float32 boxes and scores exactly as the metric saw them
        dets = DetectionArrays(image=images(self._dt), category=cat(self._dt, 1, np.int64),
                               bbox_xywh=cat(self._dt, 2, np.float32, 4).astype(np.float64),
                               score=cat(self._dt, 3, np.float32).astype(np.float64))
        return EvalData.build(class_names, image_ids, gt, cat(self._gt, 5, np.float64), dets,
                              cat(self._dt, 4, np.float64))


def eval_data_from_files(gt_path: str | Path, dt_path: str | Path,
                         ignore_unknown_categories: bool = False) -> EvalData:
    """:class:`EvalData` of a COCO GT file and a results list (the inputs of ``tools/eval.py``
    file mode).  Class k = k-th category in sorted category-id order (pycocotools' order);
    optional ``"depth"`` fields (metres) of annotations and results are read too."""
    from detector.evaluation.coco_io import load_detections, load_ground_truth

    gt = load_ground_truth(gt_path)
    dt = load_detections(dt_path, gt, ignore_unknown_categories, with_depth=True)
    return EvalData.build(gt.category_names, gt.image_ids, gt.arrays, gt.depth, dt, dt.depth)
