"""A tiny evaluation built by hand: 2 classes (a, b), 2 images; the expected numbers are
worked out in the comments (COCO rules: greedy by score, crowd matches are ignored)."""

import numpy as np

CLASSES = ("a", "b")
A, B = 0, 1

# image 10: GT a [0,0,10,10] depth 5, GT b [20,0,10,10] depth 10, crowd a [50,50,20,20]
# image 20: GT a [0,0,10,10] depth unknown
GT = {
    "image_id": np.array([10, 20], np.int64),
    "valid": np.array([True, True]),
    "classes": np.array([[A, B, A], [A, -1, -1]], np.int32),
    "boxes_xywh": np.array([[[0, 0, 10, 10], [20, 0, 10, 10], [50, 50, 20, 20]],
                            [[0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float64),
    "is_crowd": np.array([[False, False, True], [False, False, False]]),
    "area": np.array([[100.0, 100.0, 400.0], [100.0, 0.0, 0.0]]),
    "depth": np.array([[5.0, 10.0, -1.0], [-1.0, -1.0, -1.0]], np.float32),
    "num_boxes": np.array([3, 1], np.int32),
}
# detections (slot order = score order here):
#   image 10: a 0.9 on GT a (TP), a 0.8 on GT b (FP for a; confusion b->a), a 0.7 on the crowd
#             (ignored), b 0.6 far away (FP on background)
#   image 20: a 0.42 at [1,0,10,10] (IoU 90/110 = 0.818 with GT a: TP up to IoU 0.8),
#             b 0.33 on GT a (FP for b; in the confusion matrix GT a is already taken -> background)
DETS = {
    "classes": np.array([[A, A, A, B], [A, B, -1, -1]], np.int32),
    "scores": np.array([[0.9, 0.8, 0.7, 0.6], [0.42, 0.33, 0, 0]], np.float32),
    "boxes_xywh": np.array([[[0, 0, 10, 10], [20, 0, 10, 10], [52, 52, 10, 10], [100, 100, 10, 10]],
                            [[1, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
    "depth": np.array([[5.5, 9.0, 1.0, 3.0], [2.0, 7.0, 0, 0]], np.float32),
}


def eval_data():
    from detector.visualize.evaldata import EvalCollector

    c = EvalCollector()
    c(GT, DETS)
    return c.data(CLASSES)
