"""See what the model does: evaluation plots, the per-class table, training-run plots.

Modules (matplotlib on the Agg canvas, OpenCV for images; importing this package
imports neither, nor TensorFlow):

* ``evaldata.py``: :class:`EvalData` (GT + detections + exact COCO matching) and the
  :class:`EvalCollector` sink of the model evaluation;
* ``curves.py``: PR curves (IoU 0.5 / 0.75) and F1 / precision / recall vs score;
* ``confusion.py``: confusion matrix with a background row and column;
* ``per_class.py``: per-class AP / AP50 / AR100 / GT count / depth error (CSV, text);
* ``labels_plot.py``, ``results_plot.py``: labels.png, results.png;
* ``drawing.py``: boxes, labels and grids (OpenCV);
* ``report.py``: writes all of them into a folder; ``training.py``: the training hook
  (TensorBoard images at each evaluation, files at the end of the run);
  ``tb_images.py``: image summaries without the tensorboard package.
"""
