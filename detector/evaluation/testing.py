"""Test support: random COCO data rich in pycocotools edge cases, padded batches, reference.

Used by the evaluation / metric / tool tests (and usable by the data-pipeline tests).
Detection boxes and scores are float32 values (stored as Python floats), so
pycocotools fed the results list and the Keras metric fed float32 tensors see the
same numbers.
"""

from __future__ import annotations

import numpy as np


def random_coco(seed: int, num_images: int = 24, num_classes: int = 5, max_gt: int = 12,
                max_dets: int = 40, crowded_image: int = 0) -> tuple[dict, list]:
    """A GT dataset dict and a results list with pycocotools edge cases.

    Covers: crowd GT, GT ``area`` exactly 32**2 / 96**2 and unrelated to the box,
    detection areas exactly on the boundaries, more than 100 detections of one
    (image, class) (``crowded_image`` images get 110), heavy score ties, exact IoU
    ties (duplicated GT boxes), IoU exactly 0.5 / 0.75, zero-size boxes, images without
    GT or without detections, a category without GT (the last), unsorted image ids.
    """
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 100), num_classes, replace=False).tolist())
    image_ids = rng.choice(np.arange(1, 10_000), num_images, replace=False).tolist()
    images = [{"id": i, "width": 200, "height": 200} for i in image_ids]
    anns: list[dict] = []
    results: list[dict] = []
    score_levels = np.float32([0.9, 0.75, 0.5, 0.5, 0.3, 0.1])
    for n, img in enumerate(image_ids):
        n_gt = 0 if n % 7 == 3 else int(rng.integers(1, max_gt + 1))
        boxes = []
        for _ in range(n_gt):
            kind = rng.random()
            if kind < 0.15:
                box = [float(rng.integers(0, 150)), float(rng.integers(0, 150)), 32.0, 32.0]
            elif kind < 0.25:
                box = [float(rng.integers(0, 100)), float(rng.integers(0, 100)), 96.0, 96.0]
            elif kind < 0.3:
                box = [float(rng.integers(0, 150)), 10.0, 0.0, 20.0]            # degenerate
            elif kind < 0.4 and boxes:
                box = list(boxes[int(rng.integers(len(boxes)))])                # IoU tie
            else:
                box = [round(float(v), 2) for v in (*rng.uniform(0, 150, 2), *rng.uniform(1, 120, 2))]
            boxes.append(box)
            area_kind = rng.random()
            area = (1024.0 if area_kind < 0.15 else 9216.0 if area_kind < 0.3
                    else box[2] * box[3] * float(rng.uniform(0.3, 1.0)))
            anns.append({"id": len(anns) + 1, "image_id": img, "bbox": box, "area": area,
                         "category_id": cat_ids[int(rng.integers(num_classes - 1))],
                         "iscrowd": int(rng.random() < 0.12)})
        n_det = 0 if n % 11 == 5 else int(rng.integers(0, max_dets + 1))
        img_anns = [a for a in anns if a["image_id"] == img]
        for _ in range(n_det):
            if img_anns and rng.random() < 0.6:
                a = img_anns[int(rng.integers(len(img_anns)))]
                x, y, w, h = a["bbox"]
                mode = rng.random()
                if mode < 0.15:
                    box = [x, y, w, h]
                elif mode < 0.25:
                    box = [x, y, w * 0.5, h]                  # IoU exactly 0.5 (for w*h > 0)
                elif mode < 0.3:
                    box = [x, y, w * 0.75, h]                 # IoU exactly 0.75
                else:
                    j = rng.normal(0, 0.1, 4)
                    box = [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])]
                cat = a["category_id"] if rng.random() < 0.85 else cat_ids[int(rng.integers(num_classes))]
            else:
                side = float(rng.choice([0.0, 32.0, 96.0, 20.0, 50.0, 110.0]))
                box = [*rng.uniform(0, 150, 2), side, side if rng.random() < 0.5 else side * 1.5]
                cat = cat_ids[int(rng.integers(num_classes))]
            score = score_levels[int(rng.integers(len(score_levels)))] if rng.random() < 0.5 else rng.random()
            results.append({"image_id": img, "category_id": cat,
                            "bbox": np.float32(box).tolist(), "score": float(np.float32(score))})
        if n < crowded_image and img_anns:
            cat = img_anns[0]["category_id"]
            x, y, w, h = img_anns[0]["bbox"]
            for _ in range(110):
                j = rng.normal(0, 0.15, 4)
                box = [x + j[0] * w, y + j[1] * h, max(w, 1) * np.exp(j[2]), max(h, 1) * np.exp(j[3])]
                results.append({"image_id": img, "category_id": cat, "bbox": np.float32(box).tolist(),
                                "score": float(score_levels[int(rng.integers(len(score_levels)))])})
    results = [results[i] for i in rng.permutation(len(results))]   # interleave images
    rng.shuffle(images)
    cats = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}, results


def to_batches(gt: dict, results: list, batch_size: int, max_gt: int, max_dets: int,
               image_order: list | None = None) -> list[tuple[dict, dict, np.ndarray]]:
    """Pad to the metric's input contract; returns ``[(gt, detections, valid), ...]`` numpy.

    Class index = position of the category id among the sorted GT category ids.  The
    last batch is padded with invalid images (``valid`` False).
    """
    cat_index = {c: k for k, c in enumerate(sorted(c["id"] for c in gt["categories"]))}
    ids = image_order if image_order is not None else [im["id"] for im in gt["images"]]
    by_img_gt: dict = {i: [] for i in ids}
    by_img_dt: dict = {i: [] for i in ids}
    for a in gt["annotations"]:
        by_img_gt[a["image_id"]].append(a)
    for r in results:
        by_img_dt[r["image_id"]].append(r)
    batches = []
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        g = {"boxes_xywh": np.zeros((batch_size, max_gt, 4)), "classes": np.full((batch_size, max_gt), -1, np.int32),
             "is_crowd": np.zeros((batch_size, max_gt), bool), "area": np.zeros((batch_size, max_gt)),
             "image_id": np.zeros(batch_size, np.int64), "num_boxes": np.zeros(batch_size, np.int32)}
        d = {"boxes_xywh": np.zeros((batch_size, max_dets, 4), np.float32),
             "scores": np.zeros((batch_size, max_dets), np.float32),
             "classes": np.full((batch_size, max_dets), -1, np.int32)}
        valid = np.zeros(batch_size, bool)
        for b, img in enumerate(chunk):
            valid[b] = True
            g["image_id"][b] = img
            anns, dets = by_img_gt[img], by_img_dt[img]
            if len(anns) > max_gt or len(dets) > max_dets:
                raise ValueError(f"image {img}: {len(anns)} GT / {len(dets)} detections exceed the padding")
            g["num_boxes"][b] = len(anns)
            for m, a in enumerate(anns):
                g["boxes_xywh"][b, m] = a["bbox"]
                g["classes"][b, m] = cat_index[a["category_id"]]
                g["is_crowd"][b, m] = bool(a["iscrowd"])
                g["area"][b, m] = a["area"]
            for j, r in enumerate(dets):
                d["boxes_xywh"][b, j] = r["bbox"]
                d["scores"][b, j] = r["score"]
                d["classes"][b, j] = cat_index[r["category_id"]]
        batches.append((g, d, valid))
    return batches
