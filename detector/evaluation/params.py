"""COCO bbox evaluation parameters, bit-exact with pycocotools' defaults.

``IOU_THRS`` and ``REC_THRS`` are numpy's float64 ``linspace`` values, hard-coded
(docs/coco_eval.md §1): ``IOU_THRS[8]`` is 0.8999999999999999 and ten recall
thresholds sit one ulp above ``k/100`` (e.g. ``REC_THRS[35] = 0.35000000000000003``).
Area ranges are inclusive at both ends and are applied to the GT ``area`` field.
"""

from __future__ import annotations

import numpy as np

IOU_THRS = np.array([float.fromhex(h) for h in (
    "0x1.0p-1", "0x1.199999999999ap-1", "0x1.3333333333333p-1", "0x1.4cccccccccccdp-1",
    "0x1.6666666666666p-1", "0x1.8p-1", "0x1.999999999999ap-1", "0x1.b333333333333p-1",
    "0x1.cccccccccccccp-1", "0x1.e666666666666p-1")])

_ULP_ABOVE = (35, 41, 47, 57, 69, 70, 82, 83, 94, 95)
REC_THRS = np.array([np.nextafter(k / 100, 2.0) if k in _ULP_ABOVE else k / 100 for k in range(101)])

# the matching loop starts from iou = min(t, 1 - 1e-10) (cocoeval.py:276)
IOU_THRS_EFF = np.minimum(IOU_THRS, 1 - 1e-10)

AREA_RNG = np.array([[0.0, 1e10], [0.0, 32.0 ** 2], [32.0 ** 2, 96.0 ** 2], [96.0 ** 2, 1e10]])
AREA_LABELS = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)

NUM_IOU = len(IOU_THRS)        # T = 10
NUM_AREA = len(AREA_RNG)       # A = 4
NUM_REC = len(REC_THRS)        # R = 101

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
