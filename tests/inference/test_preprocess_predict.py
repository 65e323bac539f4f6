"""Letterbox pre-processing, EXIF orientation, and boxes mapped back to original pixels
(hand-computed on non-square images), with a fake model runner."""

import numpy as np
import pytest

from detector.errors import UserError
from detector.inference.predict import SpeedMeter, coco_entries, image_id_mapping, list_sources, predict_files
from detector.inference.preprocess import boxes_to_original, letterbox_image, read_image


def _write(path, rgb, orientation=None):
    from PIL import Image

    im = Image.fromarray(rgb)
    if orientation is None:
        im.save(path, quality=95)
    else:
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(path, quality=95, exif=exif)
    return path


class FakeRunner:
    """Returns fixed network-px boxes and records its inputs (the ModelRunner interface)."""

    image_size, class_names, max_batch = 128, ("a", "b"), None

    def __init__(self):
        self.inputs = []
        self.timings = {"inference": 0.001, "postprocess": 0.002}

    def __call__(self, images):
        self.inputs.append(np.array(images))
        b = len(images)
        boxes = np.zeros((b, 3, 4), np.float32)
        boxes[:, 0] = [16, 32, 48, 96]          # inside the image part
        boxes[:, 1] = [40, 100, 100, 128]       # reaches into the padding (bottom)
        return {"boxes": boxes, "classes": np.tile(np.array([[0, 1, -1]], np.int32), (b, 1)),
                "scores": np.tile(np.array([[0.9, 0.4, 0.0]], np.float32), (b, 1)),
                "depth": np.tile(np.array([[3.5, 7.0, 0.0]], np.float32), (b, 1)),
                "num_detections": np.full(b, 2, np.int32)}


def test_letterbox_and_map_back_by_hand():
    image = np.full((200, 400, 3), 200, np.uint8)             # H 200, W 400
    boxed, scale = letterbox_image(image, 128)
    assert scale == 128 / 400 and boxed.shape == (128, 128, 3)
    assert (boxed[:64] == 200).all() and (boxed[64:] == 0).all()   # 200 * 0.32 = 64 rows, then padding
    xyxy, xywh = boxes_to_original([[16, 32, 48, 96], [40, 100, 100, 128]], scale, (200, 400))
    # [16, 32, 48, 96] / 0.32 = y 50..150, x 100..300
    np.testing.assert_allclose(xyxy[0], [100, 50, 300, 150])
    np.testing.assert_allclose(xywh[0], [100, 50, 200, 100])
    # y 125..312.5 clipped to the image height 200; x 312.5..400
    np.testing.assert_allclose(xywh[1], [312.5, 125, 87.5, 75])


def test_unreadable_image_is_a_user_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="not a decodable image"):
        read_image(tmp_path / "x.png")


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((40, 100, 3), np.uint8)       # stored 40 x 100 (H x W), white block top-left
    stored[:10, :20] = 255
    path = _write(tmp_path / "rot.jpg", stored, orientation=6)   # 6: display rotated 90 degrees clockwise
    image = read_image(path)
    assert image.shape == (100, 40, 3)
    ys, xs = np.nonzero(image[..., 0] > 128)
    assert ys.max() < 22 and xs.min() > 17                       # the block is now top-right


def test_predict_files_maps_to_original_coordinates(tmp_path):
    _write(tmp_path / "wide.png", np.full((200, 400, 3), 90, np.uint8))
    # stored 400 x 200 with EXIF 6: read as 200 x 400, exactly like wide.png
    _write(tmp_path / "tall.jpg", np.full((400, 200, 3), 90, np.uint8), orientation=6)
    runner, speed = FakeRunner(), SpeedMeter()
    preds = list(predict_files(runner, list_sources(str(tmp_path)), batch=2, speed=speed))
    assert [p.path.name for p in preds] == ["tall.jpg", "wide.png"] and speed.images == 2
    assert len(runner.inputs) == 2 and runner.inputs[0].shape == (2, 128, 128, 3)    # warm-up, then one batch
    for p in preds:
        assert p.hw == (200, 400)
        np.testing.assert_allclose(p.xywh, [[100, 50, 200, 100], [312.5, 125, 87.5, 75]])
        assert (runner.inputs[1][:, 64:] == 0).all()
    entries = coco_entries(preds[1], 7, [11, 12], min_score=0.5)
    assert entries == [{"image_id": 7, "category_id": 11, "bbox": [100.0, 50.0, 200.0, 100.0],
                        "score": pytest.approx(0.9), "depth": 3.5}]
    assert "ms preprocess" in speed.line(128, 2) and speed.inference == pytest.approx(0.001)


def test_sources_and_id_mapping(tmp_path):
    import json

    _write(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_sources(str(tmp_path))] == ["a.jpg", "b.png"]
    assert [p.name for p in list_sources(str(tmp_path / "*.png"))] == ["b.png"]
    with pytest.raises(UserError, match="no such file"):
        list_sources(str(tmp_path / "missing"))
    gt = {"images": [{"id": 42, "file_name": "sub/a.jpg"}], "categories": [{"id": 5, "name": "b"},
                                                                         {"id": 3, "name": "a"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    m = image_id_mapping(tmp_path / "gt.json", ("a", "b"))
    assert m.image_ids == {"a.jpg": 42} and m.category_ids == [3, 5]
    (tmp_path / "ids.json").write_text(json.dumps({"a.jpg": 1}))
    assert image_id_mapping(tmp_path / "ids.json", ("a",)).image_ids == {"a.jpg": 1}
    assert image_id_mapping(None, ("a", "b")).category_ids == [1, 2]
    with pytest.raises(UserError, match="not categories"):
        image_id_mapping(tmp_path / "gt.json", ("a", "zebra"))
