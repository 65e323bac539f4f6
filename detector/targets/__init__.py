"""Training targets: anchors, the box coder, and the assignment of ground truth to anchors.

``anchors`` lays out the anchor boxes of every pyramid level, ``box_coder`` encodes
a box relative to an anchor (and back), and ``assign`` matches ground-truth boxes to
anchors (IoU thresholds, forced matches) to produce per-anchor class, box and depth
targets.  Not to be confused with :mod:`detector.evaluation.matching`, which matches
detections to ground truth for COCO mAP.
"""
