"""write_eval_plots on the hand case and on degenerate evaluations (no detections, a class
without GT): every file is written and readable; results.png from a results.csv."""

import numpy as np
from hand_case import CLASSES, DETS, GT, eval_data

from detector.visualize.evaldata import EvalCollector
from detector.visualize.report import write_eval_plots, write_results_plot

NAMES = ("pr_curve.png", "f1_curve.png", "confusion_matrix.png", "labels.png", "per_class.csv")


def _check(out):
    import cv2

    for name in NAMES:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert cv2.imread(str(out / name)) is not None, name


def test_hand_case_files(tmp_path):
    written = write_eval_plots(eval_data(), tmp_path, table_stream=None)
    assert set(written) == set(NAMES)
    _check(tmp_path)


def test_no_detections_and_class_without_gt(tmp_path):
    dets = {k: np.zeros_like(v) for k, v in DETS.items()}
    dets["classes"][:] = -1
    gt = dict(GT, classes=np.where(GT["classes"] == 1, -1, GT["classes"]).astype(np.int32))  # no b at all
    c = EvalCollector()
    c(gt, dets)
    data = c.data(CLASSES)
    write_eval_plots(data, tmp_path, table_stream=None)
    _check(tmp_path)
    lines = (tmp_path / "per_class.csv").read_text().splitlines()
    assert lines[2].startswith("1,b,-1,-1,-1,0,0,")                    # no GT: -1, as COCO


def test_results_plot(tmp_path):
    (tmp_path / "results.csv").write_text(
        "epoch,step,loss,cls_loss,box_loss,depth_loss,lr,val_AP,val_AP50,val_AR100,val_depth_error\n"
        "1,10,3.0,1.0,1.5,0.5,0.01,,,,\n2,20,2.0,0.8,0.9,0.3,0.005,0.2,0.4,0.5,0.3\n")
    path = write_results_plot(tmp_path)
    assert path == tmp_path / "results.png" and path.stat().st_size > 10000
    assert write_results_plot(tmp_path / "missing") is None
