"""Live sources (RTSP, webcam): the newest frame wins, with a capture watchdog.

A reader thread pulls frames as fast as the device delivers them and the consumer gets only
the newest, so a slow pipeline skips frames instead of falling behind real time. Frames that
arrive in a burst are first spread back to their stream pace (`pacing.StreamPacer`, at most
`jitter_buffer_ms` late), so "newest" means newest due, and a bursty camera is not cut down to
one frame per burst. If no
frame arrives for `read_timeout_s`, or the stream ends, the reader reopens it (up to
`max_reconnects` attempts in a row) instead of handing out stale or black frames.

Stale frames around a freeze come from two places, and both are dropped:
- OpenCV's FFmpeg reader, when its read timeout fires, returns a picture still queued in
  the (frame-threaded) H.264 decoder instead of failing: one picture from before the
  freeze per timeout, stamped seconds late. A read that took the whole timeout is a stall.
- After a reconnect a camera or server may start by re-sending its last picture; frames
  identical to the last one delivered are dropped until a new picture arrives.
Each gap is reported through `on_status`: `stalled` when it starts, `resumed` (with the
seconds lost) when a new picture arrives.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from stream_pipeline.core.config import SourceConfig
from stream_pipeline.core.errors import SourceError
from stream_pipeline.core.types import Frame
from stream_pipeline.sources.base import CaptureSource, redact
from stream_pipeline.sources.pacing import StreamPacer

log = logging.getLogger(__name__)

# Kernel device names (/dev/video0) and udev's stable links (/dev/v4l/by-id/..., by-path/...).
_WEBCAM_PATH = re.compile(r"^/dev/(video\d+|v4l/.+)$")
# Frames waiting for their release time, at most (a bound on memory if a stream's clock runs wild).
MAX_PENDING = 64


def parse_webcam(source: str) -> int | str | None:
    """`0` -> 0, `/dev/video0` or `/dev/v4l/by-id/...` -> the path; None when `source` is not a webcam."""
    text = source.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    if _WEBCAM_PATH.match(text):
        return text
    return None


@dataclass
class _Gap:
    """A stretch without new pictures: from the last frame delivered to the next new one."""

    last_index: int
    last_stream_s: float
    reconnects: int = 0
    stale_dropped: int = 0
    reopened_at: float | None = None  # monotonic time of the last successful reopen


class LiveSource(CaptureSource):
    is_live = True

    def __init__(self, source: str, config: SourceConfig | None = None) -> None:
        super().__init__(25.0)
        self.url = source
        self.config = config or SourceConfig()
        self.name = redact(source)
        self._webcam = parse_webcam(source)
        self._cond = threading.Condition()
        self._latest: Frame | None = None  # the newest frame read
        self._pending: deque[tuple[float, Frame]] = deque()  # (release time, frame), not handed out yet
        self._pacer = StreamPacer(self.config.jitter_buffer_ms / 1000.0)
        self._error: SourceError | None = None
        self._notices: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_count = 0
        self._dropped = 0
        self._stale = 0
        self._last_image: np.ndarray | None = None
        self._gap: _Gap | None = None
        self._t0 = 0.0
        self._last_stream_s = -1.0
        self.reconnects = 0
        self._opening = False  # the reader is inside a (re)connect attempt

    # -- opening --------------------------------------------------------------------
    def _create_capture(self):
        """The device or stream capture (anything with cv2.VideoCapture's read/get/isOpened/release)."""
        if self._webcam is not None:
            return cv2.VideoCapture(self._webcam, cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)
        timeout_ms = int(self.config.open_timeout_s * 1000)
        read_ms = int(self.config.read_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
        # FFmpeg reads its RTSP options from this variable at open time.
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{self.config.rtsp_transport}"
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def _open_capture(self):
        try:
            capture = self._create_capture()
        except cv2.error as exc:
            raise SourceError(f"cannot open {self._kind} {self.name}: {redact(str(exc).strip())}") from None
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self._kind} {self.name} (unreachable, refused or not a video stream)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if fps and 1.0 <= fps <= 240.0:
            self._fps = float(fps)
        return capture

    @property
    def _kind(self) -> str:
        return "webcam" if self._webcam is not None else "stream"

    def open(self) -> None:
        self._capture = self._open_capture()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name="frame-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A reconnect in progress may block for open_timeout_s inside FFmpeg: not waited for
            # (the reader drops what it opens once stopped), so Ctrl-C ends a run at once.
            self._thread.join(timeout=1.0 if self._opening else self.config.read_timeout_s + 5)
        if not self._opening:
            self._release_capture()

    @property
    def frames_dropped(self) -> int:
        return self._dropped

    @property
    def opened_at(self) -> float:
        """time.monotonic() when the source was opened: frame timestamps count from here."""
        return self._t0

    @property
    def frames_read(self) -> int:
        """Frames decoded from the device so far (delivered or dropped as superseded)."""
        return self._read_count

    @property
    def frames_stale(self) -> int:
        """Pictures from before a freeze that were dropped instead of handed out."""
        return self._stale

    # -- reader thread --------------------------------------------------------------
    def _read(self) -> tuple[np.ndarray | None, str]:
        """One new picture, or None and why: "timeout", "failed", "stale" or "repeat"."""
        if self._capture is None:
            return None, "failed"
        started = time.monotonic()
        ok, image = self._capture.read()
        if not ok or image is None:
            return None, "timeout" if time.monotonic() - started >= self.config.read_timeout_s else "failed"
        if time.monotonic() - started >= self.config.read_timeout_s:
            # The read timeout fired and FFmpeg handed out a picture left in the decoder.
            self._stale += 1
            return None, "stale"
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        gap = self._gap
        last = self._last_image
        if gap is not None and last is not None and image.shape == last.shape and np.array_equal(image, last):
            self._stale += 1
            gap.stale_dropped += 1
            return None, "repeat"
        return image, ""

    def _reader(self) -> None:
        failures = 0
        while not self._stop.is_set():
            image, why = self._read()
            if image is not None:
                failures = 0
                self._deliver(image, self._pts_s())
                continue
            gap = self._gap
            if why == "repeat" and gap is not None and gap.reopened_at is not None:
                if time.monotonic() - gap.reopened_at < self.config.read_timeout_s:
                    continue
                why = "frozen"  # only the old picture for a whole read timeout: reconnect again
            if gap is None:
                gap = self._start_gap(why)
            if why == "stale":
                gap.stale_dropped += 1
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
            self._opening = True
            try:
                capture = self._open_capture()
            except SourceError as exc:
                if not self._stop.is_set():
                    log.warning("%s", exc)
                continue
            finally:
                self._opening = False
            if self._stop.is_set():  # closed while connecting: nobody will release it
                capture.release()
                return
            self._capture = capture
            self.reconnects += 1
            self._pacer.reset()
            if self._gap is not None:
                self._gap.reconnects += 1
                self._gap.reopened_at = time.monotonic()
            log.info("reconnected to %s", self.name)

    def _pts_s(self) -> float | None:
        """The stream's presentation time of the frame just read, in seconds (None if unknown)."""
        try:
            pts_ms = float(self._capture.get(cv2.CAP_PROP_POS_MSEC))
        except (cv2.error, TypeError, ValueError):
            return None
        return pts_ms / 1000.0 if pts_ms >= 0 else None

    def _deliver(self, image: np.ndarray, pts_s: float | None = None) -> None:
        now = time.monotonic()
        due = self._pacer.due(now, pts_s)
        # The frame's stream time is its paced release time, not its arrival: frames that arrived
        # in a burst, a few ms apart, are 1/fps apart in the stream (tracking, the video's clock
        # and the events' stream_s follow the stream, not the network). Never backwards.
        stream_s = max(due - self._t0, self._last_stream_s + 1e-3)
        self._last_stream_s = stream_s
        frame = Frame(
            image=np.ascontiguousarray(image),
            index=self._read_count,
            timestamp_s=stream_s,
            source=self.name,
            captured_at=now,
        )
        self._read_count += 1
        self._last_image = frame.image
        notice = None
        if self._gap is not None:
            gap, self._gap = self._gap, None
            lost = frame.timestamp_s - gap.last_stream_s
            notice = {"status": "resumed", "stream_s": round(frame.timestamp_s, 3), "frame": frame.index,
                      "seconds_lost": round(lost, 3), "reconnects": gap.reconnects,
                      "stale_frames_dropped": gap.stale_dropped}
            log.info("%s resumed: %.1f s without new frames", self.name, lost)
        with self._cond:
            if notice is not None:
                self._notices.append(notice)
            self._latest = frame
            self._pending.append((due, frame))
            if len(self._pending) > MAX_PENDING:
                self._pending.popleft()
                self._dropped += 1
            self._cond.notify_all()

    def _start_gap(self, why: str) -> _Gap:
        latest = self._latest
        last_index = latest.index if latest is not None else -1
        last_s = latest.timestamp_s if latest is not None else 0.0
        self._gap = _Gap(last_index=last_index, last_stream_s=last_s)
        timeout = f"no new frame for {self.config.read_timeout_s:g} s"
        reason = {"timeout": timeout, "stale": timeout,
                  "frozen": "only repeats of the last picture", "failed": "read failed (stream ended or connection lost)"}
        with self._cond:
            self._notices.append({"status": "stalled", "stream_s": round(last_s, 3), "last_frame": last_index,
                                  "reason": reason.get(why, why)})
            self._cond.notify_all()
        return self._gap

    def _fail(self, error: SourceError) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # -- consumer ---------------------------------------------------------------------
    def _fresh(self) -> bool:
        return bool(self._pending) and self._pending[0][0] <= time.monotonic()

    def _take_due(self) -> Frame:
        """The newest frame whose release time has come; the due frames before it are skipped."""
        now = time.monotonic()
        frame = None
        while self._pending and self._pending[0][0] <= now:
            if frame is not None:
                self._dropped += 1  # the consumer never saw it
            frame = self._pending.popleft()[1]
        return frame

    def frames(self) -> Iterator[Frame]:
        # The consumer waits at most this long; the reader's own reconnect cycle is
        # bounded, so the wait covers a full reconnect series before giving up.
        patience = (self.config.read_timeout_s + self.config.reconnect_delay_s + self.config.open_timeout_s) * (
            self.config.max_reconnects + 1
        )
        deadline = time.monotonic() + patience
        while True:
            frame = None
            idle = False
            with self._cond:
                while not self._notices and not self._fresh() and self._error is None:
                    now = time.monotonic()
                    remaining = deadline - now
                    if remaining <= 0:
                        raise SourceError(f"no frames from {self.name} for {patience:.0f} s")
                    if self._pending:  # a frame is held for its release time: wait for that, not idle
                        self._cond.wait(timeout=min(remaining, max(self._pending[0][0] - now, 0.0)))
                        continue
                    if not self._cond.wait(timeout=min(remaining, 0.5)) and self.on_idle is not None:
                        idle = True
                        break
                notices = []
                if not idle:
                    notices, self._notices = self._notices, []
                if not notices and not idle:
                    if not self._fresh():
                        raise self._error
                    frame = self._take_due()
            if idle:
                # Outside the lock: the callback may write events, or raise to stop the consumer.
                self.on_idle()
                continue
            # Status changes go out first, in the consumer's thread, before the frame that follows them.
            for notice in notices:
                if self.on_status is not None:
                    self.on_status(notice)
            if frame is not None:
                yield frame
                deadline = time.monotonic() + patience
