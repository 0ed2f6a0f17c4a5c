"""Run-time badge (logo) detector: finds vehicle badges in vehicle crops.

The committed model (models/logo_detector/) is a one-class YOLO11n fine-tuned on
vehicle-sized crops. The default backend runs its OpenVINO export directly (numpy
letterbox + OpenVINO + OpenCV NMS), so loading it imports neither torch nor ultralytics
and never touches the network. A `.pt` checkpoint is also accepted (ultralytics backend).

    detector = LogoDetector.load()
    [dets] = detector.detect([vehicle_crop_bgr])   # Detections in the crop's pixels
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.geometry import suppress_nested
from stream_pipeline.core.paths import MODELS_DIR, PROJECT_ROOT
from stream_pipeline.core.types import Detections

MODEL_DIR = MODELS_DIR / "logo_detector"
DEFAULT_MODEL = MODEL_DIR / "best_openvino_model"
METADATA_FILE = MODEL_DIR / "metadata.json"

DEFAULTS = {"imgsz": 320, "conf": 0.25, "iou": 0.6, "names": ["logo"]}
# After NMS, a box lying (almost) wholly inside a better one of comparable size is the same badge
# boxed twice (the emblem and its chrome surround; NMS keeps both, their IoU being low): one badge,
# one box. Chosen on the held-out val split (recall at precision >= 0.85, IoU 0.3, run 7):
# vehicle crops val 0.846 -> 0.898 (test 0.815 -> 0.862), detect-logos' fused boxes val 0.860 ->
# 0.880 (test 0.797 either way). An area ratio of 0 did as well on val but would let a large
# false box (a grille) swallow the badge inside it.
NESTED_COVER = 0.8  # share of the smaller box inside the larger
NESTED_MIN_AREA_RATIO = 0.1  # smaller / larger area


def _read_metadata(model_path: Path) -> dict:
    """metadata.json beside the model (or in its parent folder), else the defaults."""
    meta = dict(DEFAULTS)
    here = model_path if model_path.is_dir() else model_path.parent
    for candidate in (here / "metadata.json", here.parent / "metadata.json"):
        if candidate.is_file():
            try:
                meta.update(json.loads(candidate.read_text()))
            except (OSError, ValueError) as exc:
                raise ModelError(f"unreadable logo-detector metadata {candidate}: {exc}") from exc
            break
    return meta


def letterbox(image: np.ndarray, size: int | tuple[int, int], stride: int | None = None):
    """Resize keeping aspect ratio and pad with grey, as ultralytics does.

    size: target (h, w) or a square side. With `stride`, pad only to the next multiple of
    stride (dynamic-shape models) instead of to the full square.
    Returns (padded image, ratio, (pad_left, pad_top)).
    """
    import cv2

    th, tw = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    r = min(th / h, tw / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if stride:
        th = int(np.ceil(nh / stride) * stride)
        tw = int(np.ceil(nw / stride) * stride)
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return image, r, (left, top)


class LogoDetector:
    """Badge detector. Use `LogoDetector.load()`; call `detect()` on BGR vehicle crops."""

    def __init__(self, backend, model_path: Path, conf: float, imgsz: int, iou: float, metadata: dict):
        self._backend = backend
        self.model_path = model_path
        self.conf = float(conf)
        self.imgsz = int(imgsz)
        self.iou = float(iou)
        self.metadata = metadata

    @classmethod
    def load(cls, model_path: Path | str | None = None, conf: float | None = None, imgsz: int | None = None) -> "LogoDetector":
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        if not path.is_absolute():
            path = (Path.cwd() / path) if path.exists() else (PROJECT_ROOT / path)
        if not path.exists():
            raise ModelError(f"logo detector model not found: {path}")
        meta = _read_metadata(path)
        conf = meta["conf"] if conf is None else conf
        imgsz = meta["imgsz"] if imgsz is None else imgsz
        if path.suffix == ".pt":
            backend = _UltralyticsBackend(path)
        else:
            xml = path if path.suffix == ".xml" else next(iter(sorted(path.glob("*.xml"))), None)
            if xml is None:
                raise ModelError(f"no OpenVINO .xml model in {path}")
            backend = _OpenVinoBackend(xml)
        return cls(backend, path, conf, imgsz, meta.get("iou", DEFAULTS["iou"]), meta)

    def detect(self, images: Sequence[np.ndarray], conf: float | None = None, imgsz: int | None = None) -> list[Detections]:
        """One Detections per BGR uint8 image, boxes in that image's pixels, best first."""
        conf = self.conf if conf is None else conf
        imgsz = self.imgsz if imgsz is None else imgsz
        out = []
        for image in images:
            if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
                raise ValueError(f"expected a non-empty HxWx3 BGR image, got {None if image is None else image.shape}")
            boxes, scores = self._backend.predict(image, imgsz, conf, self.iou)
            boxes, scores = suppress_nested(boxes, scores, NESTED_COVER, NESTED_MIN_AREA_RATIO)  # sorted, best first
            out.append(Detections(boxes, scores, np.zeros(len(scores), dtype=np.int32)))
        return out

    def __repr__(self) -> str:
        return f"LogoDetector({self.model_path}, conf={self.conf}, imgsz={self.imgsz})"


class _OpenVinoBackend:
    """YOLO detect head output (1, 4 + nc, N) -> boxes; `class_ids` restricts the classes scored."""

    def __init__(self, xml: Path, class_ids: Sequence[int] | None = None):
        self.class_ids = None if class_ids is None else np.asarray(class_ids, dtype=np.int64)
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover
            raise ModelError("the openvino package is needed for the logo detector") from exc
        try:
            core = ov.Core()
            model = core.read_model(str(xml))
            # f32 compute, as the threshold was chosen: bf16-capable CPUs would otherwise run bf16
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            threads = os.environ.get("STREAM_PIPELINE_OV_THREADS")
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            self._compiled = core.compile_model(model, "CPU", config)
        except (RuntimeError, ValueError, OSError) as exc:  # OpenVINO reports load failures as RuntimeError
            raise ModelError(f"cannot load OpenVINO logo detector {xml}: {exc}") from exc
        shape = self._compiled.input(0).get_partial_shape()
        self.dynamic = shape.is_dynamic
        self.static_hw = None if self.dynamic else (int(shape[2].get_length()), int(shape[3].get_length()))
        self._request = self._compiled.create_infer_request()

    def predict(self, image: np.ndarray, imgsz: int, conf: float, iou: float):
        if self.dynamic:
            padded, r, (px, py) = letterbox(image, imgsz, stride=32)
        else:
            padded, r, (px, py) = letterbox(image, self.static_hw)
        blob = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        pred = self._request.infer({0: blob})[self._compiled.output(0)][0]  # (4 + nc, N)
        cls = pred[4:] if self.class_ids is None else pred[4:][self.class_ids]
        scores = cls.max(0)
        keep = scores >= conf
        if not np.any(keep):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        cx, cy, w, h = pred[:4, keep]
        scores = scores[keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        boxes, scores = _nms(boxes, scores, iou)
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - px) / r
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - py) / r
        hgt, wid = image.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, wid)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, hgt)
        return boxes.astype(np.float32), scores.astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_det: int = 100):
    import cv2

    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou, top_k=max_det)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    return boxes[idx].copy(), scores[idx]


class _UltralyticsBackend:
    def __init__(self, weights: Path):
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from stream_pipeline.detection import load_yolo

        self._model = load_yolo(Path(weights))

    def predict(self, image: np.ndarray, imgsz: int, conf: float, iou: float):
        r = self._model.predict(image, imgsz=imgsz, conf=conf, iou=iou, verbose=False, device="cpu")[0]
        return r.boxes.xyxy.cpu().numpy().astype(np.float32), r.boxes.conf.cpu().numpy().astype(np.float32)
