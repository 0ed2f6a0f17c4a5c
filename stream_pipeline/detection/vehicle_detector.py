"""Vehicle detector: ultralytics YOLO (COCO) restricted to car, motorcycle, bus, truck."""

from __future__ import annotations

import logging
import sys
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
    if "tensorflow" in sys.modules:
        # triton (imported by torch._dynamo, only used for GPU kernels) segfaults when loaded after
        # TensorFlow in one process; on CPU torch treats a failed import as "no triton".
        sys.modules.setdefault("triton", None)
    from ultralytics import YOLO

    try:
        return YOLO(str(path), task=task)
    except (RuntimeError, ValueError, OSError, KeyError, AttributeError, ImportError) as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from None


class VehicleDetector:
    """Finds vehicles in a frame; class ids in the returned Detections are COCO ids.

    OpenVINO exports run through OpenVINO directly (`openvino_direct`), unless
    `runtime: ultralytics`; .pt checkpoints through ultralytics. With `shaped_models`, the
    first frame picks the export with the smallest input that holds the frame at the scale
    the main model would use (a 16:9 frame: the 384x640 export instead of 640x640 with
    grey bars); frames of another shape later pick again.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.path = resolve_model_path(config.model)
        self.class_ids = [COCO_VEHICLE_IDS[name] for name in config.classes]
        self.names = COCO_NAMES
        self.direct = config.runtime != "ultralytics" and self.path.is_dir()
        self.model = None if self.direct else load_yolo(self.path)
        self._main = self._load_direct(self.path) if self.direct else None
        self._shaped = [self._load_direct(resolve_model_path(p)) for p in config.shaped_models] if self.direct else []
        self._chosen: dict[tuple[int, int], object] = {}

    def _load_direct(self, path: Path):
        from stream_pipeline.detection.openvino_direct import OpenVinoYolo

        if not path.exists():
            raise ModelError(f"model not found: {path}")
        return OpenVinoYolo(path, self.class_ids, self.config.confidence, self.config.iou, self.config.agnostic_nms)

    def backend_for(self, height: int, width: int):
        """The export used for frames of this size (smallest input that fits at the main model's scale)."""
        key = (height, width)
        if key not in self._chosen:
            main_h, main_w = self._main.input_hw
            scale = min(main_h / height, main_w / width)
            fitting = [m for m in self._shaped if m.fits(height, width, scale)]
            best = min(fitting, key=lambda m: m.input_hw[0] * m.input_hw[1], default=self._main)
            if best.input_hw[0] * best.input_hw[1] >= main_h * main_w:
                best = self._main
            log.info("vehicle detector for %dx%d frames: %s (input %dx%d)", width, height, best.folder.name,
                     best.input_hw[1], best.input_hw[0])
            self._chosen[key] = best
        return self._chosen[key]

    def detect(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        """Detections for each frame (serve: one frame per camera).

        The direct OpenVINO path runs one request per frame (cameras may differ in size and
        each picks its own export); ultralytics gets one predict call over all frames.
        """
        if self.direct:
            return [self._min_size(self.backend_for(*image.shape[:2]).detect(image)) for image in images]
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
        return self._min_size(detections)

    def _min_size(self, detections: Detections) -> Detections:
        if self.config.min_box_px and len(detections):
            sides = np.minimum(detections.xyxy[:, 2] - detections.xyxy[:, 0], detections.xyxy[:, 3] - detections.xyxy[:, 1])
            detections = detections[sides >= self.config.min_box_px]
        return detections
