"""PR / F1 curve points, confusion-matrix counts and the per-class table on the hand-built
case of hand_case.py, against numbers worked out by hand."""

import numpy as np
import pytest
from hand_case import DETS, GT, eval_data

from detector.evaluation.params import REC_THRS


@pytest.fixture(scope="module")
def data():
    return eval_data()


def test_collector_flattens_valid_slots(data):
    assert data.class_names == ("a", "b") and data.image_ids.tolist() == [10, 20]
    assert data.gt.image.tolist() == [0, 0, 0, 1] and data.gt.category.tolist() == [0, 1, 0, 0]
    assert data.dets.image.tolist() == [0, 0, 0, 0, 1, 1]
    assert data.npig[:, 0].tolist() == [2, 1]             # the crowd box is not counted


def test_pr_curve_points(data):
    from detector.visualize.curves import pr_curves

    pr = pr_curves(data)
    np.testing.assert_array_equal(pr["recall"], REC_THRS)
    # class a at IoU 0.5: TP 0.9, FP 0.8, (0.7 ignored: crowd), TP 0.42 -> precision 1, 1/2, 2/3 at
    # recall 1/2, 1/2, 1; envelope: 1 up to recall 0.5 (51 points), then 2/3 (50 points)
    expected_a = np.where(REC_THRS <= 0.5, 1.0, 2.0 / 3.0)
    for i in (0, 1):                      # IoU 0.5 and 0.75 (the 0.818 match holds at 0.75)
        np.testing.assert_allclose(pr["precision"][i, 0], expected_a, rtol=1e-12)
        np.testing.assert_array_equal(pr["precision"][i, 1], np.zeros(101))    # class b: no TP
        np.testing.assert_allclose(pr["mean"][i], expected_a / 2, rtol=1e-12)
        assert pr["ap"][i, 0] == pytest.approx((51 + 50 * 2 / 3) / 101, rel=1e-12)
        assert pr["ap"][i, 1] == 0.0


def test_f1_curve_points(data):
    from detector.visualize.curves import f1_curves

    f = f1_curves(data)
    c = f["thresholds"]
    i50 = int(np.argmin(np.abs(c - 0.5)))
    # class a at 0.5: TP {0.9}, FP {0.8}; n = 2 -> P 1/2, R 1/2, F1 2*1/(1+1+2) = 1/2
    assert f["precision"][0, i50] == 0.5 and f["recall"][0, i50] == 0.5 and f["f1"][0, i50] == 0.5
    # class b at 0.5: FP {0.6}, no TP -> P 0, R 0, F1 0
    assert f["precision"][1, i50] == 0.0 and f["f1"][1, i50] == 0.0
    # pooled: c <= 0.33: TP 2, FP 3, n 3 -> 4/8; (0.33, 0.42]: TP 2, FP 2 -> 4/7 (the best);
    # (0.42, 0.6]: 2/6; (0.6, 0.8]: 2/5; (0.8, 0.9]: 2/4; above 0.9: 0
    # (scores are float32, as the metric sees them: float32(0.9) < 0.9)
    s = [float(np.float32(v)) for v in (0.33, 0.42, 0.6, 0.8, 0.9)]
    want = np.select([c <= v for v in s], [4 / 8, 4 / 7, 2 / 6, 2 / 5, 2 / 4], 0.0)
    np.testing.assert_allclose(f["f1_all"], want, rtol=1e-12)
    assert f["best_threshold"] == pytest.approx(0.34) and f["best_f1"] == pytest.approx(4 / 7)
    assert f["tp"][:, 0].tolist() == [2, 0] and f["fp"][:, 0].tolist() == [1, 2]


def test_confusion_matrix_counts(data):
    from detector.visualize.confusion import confusion_matrix, normalise_rows

    # rows truth (a, b, background), columns prediction (a, b, background = missed)
    m = confusion_matrix(data, iou_threshold=0.5, score_threshold=0.0)
    # a 0.9 -> GT a; a 0.8 -> GT b (b seen as a); a 0.7 on the crowd: not counted;
    # b 0.6 -> background; a 0.42 -> GT a; b 0.33: GT a already taken -> background
    assert m.tolist() == [[2, 0, 0], [1, 0, 0], [0, 2, 0]]
    m = confusion_matrix(data, iou_threshold=0.5, score_threshold=0.5)
    # image 20 has no detection >= 0.5: its GT a is missed
    assert m.tolist() == [[1, 0, 1], [1, 0, 0], [0, 1, 0]]
    np.testing.assert_allclose(normalise_rows(m), [[0.5, 0, 0.5], [1, 0, 0], [0, 1, 0]])
    # IoU 0.85: in image 20 a 0.42 (IoU 0.818) becomes a false positive, and b 0.33 (IoU 1)
    # now takes GT a: a seen as b
    m = confusion_matrix(data, iou_threshold=0.85, score_threshold=0.0)
    assert m.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 0]]


def test_per_class_table_by_hand(data):
    from detector.visualize.per_class import per_class_table

    a, b = per_class_table(data)
    ap50 = (51 + 50 * 2 / 3) / 101
    # IoU 0.50..0.80 (7 thresholds): as at 0.5; 0.85..0.95: the 0.42 detection is a FP -> 51/101
    assert a["AP"] == pytest.approx((7 * ap50 + 3 * 51 / 101) / 10, rel=1e-12)
    assert a["AP50"] == pytest.approx(ap50, rel=1e-12)
    assert a["AR100"] == pytest.approx((7 * 1.0 + 3 * 0.5) / 10, rel=1e-12)
    assert (a["gt"], a["detections"]) == (2, 4) and (b["gt"], b["detections"]) == (1, 2)
    # depth: only a 0.9 <-> GT a (5 m) has a known GT depth: |5.5 - 5| / 5
    assert a["depth_error"] == pytest.approx(0.1, rel=1e-6) and a["depth_pairs"] == 1
    assert b["AP"] == 0.0 and b["AR100"] == 0.0 and np.isnan(b["depth_error"])


def test_per_class_table_equals_streaming_metric(data):
    """The table's AP equals MeanAveragePrecision.per_class_ap() fed the same padded batch."""
    import tensorflow as tf

    from detector.evaluation.depth import DepthError
    from detector.metrics.coco_map import MeanAveragePrecision
    from detector.visualize.per_class import per_class_table

    metric = MeanAveragePrecision(2, max_detections_per_image=4, capacity=64)
    metric.update_state({k: tf.constant(v) for k, v in GT.items()},
                        {k: tf.constant(DETS[k]) for k in ("boxes_xywh", "scores", "classes")},
                        valid=tf.constant(GT["valid"]))
    rows = per_class_table(data)
    np.testing.assert_array_equal([r["AP"] for r in rows], metric.per_class_ap())
    np.testing.assert_array_equal([r["AP50"] for r in rows], metric.coco_result().per_class_ap(iou_index=0))
    stats = {k: float(v) for k, v in metric.result().items()}
    assert stats["AP"] == pytest.approx(np.mean([r["AP"] for r in rows]), rel=1e-12)
    # the micro average of the per-class depth errors is the run's depth_error
    d = DepthError()
    d.update(GT, DETS, GT["valid"])
    pairs = sum(r["depth_pairs"] for r in rows)
    total = sum(r["depth_error"] * r["depth_pairs"] for r in rows if r["depth_pairs"])
    assert pairs == d.count and total / pairs == pytest.approx(d.result(), rel=1e-12)


def test_per_class_csv_and_text(data, tmp_path):
    import csv

    from detector.visualize.per_class import format_per_class, per_class_table, write_per_class_csv

    rows = per_class_table(data)
    path = write_per_class_csv(rows, tmp_path / "per_class.csv")
    back = list(csv.DictReader(path.open()))
    assert [r["name"] for r in back] == ["a", "b"] and float(back[0]["AP50"]) == pytest.approx(rows[0]["AP50"])
    assert back[1]["depth_error"] == ""
    text = format_per_class(rows)
    assert "AP50" in text.splitlines()[0] and " n/a" in text.splitlines()[2]
