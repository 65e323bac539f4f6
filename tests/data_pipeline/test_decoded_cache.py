"""``data.cache_images: decoded``: pixels decoded once (EXIF applied), shrunk, boxes following them."""


import cv2
import numpy as np
import pytest
import tensorflow as tf
from datapipe_helpers import with_exif_orientation, write_coco

from detector.config import load_config
from detector.data import PipelineStats, make_dataset
from detector.data.decoded_cache import cache_max_side, decode_for_cache, shrink
from detector.data.sources import load_records, source_dataset
from tests.raccoon_mini import AT_128, MINI

TINY = [*AT_128, "model.max_level=5", "train.batch_size=2", "data.shuffle_buffer=0",
        "train.time_limit_minutes=null"]


def _voc(tmp_path, *overrides):
    return load_config("raccoon", [f"data.voc_root={MINI}", f"data.cache_dir={tmp_path}", *TINY, *overrides])


def test_shrink_keeps_the_aspect_and_never_upscales():
    img = np.zeros((300, 400, 3), np.uint8)
    out, fy, fx = shrink(img, 200)
    assert out.shape == (150, 200, 3) and (fy, fx) == (0.5, 0.5)
    out, fy, fx = shrink(img, 500)
    assert out is img and (fy, fx) == (1.0, 1.0)
    out, fy, fx = shrink(np.zeros((101, 7, 3), np.uint8), 50)   # rounding: factors per axis
    assert out.shape == (50, 3, 3) and fy == 50 / 101 and fx == 3 / 7


def test_cache_max_side_default_covers_the_largest_zoom(tmp_path):
    cfg = _voc(tmp_path, "data.augment.scale=[0.6, 1.4]")
    assert cache_max_side(cfg.data) == 180            # ceil(128 * 1.4)
    assert cache_max_side(_voc(tmp_path, "data.augment.scale=[0.5, 0.9]").data) == 128
    assert cache_max_side(_voc(tmp_path, "data.cache_max_side=300").data) == 300


def test_raccoon_photos_are_cached_shrunk_with_their_boxes_scaled(tmp_path):
    cfg = _voc(tmp_path)
    records, _ = load_records(cfg, "train")
    ds, n = source_dataset(cfg, "train", True)
    cached = list(decode_for_cache(ds, 160, num_images=n).as_numpy_iterator())
    assert len(cached) == len(records) == 4
    for r, e in zip(records, cached):
        h, w = e["image"].shape[:2]
        assert e["image"].dtype == np.uint8 and max(h, w) == 160 < max(r.height, r.width)
        assert tuple(e["size"]) == (h, w)
        fx, fy = w / r.width, h / r.height
        assert abs(fx - fy) < 0.01                     # aspect kept (up to rounding)
        np.testing.assert_allclose(e["boxes"], r.boxes * [fx, fy, fx, fy], rtol=1e-12)
        np.testing.assert_allclose(e["area"], r.area * fx * fy, rtol=1e-12)
        # the pixels are the photo's, area-averaged
        full = cv2.cvtColor(cv2.imread(r.image), cv2.COLOR_BGR2RGB)
        ref = cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
        assert np.abs(e["image"].astype(int) - ref).mean() < 0.5


@pytest.mark.parametrize("backend", ["none", "albumentations", "tf"])
def test_training_batches_from_the_cache_match_decoding_each_step(tmp_path, backend):
    """Letterbox only (no augmentation drawn): the cached pipeline shows the same photos and
    boxes as the one decoding the JPEGs, up to resampling."""
    aug = [f"data.augment.backend={backend}", "data.augment.hflip=0", "data.augment.crop_prob=0",
           "data.augment.scale=[1.0, 1.0]", "data.augment.brightness=0", "data.augment.contrast=0",
           "data.augment.hue_saturation=0"]
    plain = _voc(tmp_path, "data.cache_images=true", *aug)
    cached = _voc(tmp_path, "data.cache_images=decoded", *aug)
    assert cache_max_side(cached.data) == 128
    a = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in make_dataset(plain, "train", True).take(3)]
    b = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in make_dataset(cached, "train", True).take(3)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["gt"]["image_id"], y["gt"]["image_id"])
        np.testing.assert_array_equal(x["gt"]["num_boxes"], y["gt"]["num_boxes"])
        np.testing.assert_allclose(x["gt"]["boxes"], y["gt"]["boxes"], atol=0.75)
        assert np.abs(x["images"] - y["images"]).mean() < 6.0
        np.testing.assert_array_equal(x["targets"]["cls"] >= 0, y["targets"]["cls"] >= 0)


def _rotated_photo(tmp_path):
    """COCO-JSON with one phone photo stored rotated (EXIF 6) and annotated on the view as shown."""
    view = np.tile(np.linspace(40, 160, 90, dtype=np.uint8)[None, :, None], (60, 1, 3))
    view[5:25, 10:40] = (255, 0, 0)                       # red box xywh (10, 5, 30, 20)
    stored = np.ascontiguousarray(np.rot90(view, k=1))     # 90 x 60
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    raw = with_exif_orientation(jpeg.tobytes(), 6)
    images = [{"id": 1, "file_name": "phone.jpg", "height": 60, "width": 90, "raw": raw}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 30, 20], "area": 600, "iscrowd": 0}]
    js = write_coco(tmp_path, images, anns, [{"id": 1, "name": "red"}])
    return js, tmp_path / "images"


def test_tf_backend_trains_on_an_exif_rotated_photo_from_the_decoded_cache(tmp_path, smoke_cfg):
    js, folder = _rotated_photo(tmp_path)
    aug = ["data.augment.hflip=0", "data.augment.crop_prob=0", "data.augment.scale=[1.0, 1.0]",
           "data.augment.brightness=0", "data.augment.contrast=0", "data.augment.hue_saturation=0"]
    base = ["data.source=coco_json", f"data.train_json={js}", f"data.val_json={js}",
            f"data.train_images={folder}", f"data.val_images={folder}", "data.classes=[red]",
            "data.augment.backend=tf", "train.batch_size=1", "data.shuffle_buffer=0", *aug]
    cfg = smoke_cfg(*base, "data.cache_images=decoded")
    stats = PipelineStats()
    batch = next(iter(make_dataset(cfg, "train", True, stats)))
    s = cfg.data.image_size / 90       # the view (60 x 90) letterboxed
    np.testing.assert_allclose(batch["gt"]["boxes"][0, 0].numpy(), np.array([5, 10, 25, 40]) * s, atol=0.2)
    img = batch["images"][0].numpy()
    y0, x0, y1, x1 = (np.array([5, 10, 25, 40]) * s).astype(int) + [2, 2, -2, -2]
    patch = img[y0:y1, x0:x1]
    assert ((patch[..., 0] > 180) & (patch[..., 1] < 80)).mean() > 0.95    # red where the box says
    # Without the decoded cache the TF backend cannot apply EXIF: the size check refuses the photo.
    with pytest.raises(Exception, match="no readable image"):
        next(iter(make_dataset(smoke_cfg(*base, "data.cache_images=true"), "train", True)))
