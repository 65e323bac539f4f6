"""Batch mosaic: boxes must cover exactly the pixels of their object after tiling, cutting and resizing."""


import numpy as np
import pytest
import tensorflow as tf
from datapipe_helpers import colour_extent

from detector.config import load_config
from detector.data import make_dataset
from detector.data.mosaic import mosaic_batch
from tests.raccoon_mini import AT_128, MINI

S, M = 64, 3
# Element k holds one solid square of colour COLOURS[k] at BOXES[k] (yxyx), element 3 none.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
BOXES = [[8, 10, 40, 50], [20, 4, 60, 36], [0, 0, 64, 32], None]


def _small(tmp_path) -> list[str]:
    """raccoon.yaml overrides: the vendored photos at 128 px."""
    return [f"data.voc_root={MINI}", f"data.cache_dir={tmp_path}", *AT_128]


def _group(seed=5):
    img = np.zeros((4, S, S, 3), np.uint8)
    boxes = np.zeros((4, M, 4), np.float32)
    classes = np.full((4, M), -1, np.int32)
    depth = np.full((4, M), -1.0, np.float32)
    num = np.zeros(4, np.int32)
    for k, (box, c) in enumerate(zip(BOXES, COLOURS)):
        if box is None:
            continue
        y0, x0, y1, x1 = box
        img[k, y0:y1, x0:x1] = c
        boxes[k, 0], classes[k, 0], depth[k, 0], num[k] = box, k, 8.0, 1
    e = {"image": img, "boxes": boxes, "boxes_xywh": np.zeros((4, M, 4)), "classes": classes,
         "is_crowd": np.zeros((4, M), bool), "area": np.full((4, M), 100.0), "depth": depth,
         "num_boxes": num, "image_id": np.arange(4, dtype=np.int64), "aug_seed": np.full(4, seed, np.int64)}
    return {k: tf.constant(v) for k, v in e.items()}


def test_mosaic_boxes_match_pixels():
    sides, checked = [], 0
    for seed in range(12):
        out = {k: v.numpy() for k, v in mosaic_batch(_group(seed), 1.0, (1.0, 2.0), 0.3, True).items()}
        for i in range(4):
            n = out["num_boxes"][i]
            assert out["image"][i].shape == (S, S, 3) and out["image"][i].dtype == np.uint8
            assert np.all(out["classes"][i, n:] == -1) and np.all(out["boxes"][i, n:] == 0)
            seen = set(out["classes"][i, :n])
            for k in range(3):
                extent, count = colour_extent(out["image"][i], COLOURS[k])
                if k not in seen:   # dropped: less than 0.3 of it shows (or none at all)
                    full = np.prod(np.subtract(BOXES[k][2:], BOXES[k][:2]))
                    assert count <= 0.3 * full + 2 * S, (seed, i, k)
                    continue
                row = list(out["classes"][i, :n]).index(k)
                box = out["boxes"][i, row]
                np.testing.assert_allclose(box, extent, atol=1.0, err_msg=f"seed {seed} output {i} colour {k}")
                # shown S / c times smaller: farther by c / S, c in [S, 2S]
                zoom = (box[2] - box[0]) / (BOXES[k][2] - BOXES[k][0]) if box[0] > 0 and box[2] < S else None
                if zoom is not None:
                    np.testing.assert_allclose(out["depth"][i, row] * zoom, 8.0, rtol=0.06)
                    sides.append(1 / zoom)
                checked += 1
    assert checked >= 60
    assert min(sides) < 1.2 and max(sides) > 1.7     # the window side spans [S, 2S]


def test_mosaic_tiles_the_four_images_around_the_centre():
    """Window 2S (the whole canvas): each quadrant is its image at half size, boxes halved and shifted."""
    out = {k: v.numpy() for k, v in mosaic_batch(_group(), 1.0, (2.0, 2.0), 0.3, False).items()}
    h = S // 2
    for i in range(4):
        for q, k in enumerate((i + j) % 4 for j in range(4)):
            if BOXES[k] is None:
                continue
            dy, dx = (q // 2) * h, (q % 2) * h
            row = list(out["classes"][i]).index(k)
            np.testing.assert_allclose(out["boxes"][i, row], np.array(BOXES[k]) / 2 + [dy, dx, dy, dx], atol=1e-5)
            assert out["depth"][i, row] == 8.0                     # rescale_depth off
        assert out["num_boxes"][i] == 3


def test_mosaic_probability_zero_changes_nothing():
    e = _group()
    out = mosaic_batch(e, 0.0, (1.0, 2.0), 0.3, True)
    for k in e:
        np.testing.assert_array_equal(out[k].numpy(), e[k].numpy())


def test_mosaic_only_touches_the_outputs_it_mixes():
    """At probability 0.5 each output is either its input, untouched, or the mosaic that
    probability 1 makes from the same seed (the pixels are computed for mixed outputs only)."""
    kinds = set()
    for seed in range(8):
        e = _group(seed)
        given = {k: v.numpy() for k, v in e.items()}
        half = {k: v.numpy() for k, v in mosaic_batch(e, 0.5, (1.0, 2.0), 0.3, True).items()}
        every = {k: v.numpy() for k, v in mosaic_batch(e, 1.0, (1.0, 2.0), 0.3, True).items()}
        for i in range(4):
            same = np.array_equal(half["image"][i], given["image"][i])
            ref = given if same else every
            for k in half:
                np.testing.assert_array_equal(half[k][i], ref[k][i], err_msg=f"seed {seed} output {i} {k}")
            kinds.add(same)
    assert kinds == {True, False}


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_training_pipeline_with_mosaic_is_reproducible(tmp_path, backend):
    cfg = load_config("raccoon", [*_small(tmp_path),
                                  "model.max_level=5", "train.batch_size=4", f"data.augment.backend={backend}",
                                  "data.augment.mosaic=1.0", "data.cache_images=decoded"])
    a = [b["gt"]["boxes"].numpy() for b in make_dataset(cfg, "train", True).take(2)]
    for batch, boxes in zip(make_dataset(cfg, "train", True).take(2), a):
        np.testing.assert_array_equal(batch["gt"]["boxes"].numpy(), boxes)
        n = batch["gt"]["num_boxes"].numpy()
        assert batch["images"].shape == (4, 128, 128, 3)
        assert n.sum() >= 4 and np.all(batch["gt"]["boxes"].numpy() <= 128)
        # the targets follow the mosaic's boxes: some anchor is positive in every image with a box
        assert np.all((batch["targets"]["cls"].numpy() >= 0).any(1) | (n == 0))


def test_resumed_stream_gets_the_same_mosaics(tmp_path):
    """The mosaic groups are a step's images and seeded by the first of them: a run resumed
    mid-epoch (records skipped, never decoded) continues with the same mosaic batches."""
    from detector.data.pipeline import Epochs

    cfg = load_config("raccoon", [*_small(tmp_path),
                                  "model.max_level=5", "train.batch_size=2", "data.augment.mosaic=0.5"])
    full = [b["images"].numpy() for b in make_dataset(cfg, "train", True, epochs=Epochs(3)).take(6)]
    resumed = [b["images"].numpy() for b in make_dataset(cfg, "train", True, epochs=Epochs(3, start=0, skip_steps=2))
               .take(4)]
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a, b)
    plain = load_config("raccoon", [*_small(tmp_path),
                                    "model.max_level=5", "train.batch_size=2", "data.augment.mosaic=0"])
    without = [b["images"].numpy() for b in make_dataset(plain, "train", True, epochs=Epochs(3)).take(6)]
    mixed = [not np.array_equal(a, b) for a, b in zip(full, without)]
    assert any(mixed[2:]), mixed     # the compared batches do hold mosaics


def test_epochs_from_mosaic_until_on_have_no_mosaic(tmp_path):
    """``Epochs.mosaic_until`` (data.augment.mosaic_off_last): epochs before it are mosaics,
    later ones are exactly the pipeline without the mosaic (same images and augmentation)."""
    from detector.data.pipeline import Epochs

    args = [*_small(tmp_path),
            "model.max_level=5", "train.batch_size=2", "data.augment.backend=tf"]
    cfg = load_config("raccoon", [*args, "data.augment.mosaic=1.0"])
    plain = load_config("raccoon", [*args, "data.augment.mosaic=0"])
    until = tf.Variable(1, dtype=tf.int64)
    switched = [b["images"].numpy() for b in make_dataset(cfg, "train", True, epochs=Epochs(2, mosaic_until=until))
                .take(6)]
    without = [b["images"].numpy() for b in make_dataset(plain, "train", True, epochs=Epochs(2)).take(6)]
    same = [np.array_equal(a, b) for a, b in zip(switched, without)]
    assert same == [False, False, True, True, True, True], same
