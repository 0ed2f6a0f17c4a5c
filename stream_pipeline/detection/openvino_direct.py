"""YOLO detection export (OpenVINO IR) run through OpenVINO directly.

ultralytics' `predict` spends several milliseconds per frame on its own pre- and
post-processing (torch tensors, per-call setup). Here the letterbox is one cv2 resize
into a preallocated canvas, colour order, layout and scaling run inside the compiled
model (OpenVINO PrePostProcessor), and the raw (1, 4 + classes, anchors) output is
decoded with numpy and OpenCV's NMS, restricted to the wanted classes. Same maths as
ultralytics (letterbox with grey 114 bars, centre padding, class-agnostic or per-class NMS).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.types import Detections

MAX_DETECTIONS = 300
PAD_VALUE = 114


def export_input_hw(folder: Path) -> tuple[int, int]:
    """(height, width) the export was made for, from its metadata.yaml."""
    meta = folder / "metadata.yaml"
    if not meta.is_file():
        raise ModelError(f"no metadata.yaml in {folder}")
    imgsz = yaml.safe_load(meta.read_text(encoding="utf-8")).get("imgsz")
    if isinstance(imgsz, int):
        return imgsz, imgsz
    return int(imgsz[0]), int(imgsz[1])


class OpenVinoYolo:
    """One static-shape YOLO detect export; `detect(image)` returns Detections in image pixels."""

    def __init__(self, folder: Path, class_ids: list[int], confidence: float, iou: float,
                 agnostic_nms: bool = True, threads: int | None = None) -> None:
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        xml = next(iter(sorted(folder.glob("*.xml"))), None)
        if xml is None:
            raise ModelError(f"not an OpenVINO model folder (no .xml): {folder}")
        self.folder = folder
        self.input_hw = export_input_hw(folder)
        self.class_ids = np.asarray(sorted(class_ids), dtype=np.int64)
        self.confidence, self.iou, self.agnostic = confidence, iou, agnostic_nms
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
            shape = tuple(model.input(0).get_partial_shape().to_shape())
            if shape[2:] != self.input_hw:
                raise ModelError(f"{folder}: input {shape} does not match metadata imgsz {self.input_hw}")
            # The frame goes in as BGR uint8 NHWC; conversion to RGB float NCHW / 255 is compiled in.
            ppp = PrePostProcessor(model)
            ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
            ppp.input().preprocess().convert_color(ColorFormat.RGB).convert_element_type(ov.Type.f32).scale(255.0)
            ppp.input().model().set_layout(ov.Layout("NCHW"))
            model = ppp.build()
            config = {"PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            self._compiled = core.compile_model(model, "CPU", config)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises plain RuntimeErrors
            raise ModelError(f"cannot load model {folder}: {exc}") from None
        self._request = self._compiled.create_infer_request()
        h, w = self.input_hw
        self._canvas = np.full((1, h, w, 3), PAD_VALUE, dtype=np.uint8)

    def fits(self, height: int, width: int, scale: float) -> bool:
        """True if a frame of this size, resized by `scale`, fits the input without cropping."""
        h, w = self.input_hw
        return round(height * scale) <= h and round(width * scale) <= w

    def detect(self, image: np.ndarray) -> Detections:
        h0, w0 = image.shape[:2]
        h, w = self.input_hw
        gain = min(h / h0, w / w0)
        new_w, new_h = int(round(w0 * gain)), int(round(h0 * gain))
        left = int(round((w - new_w) / 2 - 0.1))
        top = int(round((h - new_h) / 2 - 0.1))
        canvas = self._canvas[0]
        canvas[...] = PAD_VALUE
        canvas[top:top + new_h, left:left + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        output = self._request.infer({0: self._canvas})[self._compiled.output(0)][0]  # (4 + classes, anchors)
        scores = output[4 + self.class_ids]  # (wanted classes, anchors)
        best = scores.argmax(axis=0)
        conf = scores[best, np.arange(scores.shape[1])]
        keep = conf > self.confidence
        if not keep.any():
            return Detections.empty()
        cx, cy, bw, bh = output[:4, keep]
        conf, cls = conf[keep], self.class_ids[best[keep]]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        order = np.argsort(-conf)[:30000]
        xyxy, conf, cls = xyxy[order], conf[order], cls[order]
        boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        if self.agnostic:
            kept = cv2.dnn.NMSBoxes(boxes.tolist(), conf.tolist(), self.confidence, self.iou)
        else:
            kept = cv2.dnn.NMSBoxesBatched(boxes.tolist(), conf.tolist(), cls.tolist(), self.confidence, self.iou)
        kept = np.asarray(kept, dtype=np.int64).reshape(-1)[:MAX_DETECTIONS]
        xyxy, conf, cls = xyxy[kept], conf[kept], cls[kept]
        xyxy -= np.array([left, top, left, top], dtype=xyxy.dtype)
        xyxy /= gain
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w0)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h0)
        return Detections(xyxy=xyxy.astype(np.float32), confidence=conf.astype(np.float32), class_id=cls.astype(np.int32))
