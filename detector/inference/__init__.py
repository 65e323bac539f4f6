"""Running a trained model on images: pre-processing, model runners, ``detector predict``.

* ``preprocess.py``: read (EXIF orientation applied), letterbox like the val pipeline,
  map network boxes back to original-image pixels;
* ``runner.py``: the model-runner interface (letterboxed uint8 batch -> detections in
  network px) and :class:`KerasRunner`;
* ``predict.py``: images in, annotated images and a COCO results file out;
* ``evaluate.py``: exact COCO evaluation (and plot data) of any runner on the val split.
"""
