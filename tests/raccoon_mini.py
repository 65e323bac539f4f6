"""The vendored raccoon photos (``tests/data/raccoon_mini``: 6 JPEGs of different sizes in
Pascal-VOC layout, MIT licence beside them) and the ``raccoon.yaml`` overrides the tests use."""

from pathlib import Path

MINI = Path(__file__).resolve().parent / "data" / "raccoon_mini"

# raccoon.yaml at 128 px; its second test scale is pinned to 1.5 (a 192 px side): a test side
# must be a multiple of the largest stride, and the config rejects others (1.4 would give 179).
AT_128 = ["data.image_size=128", "eval.test_scales=[1.0,1.5]"]
