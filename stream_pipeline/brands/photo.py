"""Badges in a whole photo (any resolution), for `detect-logos`.

The detector is trained on vehicle-sized crops (metadata imgsz, 416 px). On a whole photo the
badge scale is unknown, so "auto" mode does what the pipeline does: find the vehicles with the
COCO detector (../shared/models/yolo11n_int8_openvino_model), run the badge detector on
each vehicle crop (5 % margin), and adds whole-image passes (at the crop size, and at
metadata's full_frame_imgsz 640 when the image is at least the crop size) for close-ups, inputs that are
already vehicle crops, and missed vehicles, and, on large photos, overlapping
tiles of the crop size (badges at native scale) for small badges on vehicles the COCO detector
misses or shrinks. Boxes in the input image's pixels.

The passes are fused, not just pooled: boxes of different passes that overlap are one badge, and
its score is the mean of its two best passes' scores (`fuse_passes`). A badge seen by two views
is more likely a badge than a box one view alone is sure of, and false boxes (door handles,
lettering, lamps) are mostly found by one pass. On the held-out street photos this ranks the
boxes better than keeping each box's best score (held-out whole photos, recall at precision
>= 0.85, IoU 0.3, badge detector run 5: val 0.773 -> 0.860, test 0.658 -> 0.768;
`evaluate-logo-detector`). The fused scores are on their own scale, so the threshold is
metadata's `photo_conf`, chosen on the validation photos; when only one pass runs (an image under the crop size and no vehicle found),
the score is that pass's own and the crop threshold `conf` applies. A fused box lying inside a
better one of comparable size is the same badge boxed twice and is dropped (`suppress_nested`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_pipeline.brands.logo_detector import NESTED_COVER, NESTED_MIN_AREA_RATIO
from stream_pipeline.core.config import DetectorConfig
from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.geometry import box_iou, suppress_nested
from stream_pipeline.core.paths import resolve_model_path
from stream_pipeline.core.types import Detections

VEHICLE_CLASSES = [2, 3, 5, 7]
# Tiles only on photos this many times the input size: on smaller ones the whole-image passes
# already run near native scale, and up-scaled tiles cost precision (val photos, 480 px,
# 240-px tiles at 416: IoU-0.5 mAP 0.63 -> 0.41).
TILE_MIN_PHOTO = 2.0
TILE_OVERLAP = 0.25  # a badge cut by one tile's edge is whole in the next
# Each pass keeps boxes down to this score, so a badge one pass is unsure of still adds to the
# fused score (a pass that did not find it adds 0).
PASS_FLOOR = 0.01
# Boxes of two passes at this IoU or more are the same badge (the IoU the pooled passes were
# merged at before fusion; the detector's own NMS uses metadata's 0.6).
FUSE_IOU = 0.5
# A box overlapping a detected vehicle this much is the vehicle, not its badge: on a photo the
# whole-image passes sometimes box a whole car (0.44 on one held-out photo whose 29-px badge was
# missed); held-out photos, fused, at photo_conf (run 5): test precision 0.798 -> 0.811, recall
# unchanged.
VEHICLE_IOU = 0.5


class VehicleFinder:
    """COCO vehicles (car, motorcycle, bus, truck) with the shared int8 OpenVINO YOLO11n.

    Runs OpenVINO directly (no ultralytics import, nothing printed on stdout).
    """

    def __init__(self, model_path: Path | None = None, conf: float = 0.25, imgsz: int = 640, min_side: int = 24):
        from stream_pipeline.brands.logo_detector import _OpenVinoBackend

        # the run's default vehicle detector, wherever it is (../shared, or fetched into samples/)
        path = Path(model_path) if model_path else resolve_model_path(DetectorConfig().model)
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


def fuse_passes(passes: list[tuple[np.ndarray, np.ndarray]], iou: float = FUSE_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of several passes over one image -> one box per badge, scored by the mean of its two
    best passes' scores (0 for a pass that did not find it; its own score when only one pass ran).

    Greedy, best box first: a badge is the best remaining box plus the best overlapping box of
    each other pass; other boxes overlapping it are its duplicates and go too."""
    sizes = [len(b) for b, _ in passes]
    if not passes or sum(sizes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes = np.concatenate([b for b, _ in passes]).reshape(-1, 4).astype(np.float32)
    scores = np.concatenate([s for _, s in passes]).astype(np.float32)
    origin = np.repeat(np.arange(len(passes)), sizes)
    overlap = box_iou(boxes, boxes)
    order = np.argsort(-scores, kind="stable")
    # a box is its own duplicate even when box_iou rounds a degenerate box's self-overlap down
    np.fill_diagonal(overlap, 1.0)
    used = np.zeros(len(boxes), dtype=bool)
    kept, fused = [], []
    for i in order:
        if used[i]:
            continue
        same = ~used & (overlap[i] >= iou)
        per_pass = np.zeros(len(passes), np.float32)
        np.maximum.at(per_pass, origin[same], scores[same])  # each pass: its best box on this badge
        used |= same
        kept.append(boxes[i])
        best_two = np.sort(per_pass)[-2:]
        fused.append(best_two.mean() if len(passes) > 1 else best_two[-1])
    return np.array(kept, np.float32).reshape(-1, 4), np.array(fused, np.float32)


def detect_in_photo(
    detector,
    image: np.ndarray,
    vehicles: VehicleFinder | None,
    conf: float | None = None,
    whole_imgsz: int | None = None,
    margin: float = 0.05,
    tiles: bool = True,
) -> Detections:
    """Badges in one BGR photo: whole-image passes + vehicle-crop pass (+ tiles), fused
    (`fuse_passes`). `conf` applies to the fused score (default: metadata's `photo_conf`; the
    crop threshold `conf` when only one pass ran, whose scores are the detector's own, and for
    a model shipped without `photo_conf`)."""
    h, w = image.shape[:2]
    sizes = [detector.imgsz]  # the image may itself be a vehicle crop: the trained scale
    full = int(whole_imgsz or detector.metadata.get("full_frame_imgsz", 640))
    if max(h, w) >= detector.imgsz and full != detector.imgsz:
        # a photo: also look for small badges at the full-frame size, even if that up-scales it a
        # little (480-px val photos: recall at P >= 0.85, IoU 0.3, 0.63 -> 0.70 with this pass)
        sizes.append(full)
    passes: list[tuple[np.ndarray, np.ndarray]] = []
    for size in sizes:
        [whole] = detector.detect([image], conf=PASS_FLOOR, imgsz=size)
        passes.append((whole.xyxy, whole.confidence))
    found = np.asarray(vehicles(image), np.float32).reshape(-1, 4) if vehicles is not None else np.zeros((0, 4))
    boxes, scores = [], []  # the vehicle crops, one pass: they do not overlap much
    for vx1, vy1, vx2, vy2 in found:
        mw, mh = margin * (vx2 - vx1), margin * (vy2 - vy1)
        x1, y1 = int(max(0, vx1 - mw)), int(max(0, vy1 - mh))
        x2, y2 = int(min(w, vx2 + mw)), int(min(h, vy2 + mh))
        if x2 - x1 < 8 or y2 - y1 < 8:
            continue
        [d] = detector.detect([np.ascontiguousarray(image[y1:y2, x1:x2])], conf=PASS_FLOOR)
        boxes.append(d.xyxy + np.array([x1, y1, x1, y1], np.float32))
        scores.append(d.confidence)
    if boxes:  # a pass that looked at nothing is no vote against
        passes.append(_pooled(boxes, scores))
    windows = tile_windows(w, h, detector.imgsz) if tiles else []
    if windows:
        boxes, scores = [], []  # small badges anywhere (missed or far vehicles), each tile at the crop size
        for x1, y1, x2, y2 in windows:
            [d] = detector.detect([np.ascontiguousarray(image[y1:y2, x1:x2])], conf=PASS_FLOOR)
            # a box cut by an inner tile edge is a part of something: the overlapping tile sees it whole
            inner = np.zeros(len(d), dtype=bool)
            for axis, lo, hi, size in ((0, x1, x2, w), (1, y1, y2, h)):
                inner |= (lo > 0) & (d.xyxy[:, axis] <= 2)
                inner |= (hi < size) & (d.xyxy[:, axis + 2] >= hi - lo - 2)
            if np.any(~inner):
                boxes.append(d.xyxy[~inner] + np.array([x1, y1, x1, y1], np.float32))
                scores.append(d.confidence[~inner])
        passes.append(_pooled(boxes, scores))
    if conf is None:
        conf = float(detector.metadata.get("photo_conf", detector.conf)) if len(passes) > 1 else detector.conf
    xyxy, fused = fuse_passes(passes)
    keep = fused >= conf
    if len(found) and len(xyxy):
        keep &= box_iou(xyxy, found).max(axis=1) < VEHICLE_IOU
    # the passes' own boxes are de-nested by the detector; their fusion may nest again
    xyxy, fused = suppress_nested(xyxy[keep], fused[keep], NESTED_COVER, NESTED_MIN_AREA_RATIO)
    return Detections(xyxy, fused, np.zeros(len(fused), np.int32))


def _pooled(boxes: list[np.ndarray], scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The windows of one pass (vehicle crops, tiles) as one set of boxes, duplicates of
    overlapping windows removed."""
    from stream_pipeline.brands.logo_detector import _nms

    xyxy = np.concatenate(boxes).reshape(-1, 4).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    conf = np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)
    if len(xyxy) > 1:
        xyxy, conf = _nms(xyxy, conf, FUSE_IOU)
    return xyxy, conf
