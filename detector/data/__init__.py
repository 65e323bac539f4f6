"""Datasets: the embedded synthetic set, COCO-JSON, Pascal-VOC and tfds sources, and the
tf.data input pipeline.

Public API::

    make_dataset(cfg, split, training, stats=None, batch_size=None, ...,
                 epochs=None) -> tf.data.Dataset   # epochs: pipeline.Epochs (training runs)
    dataset_info(cfg) -> DatasetInfo
    PipelineStats   # skip / drop counters filled by the pipeline

See :mod:`detector.data.pipeline` for the element structure.
"""

from detector.data.pipeline import make_dataset
from detector.data.records import DatasetInfo, ImageRecord, PipelineStats
from detector.data.sources import dataset_info

__all__ = ["make_dataset", "dataset_info", "DatasetInfo", "ImageRecord", "PipelineStats"]
