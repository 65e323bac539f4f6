"""pycocotools' own COCOeval, run the one way this project runs it (as a cross-check).

``detector eval --verify-pycocotools`` and the tests compare our numbers with
:func:`pycocotools_stats`; both take GT and results as in-memory objects or files.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

from detector.evaluation.params import STAT_NAMES


def pycocotools_eval(gt: dict | str | Path, results: list | str | Path) -> Any:
    """A pycocotools ``COCOeval(iouType='bbox')`` after evaluate / accumulate / summarize.

    ``gt`` is a COCO instances dict or file; ``results`` a COCO results list or file.
    An empty results list, on which ``COCO.loadRes`` crashes, means no detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not isinstance(gt, dict):
        gt = json.loads(Path(gt).read_text())
    if not isinstance(results, list):
        results = json.loads(Path(results).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        if results:
            dt = coco.loadRes(copy.deepcopy(results))
        else:
            dt = COCO()
            dt.dataset = {"images": list(gt["images"]), "annotations": [], "categories": list(gt["categories"])}
            dt.createIndex()
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def pycocotools_stats(gt: dict | str | Path, results: list | str | Path) -> dict[str, float]:
    """pycocotools' 12 stats keyed by :data:`STAT_NAMES`."""
    return dict(zip(STAT_NAMES, (float(s) for s in pycocotools_eval(gt, results).stats)))


def stat_differences(ours: dict[str, float], reference: dict[str, float],
                     tolerance: float) -> tuple[list[str], float]:
    """``(names of stats differing by more than tolerance, max |difference|)``."""
    diffs = {k: abs(ours[k] - reference[k]) for k in STAT_NAMES}
    return [k for k in STAT_NAMES if not diffs[k] <= tolerance], max(diffs.values())
