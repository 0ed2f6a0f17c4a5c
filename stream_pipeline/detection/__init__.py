"""Vehicle detection (ultralytics YOLO, COCO vehicle classes)."""

from stream_pipeline.detection.vehicle_detector import COCO_NAMES, COCO_VEHICLE_IDS, VehicleDetector, load_yolo

__all__ = ["VehicleDetector", "COCO_NAMES", "COCO_VEHICLE_IDS", "load_yolo"]
