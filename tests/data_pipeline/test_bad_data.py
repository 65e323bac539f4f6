"""Bad data injected into the input pipeline: each case is skipped or repaired and counted
(named in the summary, warned about once), or is a clear error where going on would give
wrong numbers.  Image decoding on both backends: truncated JPEG, PNG behind a .jpg name,
zero-byte file, 1x1 image, EXIF orientation, grayscale / RGBA / CMYK."""

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from datapipe_helpers import with_exif_orientation, write_coco

from detector.data import PipelineStats, dataset_info, make_dataset
from detector.data.augment import Processor, decode_checked
from detector.data.augment_tf import decode as tf_decode
from detector.errors import UserError

H, W = 60, 90
RED = (255, 0, 0)


def _scene(h=H, w=W, box=(10, 5, 30, 20)):
    """RGB uint8: a red rectangle (xywh ``box``) on a mid-grey ramp."""
    img = np.tile(np.linspace(40, 160, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
    x, y, bw, bh = box
    img[y:y + bh, x:x + bw] = RED
    return img


def _jpeg(rgb, quality=95) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _png(img) -> bytes:
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    return cv2.imencode(".png", img)[1].tobytes()


def _rotated_phone_photo():
    """(encoded, the view as shown): stored pixels rotated so that EXIF 6 (rotate 90 CW) shows the view."""
    view = _scene()
    stored = np.ascontiguousarray(np.rot90(view, k=1))           # 90 x 60, counter-clockwise
    return with_exif_orientation(_jpeg(stored), 6), view


def _red_share(img, box):
    x, y, w, h = box
    patch = img[y + 2:y + h - 2, x + 2:x + w - 2].astype(int)
    return float(((patch[..., 0] > 180) & (patch[..., 1] < 80) & (patch[..., 2] < 80)).mean())


# ----------------------------------------------------------------- decoding (OpenCV path)

def test_exif_orientation_is_applied_and_the_annotated_size_checked():
    enc, view = _rotated_phone_photo()
    img, note = decode_checked(enc, (H, W))          # annotated on the view, as viewers show it
    assert img.shape == (H, W, 3) and note == "" and _red_share(img, (10, 5, 30, 20)) > 0.95
    # annotated on the stored pixels (a tool that ignored EXIF): those are used, and it says so
    raw, note = decode_checked(enc, (W, H))
    assert raw.shape == (W, H, 3) and note == "exif_ignored"
    # neither: the boxes would be wrong, so the image is refused
    img, note = decode_checked(enc, (50, 50))
    assert img is None and "differs from the annotated 50x50" in note


def test_truncated_jpeg_decodes_as_far_as_it_goes():
    enc = _jpeg(_scene(), quality=90)
    full = decode_checked(enc)[0]
    img, note = decode_checked(enc[:len(enc) * 3 // 4], (H, W))
    assert note == "truncated" and img.shape == (H, W, 3)
    # the top rows (decoded from the data that is there) match the full decode
    assert np.abs(img[:10].astype(int) - full[:10]).mean() < 2
    assert decode_checked(enc[:40])[0] is None                    # cut inside the header: unreadable


@pytest.mark.parametrize("kind", ["gray", "rgba", "png_named_jpg", "one_pixel", "cmyk"])
def test_colour_formats_decode_to_rgb_on_both_backends(kind):
    view = _scene()
    if kind == "gray":
        enc, want = _png(view[..., 0]), np.repeat(view[..., :1], 3, 2)
    elif kind == "rgba":
        enc, want = _png(np.dstack([view, np.full((H, W), 7, np.uint8)])), view
    elif kind == "png_named_jpg":
        enc, want = _png(view), view                              # the name never decides the format
    elif kind == "one_pixel":
        enc, want = _png(np.full((1, 1, 3), 200, np.uint8)), np.full((1, 1, 3), 200, np.uint8)
    else:
        pil = pytest.importorskip("PIL.Image")
        import io

        buf = io.BytesIO()
        pil.fromarray(view).convert("CMYK").save(buf, "JPEG", quality=95)
        enc, want = buf.getvalue(), view
    tol = 4 if kind == "cmyk" else 0
    for img in (decode_checked(enc, want.shape[:2])[0], tf_decode(tf.constant(enc), want.shape[:2]).numpy()):
        assert img.shape == want.shape and img.dtype == np.uint8
        assert np.abs(img.astype(int) - want).mean() <= tol


def test_tf_backend_cannot_apply_exif_and_refuses_a_size_mismatch():
    enc, view = _rotated_phone_photo()
    # the stored pixels, not the view
    assert tf_decode(tf.constant(enc)).shape == (W, H, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="decoded size differs from the annotated size"):
        tf_decode(tf.constant(enc), tf.constant([H, W]))
    img = tf_decode(tf.constant(_jpeg(_scene())[:-300])).numpy()   # truncated JPEG: recovered
    assert img.shape == (H, W, 3)


# ----------------------------------------------------------------- Processor: boxes, counts, reporting

def _fields(boxes):
    n = len(boxes)
    return (np.array(boxes, np.float64).reshape(-1, 4), np.zeros(n, np.int32), np.zeros(n, bool),
            np.full(n, 100.0), np.full(n, -1, np.float32))


@pytest.mark.parametrize("training", [True, False])
def test_nan_negative_and_swapped_boxes_are_dropped_and_counted(smoke_cfg, training):
    data_cfg = smoke_cfg("data.augment.crop_prob=0").data
    stats = PipelineStats()
    # NaN, inf, negative width (swapped x corners as xywh), negative height, one good box
    boxes = [[np.nan, 1, 5, 5], [1, 1, np.inf, 5], [30, 5, -20, 10], [5, 30, 10, -20], [10, 5, 30, 20]]
    out = Processor(data_cfg, training, stats)(_png(_scene()), b"x.png", *_fields(boxes), 1, np.array([H, W]))
    assert out[0] and out[8] == 1 and np.isfinite(out[2]).all() and np.isfinite(out[3]).all()
    assert stats.boxes_invalid == 2 and stats.boxes_degenerate == 2
    assert "invalid (NaN/inf) 2" in stats.summary()


def test_5000_boxes_are_capped_in_training_and_counted(smoke_cfg):
    data_cfg = smoke_cfg("data.augment.crop_prob=0", "data.augment.scale=[1.0, 1.0]").data
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, (5000, 2))
    boxes = np.concatenate([xy, rng.uniform(4, 20, (5000, 2))], 1)
    stats = PipelineStats()
    out = Processor(data_cfg, True, stats)(_png(_scene()), b"crowd.png", *_fields(boxes), 1, np.array([H, W]))
    assert out[0] and out[8] == data_cfg.max_boxes == 16
    assert stats.boxes_truncated > 4900 and stats.images_too_many_boxes == 1
    assert stats.repaired_files == {"too_many_boxes": ["crowd.png"]}


def test_unreadable_image_is_reported_once_not_at_every_visit(smoke_cfg, caplog):
    data_cfg = smoke_cfg().data
    stats = PipelineStats()
    caplog.set_level(logging.WARNING, "detector.data")
    for epoch in range(3):
        proc = Processor(data_cfg, True, stats)            # a new one per epoch, as training does
        for enc, name in ((b"", b"empty-once.jpg"), (b"\xff\xd8 junk", b"junk-once.jpg")):
            assert not proc(enc, name, *_fields([[1, 1, 5, 5]]), epoch, np.array([H, W]))[0]
    assert stats.images_skipped == 6 and stats.skipped_files == ["empty-once.jpg", "junk-once.jpg"]
    warned = [r.getMessage() for r in caplog.records if "once.jpg" in r.getMessage()]
    assert len(warned) == 2 and "empty file (0 bytes)" in warned[0]
    assert "skipped files: first: empty-once.jpg, junk-once.jpg" in stats.summary()


def test_a_processing_failure_skips_the_image_instead_of_crashing(smoke_cfg, monkeypatch):
    data_cfg = smoke_cfg().data
    stats = PipelineStats()
    proc = Processor(data_cfg, False, stats)
    monkeypatch.setattr(proc, "_eval", lambda *a: 1 / 0)
    out = proc(_png(_scene()), b"boom.png", *_fields([[1, 1, 5, 5]]), 0, np.array([H, W]))
    assert not out[0] and stats.skipped_files == ["boom.png"]


# ----------------------------------------------------------------- whole pipeline, both backends

def _bad_coco(tmp_path, smoke_cfg, backend, *extra):
    good = _jpeg(_scene())
    enc_exif, _ = _rotated_phone_photo()
    images = [
        {"id": 1, "file_name": "good.jpg", "height": H, "width": W, "raw": good},
        {"id": 2, "file_name": "truncated.jpg", "height": H, "width": W, "raw": good[:len(good) * 3 // 4]},
        {"id": 3, "file_name": "png.jpg", "height": H, "width": W, "raw": _png(_scene())},
        {"id": 4, "file_name": "empty.jpg", "height": H, "width": W, "raw": b""},
        {"id": 5, "file_name": "one.png", "height": 1, "width": 1, "raw": _png(np.zeros((1, 1, 3), np.uint8))},
        {"id": 6, "file_name": "phone.jpg", "height": H, "width": W, "raw": enc_exif},
        {"id": 7, "file_name": "gray.png", "height": H, "width": W, "raw": _png(_scene()[..., 0])},
    ]
    anns = [{"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [10, 5, 30, 20], "area": 600}
            for i in (1, 2, 3, 4, 6, 7)]
    anns.append({"id": 99, "image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1})
    path = write_coco(tmp_path / "coco", images, anns, [{"id": 1, "name": "circle"}])
    img_dir = tmp_path / "coco" / "images"
    return smoke_cfg("data.source=coco_json", "data.classes=[circle]", f"data.train_json={path}",
                     f"data.val_json={path}", f"data.train_images={img_dir}", f"data.val_images={img_dir}",
                     "train.batch_size=2", "eval.batch_size=2", "data.image_size=96",
                     f"data.augment.backend={backend}", *extra)


@pytest.mark.parametrize("backend", ["albumentations", "tf"])
def test_bad_images_through_the_whole_val_pipeline(tmp_path, smoke_cfg, backend):
    cfg = _bad_coco(tmp_path, smoke_cfg, backend)
    stats = PipelineStats()
    batches = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in make_dataset(cfg, "val", False, stats)]
    gt = {k: np.concatenate([b["gt"][k] for b in batches]) for k in ("image_id", "valid", "original_size")}
    images = np.concatenate([b["images"] for b in batches])
    ids = gt["image_id"][gt["valid"]].tolist()
    # zero-byte: skipped.  EXIF photo: kept with EXIF applied (OpenCV); TF cannot apply EXIF and
    # drops it (its decoded size differs from the annotated one).
    want = [1, 2, 3, 5, 6, 7] if backend == "albumentations" else [1, 2, 3, 5, 7]
    assert ids == want
    s = 96 / W
    for k, image_id in enumerate(ids):
        if image_id in (1, 3, 6, 7):   # the red box is where the annotation says, after letterboxing
            box = (round(10 * s), round(5 * s), round(30 * s), round(20 * s))
            if image_id == 7:
                assert np.ptp(images[k][..., :3] - images[k][..., :1]) == 0      # grey -> equal RGB
            else:
                assert _red_share(images[k], box) > 0.8, image_id
    if backend == "albumentations":
        assert stats.skipped_files == [str(tmp_path / "coco/images/empty.jpg")]
        assert stats.images_truncated == 1 and stats.repaired_files["truncated"][0].endswith("truncated.jpg")
        assert "skipped (unreadable) 1 (1 files)" in stats.summary()


def test_training_never_crashes_mid_epoch_on_bad_images(tmp_path, smoke_cfg):
    cfg = _bad_coco(tmp_path, smoke_cfg, "albumentations")
    stats = PipelineStats()
    ds = make_dataset(cfg, "train", True, stats)
    for b in ds.take(12):      # several passes over the 7 images (6 usable)
        assert np.isfinite(b["targets"]["box"].numpy()).all()
    assert stats.images_skipped >= 2 and stats.skipped_files == [str(tmp_path / "coco/images/empty.jpg")]


def test_a_split_with_no_readable_image_is_a_user_error_not_a_hang(tmp_path, smoke_cfg):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": H, "width": W, "raw": b"not an image"}
              for i in (1, 2, 3)]
    path = write_coco(tmp_path / "coco", images, [], [{"id": 1, "name": "circle"}])
    img_dir = tmp_path / "coco" / "images"
    cfg = smoke_cfg("data.source=coco_json", "data.classes=[circle]", f"data.train_json={path}",
                    f"data.val_json={path}", f"data.train_images={img_dir}", f"data.val_images={img_dir}")
    with pytest.raises(tf.errors.OpError, match="no readable image: none of the 3 images"):
        next(iter(make_dataset(cfg, "train", True)))
    assert list(make_dataset(cfg, "val", False)) == []
    tf_cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, augment=dataclasses.replace(cfg.data.augment, backend="tf")))
    with pytest.raises(UserError, match="train split: no readable image: none of the 3 images"):
        make_dataset(tf_cfg, "train", True)


def test_crowded_val_image_beyond_max_boxes_is_left_out_of_both_metric_and_gt(tmp_path, smoke_cfg):
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [i % 50, 1, 5, 5], "area": 25}
            for i in range(5000)]
    path = write_coco(tmp_path / "coco", [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}], anns,
                      [{"id": 1, "name": "circle"}])
    img_dir = tmp_path / "coco" / "images"
    cfg = smoke_cfg("data.source=coco_json", "data.classes=[circle]", f"data.train_json={path}",
                    f"data.val_json={path}", f"data.train_images={img_dir}", f"data.val_images={img_dir}")
    info = dataset_info(cfg)
    assert info.eval_dropped["boxes_over_max"] == 5000 - 16
    written = json.loads(Path(info.gt_json).read_text())
    assert info.gt_json != str(path) and len(written["annotations"]) == 16   # what the metric sees


@pytest.mark.parametrize("change,match", [
    (lambda d: d["annotations"][0].update(bbox=[float("nan"), 1, 2, 2]),
     r"annotations\[0\] \(id 1\): 'bbox' is not finite"),
    (lambda d: d["annotations"][0].update(bbox=[5, 1, -2, 2]), r"annotations\[0\] \(id 1\): 'bbox' .* negative size"),
    (lambda d: d["images"].append(dict(d["images"][0])), r"images\[1\]: duplicate image id 1"),
])
def test_bad_annotation_files_are_errors_naming_the_entry(tmp_path, change, match):
    from detector.data.coco_json import load_coco_json

    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4}],
                      [{"id": 1, "name": "circle"}])
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=match):
        load_coco_json(path, tmp_path / "images", ["circle"])
