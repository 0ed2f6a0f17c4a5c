"""One model set for every camera: the vehicle detector batched across cameras, the brand
models behind a lock (ultralytics and OpenVINO inference objects are not thread-safe).

Each camera thread asks for one frame at a time and waits for its answer, so a batch holds at
most one frame per camera and every camera waiting gets served in the same round: no camera is
starved by a faster one, and frames are skipped (by the cameras' newest-frame readers) evenly.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from stream_pipeline.core.types import Detections
from stream_pipeline.detection import VehicleDetector

log = logging.getLogger(__name__)


@dataclass
class _Request:
    image: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: Detections | None = None
    error: BaseException | None = None


class DetectionScheduler:
    """Runs the shared detector on its own thread over whatever frames the cameras have handed in."""

    def __init__(self, detector: VehicleDetector, max_batch: int = 16) -> None:
        self.detector = detector
        self.names = detector.names
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="detector", daemon=True)
        self.batches = 0
        self.frames = 0
        self._thread.start()

    def detect(self, image: np.ndarray) -> Detections:
        request = _Request(image)
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                results = self.detector.detect_batch([r.image for r in batch])
                for request, result in zip(batch, results):
                    request.result = result
            except Exception as exc:  # noqa: BLE001 - handed to the cameras that asked, never kills the thread
                log.error("vehicle detector failed on a batch of %d frames: %s", len(batch), exc)
                for request in batch:
                    request.error = exc
            self.batches += 1
            self.frames += len(batch)
            for request in batch:
                request.done.set()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


class LockedModel:
    """Calls to `detect` / `classify` / `embed` of a model shared by camera threads, one at a time."""

    def __init__(self, model, lock: threading.Lock) -> None:
        self._model = model
        self._lock = lock

    def __getattr__(self, name: str):
        value = getattr(self._model, name)
        if name not in ("detect", "classify", "embed"):
            return value

        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)

        return locked
