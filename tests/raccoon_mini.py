"""The vendored raccoon photos (``tests/data/raccoon_mini``: 6 JPEGs of different sizes in
Pascal-VOC layout, MIT licence beside them) and the ``raccoon.yaml`` overrides the tests use."""

from pathlib import Path

MINI = Path(__file__).resolve().parent / "data" / "raccoon_mini"

# raccoon.yaml at 128 px: its second test scale, 1.4, would give a 179 px side, which is not a
# multiple of the stride (the config rejects it); 1.5 gives 192.
AT_128 = ["data.image_size=128", "eval.test_scales=[1.0,1.5]"]
