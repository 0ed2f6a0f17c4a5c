"""Vehicle detector: ultralytics YOLO (COCO) restricted to car, motorcycle, bus, truck."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stream_pipeline.core.config import DetectorConfig
from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.paths import resolve_model_path
from stream_pipeline.core.types import Detections

log = logging.getLogger(__name__)

# COCO class ids of the vehicle classes.
COCO_VEHICLE_IDS = {"car": 2, "motorcycle": 3, "bus": 5, "truck": 7}
COCO_NAMES = {v: k for k, v in COCO_VEHICLE_IDS.items()}


def load_yolo(path: Path, task: str = "detect"):
    """Load an ultralytics YOLO model from a local .pt or export folder, never downloading."""
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.is_dir() and not any(path.glob("*.xml")):
        raise ModelError(f"not an OpenVINO model folder (no .xml): {path}")
    if path.is_file() and path.suffix not in {".pt", ".onnx", ".xml"}:
        raise ModelError(f"unsupported model file {path} (use a .pt or an OpenVINO export folder)")
    from ultralytics import YOLO

    try:
        return YOLO(str(path), task=task)
    except (RuntimeError, ValueError, OSError, KeyError, AttributeError, ImportError) as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from None


class VehicleDetector:
    """Finds vehicles in a frame; class ids in the returned Detections are COCO ids."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.path = resolve_model_path(config.model)
        self.model = load_yolo(self.path)
        self.class_ids = [COCO_VEHICLE_IDS[name] for name in config.classes]
        self.names = COCO_NAMES

    def detect(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        """One predict call over several frames (serve: one frame per camera); one result each."""
        results = self.model.predict(
            list(images),
            imgsz=self.config.imgsz,
            conf=self.config.confidence,
            iou=self.config.iou,
            classes=self.class_ids,
            agnostic_nms=self.config.agnostic_nms,
            verbose=False,
            device="cpu",
        )
        return [self._to_detections(result) for result in results]

    def _to_detections(self, result) -> Detections:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        detections = Detections(
            xyxy=boxes.xyxy.cpu().numpy(),
            confidence=boxes.conf.cpu().numpy(),
            class_id=boxes.cls.cpu().numpy().astype(np.int32),
        )
        if self.config.min_box_px:
            sides = np.minimum(detections.xyxy[:, 2] - detections.xyxy[:, 0], detections.xyxy[:, 3] - detections.xyxy[:, 1])
            detections = detections[sides >= self.config.min_box_px]
        return detections
