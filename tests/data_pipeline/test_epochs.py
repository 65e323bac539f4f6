"""make_dataset(epochs=Epochs(...)): one training pipeline yields every epoch, epoch e a
function of (data.seed, e) whatever epoch it starts at; a resumed run skips records (never
decoded) and continues exactly; the image cache is filled once per pipeline."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from detector.data import PipelineStats, make_dataset
from detector.data.augment import Processor
from detector.data.pipeline import Epochs, epoch_seed
from detector.data.sources import load_records

# smoke: 24 train images, batch 4; with repeat factors a pass is ~30 elements, so an
# epoch of 10 steps (40 elements) ends in its second, reshuffled pass
STEPS = 10
RARE = "data.repeat_factor_threshold=0.5"


def _batches(ds, n):
    out = [{"images": b["images"].numpy(), "cls": b["targets"]["cls"].numpy(), "box": b["targets"]["box"].numpy()}
           for b in ds.take(n)]
    assert len(out) == n
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _train(cfg, epochs=None, stats=None):
    return make_dataset(cfg, "train", training=True, with_gt=False, epochs=epochs, stats=stats)


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_an_epochs_batches_do_not_depend_on_the_start_epoch(smoke_cfg, backend):
    cfg = smoke_cfg(f"data.augment.backend={backend}", RARE)
    full = _batches(_train(cfg, Epochs(STEPS)), 3 * STEPS)
    late = _batches(_train(cfg, Epochs(STEPS, start=2)), STEPS)
    _assert_same(full[2 * STEPS:], late)
    # and epochs differ from each other (order, repeats, augmentation)
    assert not np.array_equal(full[0]["images"], full[STEPS]["images"])
    assert not np.array_equal(full[STEPS]["images"], full[2 * STEPS]["images"])


def test_each_epoch_is_the_stream_of_its_own_data_seed(smoke_cfg):
    """Epoch e of the single pipeline = the endless stream built for data seed
    epoch_seed(data.seed, e) alone (what one pipeline per epoch used to be)."""
    cfg = smoke_cfg(RARE)
    stream = _batches(_train(cfg, Epochs(STEPS)), 2 * STEPS)
    for e in (0, 1):
        alone = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=epoch_seed(cfg.data.seed, e)))
        _assert_same(stream[e * STEPS:(e + 1) * STEPS], _batches(_train(alone), STEPS))


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_mid_epoch_resume_continues_exactly(smoke_cfg, backend):
    cfg = smoke_cfg(f"data.augment.backend={backend}", RARE)
    full = _batches(_train(cfg, Epochs(STEPS)), 3 * STEPS)
    for k in (1, STEPS - 1):
        resumed = _batches(_train(cfg, Epochs(STEPS, start=1, skip_steps=k)), 2 * STEPS - k)
        _assert_same(full[STEPS + k:], resumed)


def test_resume_skips_records_before_decoding(smoke_cfg, monkeypatch):
    """The skipped images of a resumed epoch never reach the decode/augment step."""
    positions = []
    real = Processor.__call__

    def spy(self, encoded, name, boxes, classes, is_crowd, area, depth, seed, size=None):
        positions.append(int(seed))
        return real(self, encoded, name, boxes, classes, is_crowd, area, depth, seed, size)

    monkeypatch.setattr(Processor, "__call__", spy)
    cfg = smoke_cfg(RARE)
    k = 3
    _batches(_train(cfg, Epochs(STEPS, start=1, skip_steps=k)), 2)
    base = epoch_seed(cfg.data.seed, 1) * 1_000_003   # element seed = base + position in the epoch
    first_epoch = [p - base for p in positions if 0 <= p - base < 10 ** 6]
    assert first_epoch and min(first_epoch) == k * cfg.train.batch_size


def test_sharded_pipelines_count_steps_in_local_replica_batches(smoke_cfg):
    """With an input context a step takes one per-replica batch per local replica: epochs and
    the resume skip are counted in those units."""
    cfg = smoke_cfg(RARE)
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)

    def stream(epochs, n):
        return _batches(make_dataset(cfg, "train", training=True, with_gt=False, input_context=ctx,
                                     epochs=epochs), n)

    per_step, steps = 2, 4   # 2 local replicas, each a batch of 4 / 4 = 1 image per step
    full = stream(Epochs(steps), 3 * steps * per_step)
    assert full[0]["images"].shape[0] == 1
    _assert_same(full[2 * steps * per_step:], stream(Epochs(steps, start=2), steps * per_step))
    resumed = stream(Epochs(steps, start=1, skip_steps=1), 2 * steps * per_step - per_step)
    _assert_same(full[(steps + 1) * per_step:], resumed)


def test_epochs_stay_exact_with_an_unreadable_image(smoke_cfg):
    """A dropped image does not shift the epoch boundaries: each epoch is its own stream."""
    cfg = smoke_cfg(RARE)
    records, _ = load_records(cfg, "train")
    with open(records[5].image, "wb") as f:
        f.write(b"not an image")
    stats = PipelineStats()
    full = _batches(_train(cfg, Epochs(STEPS), stats=stats), 3 * STEPS)
    assert stats.images_skipped > 0
    _assert_same(full[2 * STEPS:], _batches(_train(cfg, Epochs(STEPS, start=2)), STEPS))


@pytest.fixture
def reads(monkeypatch):
    """Counts the image files the pipeline reads (tf.io.read_file, by path)."""
    counts = collections.Counter()
    real = tf.io.read_file

    def counting(path):
        def note(p):
            counts[p.decode()] += 1
            return p

        return real(tf.numpy_function(note, [path], tf.string, stateful=True))

    monkeypatch.setattr(tf.io, "read_file", counting)
    return counts


def test_each_image_is_read_once_per_pipeline_with_the_cache(smoke_cfg, reads):
    cfg = smoke_cfg(RARE)
    files = {r.image for r in load_records(cfg, "train")[0]}
    _batches(_train(cfg, Epochs(STEPS)), 4 * STEPS)   # 4 epochs, ~5 passes over the images
    assert set(reads) == files and set(reads.values()) == {1}


def test_without_the_cache_every_pass_reads_the_files(smoke_cfg, reads):
    cfg = smoke_cfg(RARE, "data.cache_images=false")
    _batches(_train(cfg, Epochs(STEPS)), 2 * STEPS)
    assert max(reads.values()) > 1
