"""Badges in a whole photo (any resolution), for `detect-logos`.

The detector is trained on vehicle-sized crops (metadata imgsz, 416 px). On a whole photo the
badge scale is unknown, so "auto" mode does what the pipeline does: find the vehicles with the
COCO detector (../shared/models/yolo11n_int8_openvino_model), run the badge detector on
each vehicle crop (5 % margin), and adds whole-image passes (at the crop size, and at
metadata's full_frame_imgsz 640 when the image is at least the crop size) for close-ups, inputs that are
already vehicle crops, and missed vehicles, and, on large photos, overlapping
tiles of the crop size (badges at native scale) for small badges on vehicles the COCO detector
misses or shrinks. Boxes from all passes are merged with NMS, in the input image's pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.paths import shared_dir
from stream_pipeline.core.types import Detections

VEHICLE_CLASSES = [2, 3, 5, 7]
# Tiles only on photos this many times the input size: on smaller ones the whole-image passes
# already run near native scale, and up-scaled tiles cost precision (val photos, 480 px,
# 240-px tiles at 416: IoU-0.5 mAP 0.63 -> 0.41).
TILE_MIN_PHOTO = 2.0
TILE_OVERLAP = 0.25  # a badge cut by one tile's edge is whole in the next


class VehicleFinder:
    """COCO vehicles (car, motorcycle, bus, truck) with the shared int8 OpenVINO YOLO11n.

    Runs OpenVINO directly (no ultralytics import, nothing printed on stdout).
    """

    def __init__(self, model_path: Path | None = None, conf: float = 0.25, imgsz: int = 640, min_side: int = 24):
        from stream_pipeline.brands.logo_detector import _OpenVinoBackend

        path = Path(model_path) if model_path else shared_dir() / "models" / "yolo11n_int8_openvino_model"
        xml = path if path.suffix == ".xml" else next(iter(sorted(path.glob("*.xml"))), None) if path.is_dir() else None
        if xml is None:
            raise ModelError(f"vehicle detector not found: {path}")
        self.backend = _OpenVinoBackend(xml, class_ids=VEHICLE_CLASSES)
        self.conf, self.imgsz, self.min_side = conf, imgsz, min_side

    def __call__(self, image: np.ndarray) -> np.ndarray:
        boxes, _ = self.backend.predict(image, self.imgsz, self.conf, 0.7)
        keep = (boxes[:, 2] - boxes[:, 0] >= self.min_side) & (boxes[:, 3] - boxes[:, 1] >= self.min_side)
        return boxes[keep]


def tile_windows(width: int, height: int, imgsz: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles of the detector's input size (badges at their native scale),
    stepping by (1 - overlap) of the side; none for photos under TILE_MIN_PHOTO x imgsz, whose
    whole-image passes already see badges at about native scale."""
    side = int(imgsz)
    if max(width, height) < TILE_MIN_PHOTO * side:
        return []
    step = max(1, int(side * (1 - overlap)))

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        return list(range(0, length - side, step)) + [length - side]

    return [(x, y, min(width, x + side), min(height, y + side)) for y in starts(height) for x in starts(width)]


def detect_in_photo(
    detector,
    image: np.ndarray,
    vehicles: VehicleFinder | None,
    conf: float | None = None,
    whole_imgsz: int | None = None,
    margin: float = 0.05,
    tiles: bool = True,
) -> Detections:
    """Badges in one BGR photo: vehicle-crop passes + whole-image passes (+ tiles), merged."""
    from stream_pipeline.brands.logo_detector import _nms

    conf = detector.conf if conf is None else conf
    h, w = image.shape[:2]
    sizes = [detector.imgsz]  # the image may itself be a vehicle crop: the trained scale
    full = int(whole_imgsz or detector.metadata.get("full_frame_imgsz", 640))
    if max(h, w) >= detector.imgsz and full != detector.imgsz:
        # a photo: also look for small badges at the full-frame size, even if that up-scales it a
        # little (480-px val photos: recall at P >= 0.85, IoU 0.3, 0.63 -> 0.70 with this pass)
        sizes.append(full)
    boxes, scores = [], []
    for size in sizes:
        [whole] = detector.detect([image], conf=conf, imgsz=size)
        boxes.append(whole.xyxy)
        scores.append(whole.confidence)
    if vehicles is not None:
        for vx1, vy1, vx2, vy2 in vehicles(image):
            mw, mh = margin * (vx2 - vx1), margin * (vy2 - vy1)
            x1, y1 = int(max(0, vx1 - mw)), int(max(0, vy1 - mh))
            x2, y2 = int(min(w, vx2 + mw)), int(min(h, vy2 + mh))
            if x2 - x1 < 8 or y2 - y1 < 8:
                continue
            [d] = detector.detect([np.ascontiguousarray(image[y1:y2, x1:x2])], conf=conf)
            if len(d):
                boxes.append(d.xyxy + np.array([x1, y1, x1, y1], np.float32))
                scores.append(d.confidence)
    if tiles:  # small badges anywhere (missed or far vehicles), each tile at the crop size
        for x1, y1, x2, y2 in tile_windows(w, h, detector.imgsz):
            [d] = detector.detect([np.ascontiguousarray(image[y1:y2, x1:x2])], conf=conf)
            # a box cut by an inner tile edge is a part of something: the overlapping tile sees it whole
            inner = np.zeros(len(d), dtype=bool)
            for axis, lo, hi, size in ((0, x1, x2, w), (1, y1, y2, h)):
                inner |= (lo > 0) & (d.xyxy[:, axis] <= 2)
                inner |= (hi < size) & (d.xyxy[:, axis + 2] >= hi - lo - 2)
            if np.any(~inner):
                boxes.append(d.xyxy[~inner] + np.array([x1, y1, x1, y1], np.float32))
                scores.append(d.confidence[~inner])
    xyxy = np.concatenate(boxes).reshape(-1, 4)
    conf_arr = np.concatenate(scores)
    if len(xyxy) > 1:
        xyxy, conf_arr = _nms(xyxy, conf_arr, 0.5)
    order = np.argsort(-conf_arr, kind="stable")
    return Detections(xyxy[order], conf_arr[order], np.zeros(len(order), np.int32))
