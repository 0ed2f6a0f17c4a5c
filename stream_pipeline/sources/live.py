"""Live sources (RTSP, webcam): the newest frame wins, with a capture watchdog.

A reader thread pulls frames as fast as the device delivers them and keeps only the
newest, so a slow pipeline skips frames instead of falling behind real time. If no
frame arrives for `read_timeout_s`, or the stream ends, the reader reopens it (up to
`max_reconnects` attempts in a row) instead of handing out stale or black frames.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np

from stream_pipeline.core.config import SourceConfig
from stream_pipeline.core.errors import SourceError
from stream_pipeline.core.types import Frame
from stream_pipeline.sources.base import CaptureSource, redact

log = logging.getLogger(__name__)


def parse_webcam(source: str) -> int | str | None:
    """`0` -> 0, `/dev/video0` -> the path; None when `source` is not a webcam."""
    if source.isdigit():
        return int(source)
    if source.startswith("/dev/video"):
        return source
    return None


class LiveSource(CaptureSource):
    is_live = True

    def __init__(self, source: str, config: SourceConfig | None = None) -> None:
        super().__init__(25.0)
        self.url = source
        self.config = config or SourceConfig()
        self.name = redact(source)
        self._webcam = parse_webcam(source)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._delivered_index = -1
        self._error: SourceError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_count = 0
        self._dropped = 0
        self._t0 = 0.0
        self.reconnects = 0

    # -- opening --------------------------------------------------------------------
    def _open_capture(self) -> cv2.VideoCapture:
        timeout_ms = int(self.config.open_timeout_s * 1000)
        read_ms = int(self.config.read_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
        if self._webcam is not None:
            capture = cv2.VideoCapture(self._webcam, cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)
        else:
            # FFmpeg reads its RTSP options from this variable at open time.
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{self.config.rtsp_transport}"
            capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            kind = "webcam" if self._webcam is not None else "stream"
            raise SourceError(f"cannot open {kind} {self.name} (unreachable, refused or not a video stream)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if fps and 1.0 <= fps <= 240.0:
            self._fps = float(fps)
        return capture

    def open(self) -> None:
        self._capture = self._open_capture()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name="frame-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.read_timeout_s + 5)
        self._release_capture()

    @property
    def frames_dropped(self) -> int:
        return self._dropped

    @property
    def frames_read(self) -> int:
        """Frames decoded from the device so far (delivered or dropped)."""
        return self._read_count

    # -- reader thread --------------------------------------------------------------
    def _reader(self) -> None:
        failures = 0
        while not self._stop.is_set():
            ok, image = self._capture.read() if self._capture is not None else (False, None)
            if ok and image is not None:
                failures = 0
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                frame = Frame(
                    image=np.ascontiguousarray(image),
                    index=self._read_count,
                    timestamp_s=time.monotonic() - self._t0,
                    source=self.name,
                )
                self._read_count += 1
                with self._cond:
                    if self._latest is not None and self._latest.index > self._delivered_index:
                        self._dropped += 1  # the consumer never saw the previous one
                    self._latest = frame
                    self._cond.notify_all()
                continue
            # Read failed: stream ended, camera froze past the read timeout, or network loss.
            failures += 1
            if failures > self.config.max_reconnects:
                self._fail(
                    SourceError(
                        f"lost {self.name}: no frames after {self.config.max_reconnects} reconnect attempts"
                    )
                )
                return
            log.warning("no frame from %s; reconnecting (%d/%d)", self.name, failures, self.config.max_reconnects)
            self._release_capture()
            if self._stop.wait(self.config.reconnect_delay_s):
                return
            try:
                self._capture = self._open_capture()
                self.reconnects += 1
                log.info("reconnected to %s", self.name)
            except SourceError as exc:
                log.warning("%s", exc)

    def _fail(self, error: SourceError) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # -- consumer ---------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        # The consumer waits at most this long; the reader's own reconnect cycle is
        # bounded, so the wait covers a full reconnect series before giving up.
        patience = (self.config.read_timeout_s + self.config.reconnect_delay_s + self.config.open_timeout_s) * (
            self.config.max_reconnects + 1
        )
        while True:
            with self._cond:
                deadline = time.monotonic() + patience
                while (self._latest is None or self._latest.index <= self._delivered_index) and self._error is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SourceError(f"no frames from {self.name} for {patience:.0f} s")
                    self._cond.wait(timeout=min(remaining, 0.5))
                if self._latest is not None and self._latest.index > self._delivered_index:
                    frame = self._latest
                    self._delivered_index = frame.index
                else:
                    raise self._error
            yield frame
