"""One camera of `serve`: a source that is retried with backoff, its live figures, its thread.

`CameraSource` wraps the run's own sources (the live reader keeps the newest frame and
reconnects by itself, `source.max_reconnects` times); when that reader gives up, or the camera
cannot be opened at all, the camera waits `retry.initial_s`, doubling up to `retry.max_s`, and
opens it again, while the other cameras carry on. Frame numbers and stream seconds run on across
reopenings, so the camera's output folder is one continuous run, with `stalled` / `resumed` events
around each gap. Every `status_interval_s` the camera writes a `status` event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from stream_pipeline.core.config import PipelineConfig
from stream_pipeline.core.errors import SourceError
from stream_pipeline.core.redaction import redact
from stream_pipeline.core.types import Frame
from stream_pipeline.pipeline import Pipeline, ProgressCallback, RunSummary
from stream_pipeline.serve.config import RetryConfig
from stream_pipeline.sources import FrameSource, is_live, open_source

log = logging.getLogger(__name__)

FPS_WINDOW_S = 5.0
DEFAULT_FPS = 25.0


@dataclass
class CameraStats:
    """What the status table and the `status` events show; written by the camera's thread only."""

    name: str
    state: str = "starting"  # starting | running | stalled | retrying | ended | stopped | failed
    frames: int = 0
    vehicles: int = 0
    frames_dropped: int = 0
    retries: int = 0
    error: str | None = None
    last_frame_at: float | None = None  # monotonic time the newest frame was captured
    started_at: float = field(default_factory=time.monotonic)
    _ticks: deque = field(default_factory=lambda: deque(maxlen=256))  # (monotonic time, frames), newest last
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100_000))
    summary: RunSummary | None = None

    @property
    def fps(self) -> float:
        """Frames processed per second over the last few seconds."""
        # Read-only (a copy taken in one C call): the status table's thread reads it too.
        now, ticks = time.monotonic(), list(self._ticks)
        recent = [tick for tick in ticks if now - tick[0] <= FPS_WINDOW_S] or ticks[-1:]
        if len(recent) < 2:
            return 0.0
        (t0, f0), (_, f1) = recent[0], recent[-1]
        return (f1 - f0) / (now - t0) if now > t0 else 0.0

    @property
    def last_frame_age_s(self) -> float | None:
        return None if self.last_frame_at is None else time.monotonic() - self.last_frame_at

    def latency_ms(self, recent: int = 50) -> float | None:
        """Median capture-to-processed delay over the last `recent` frames."""
        if not self.latencies_ms:
            return None
        values = sorted(list(self.latencies_ms)[-recent:])
        return values[len(values) // 2]

    def event(self) -> dict:
        age = self.last_frame_age_s
        latency = self.latency_ms()
        return {"event": "status", "camera": self.name, "state": self.state, "frames": self.frames,
                "fps": round(self.fps, 2), "vehicles": self.vehicles, "frames_dropped": self.frames_dropped,
                "last_frame_age_s": None if age is None else round(age, 3),
                "latency_ms": None if latency is None else round(latency, 1), "retries": self.retries,
                "error": self.error}


class CameraProgress(ProgressCallback):
    """The pipeline's per-frame progress, into the camera's figures."""

    def __init__(self, stats: CameraStats, source: "CameraSource") -> None:
        self.stats = stats
        self.source = source

    def update(self, frames: int, vehicles: int, fps: float) -> None:
        now = time.monotonic()
        stats = self.stats
        stats.frames, stats.vehicles = frames, vehicles
        stats._ticks.append((now, frames))
        if self.source.captured_at is not None:
            stats.latencies_ms.append(1000 * (now - self.source.captured_at))


class CameraSource(FrameSource):
    """The camera's frames, across reopenings; waits and reports while there are none."""

    def __init__(self, stats: CameraStats, source: str, config: PipelineConfig, retry: RetryConfig,
                 stop: threading.Event, status_interval_s: float) -> None:
        self.stats = stats
        self.url = source
        self.name = redact(source)
        self.is_live = is_live(source)
        self.config = config
        self.retry = retry
        self.stop = stop
        self.status_interval_s = status_interval_s
        self._inner: FrameSource | None = None
        self._open_error: SourceError | None = None
        self._fps = DEFAULT_FPS
        self._t0 = time.monotonic()
        self._index_offset = 0  # frames of the earlier openings
        self._last_index = -1
        self._last_stream_s = 0.0
        self._gap_open = False
        self._gap_from = -1  # last frame before the open gap
        self._gap_attempts = 0
        self._dropped_before = 0
        self._next_status = time.monotonic() + status_interval_s
        self.captured_at: float | None = None

    # -- FrameSource ---------------------------------------------------------------
    def open(self) -> None:
        # Never fails: a camera that is away at the start is retried like one lost later.
        try:
            self._open_inner()
        except SourceError as exc:
            self._open_error = exc

    def close(self) -> None:
        self._close_inner()

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def total_frames(self) -> int | None:
        return self._inner.total_frames if self._inner is not None and not self.is_live else None

    @property
    def frames_dropped(self) -> int:
        return self._dropped_before + (self._inner.frames_dropped if self._inner is not None else 0)

    @property
    def truncated(self) -> bool:
        return bool(getattr(self._inner, "truncated", False))

    @property
    def frames_undecodable(self) -> int:
        return int(getattr(self._inner, "frames_undecodable", 0) or 0)

    def frames(self) -> Iterator[Frame]:
        failures = 0
        while True:
            if self._inner is None:
                error = self._open_error
                self._open_error = None
                if error is None:
                    try:
                        self._open_inner()
                    except SourceError as exc:
                        error = exc
                if error is not None:
                    failures += 1
                    self._gave_up_or_wait(error, failures)
                    continue
            inner = self._inner
            opened_at = getattr(inner, "opened_at", self._t0)
            try:
                for frame in inner.frames():
                    failures = 0
                    yield self._deliver(frame, opened_at)
            except SourceError as exc:
                self._index_offset += getattr(inner, "frames_read", 0)
                self._close_inner()
                failures += 1
                self._gave_up_or_wait(exc, failures)
                continue
            # A file's end (a live reader never ends by itself).
            self.stats.state = "ended"
            return

    # -- internals -------------------------------------------------------------------
    def _open_inner(self) -> None:
        inner = open_source(self.url, self.config.source)
        inner.on_status = self._forward_status
        inner.on_idle = self._idle
        inner.open()
        self._inner = inner
        if self._index_offset == 0 and self._last_index < 0:
            self._fps = inner.fps or DEFAULT_FPS

    def _close_inner(self) -> None:
        if self._inner is not None:
            self._dropped_before += self._inner.frames_dropped
            try:
                self._inner.close()
            finally:
                self._inner = None

    def _gave_up_or_wait(self, error: SourceError, failures: int) -> None:
        """Report the failure; raise it when the attempts are spent, else wait the backoff."""
        stats = self.stats
        stats.error = str(error)
        if not self.is_live:  # a video file that cannot be read will not become readable by waiting
            stats.state = "failed"
            raise error
        if not self._gap_open:
            self._emit({"status": "stalled", "stream_s": round(self._last_stream_s, 3),
                        "last_frame": self._last_index, "reason": str(error)})
            self._gap_open, self._gap_from = True, self._last_index
        if self.retry.max_attempts is not None and failures > self.retry.max_attempts:
            stats.state = "failed"
            raise SourceError(f"{error} (gave up after {self.retry.max_attempts} retries)")
        delay = min(self.retry.max_s, self.retry.initial_s * 2 ** min(failures - 1, 40))  # no float overflow on a camera away for days
        stats.state, stats.retries = "retrying", stats.retries + 1
        self._gap_attempts += 1
        log.warning("camera %s: %s; retry %d in %.0f s", stats.name, error, failures, delay)
        deadline = time.monotonic() + delay
        while True:
            self._idle()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stop.wait(min(remaining, 0.5))

    def _deliver(self, frame: Frame, opened_at: float) -> Frame:
        index = frame.index + self._index_offset
        if self.is_live:
            stream_s = opened_at + frame.timestamp_s - self._t0
            # latency counts from the frame's arrival (jitter buffer's hold included); its stream
            # time is the buffer's paced release
            captured = frame.captured_at if frame.captured_at is not None else opened_at + frame.timestamp_s
        else:
            captured, stream_s = time.monotonic(), frame.timestamp_s
        if self._gap_open and index > self._gap_from:
            # The first new frame after a gap the inner reader did not close itself (reopened here);
            # a frame read before the gap may still come out after the `stalled` notice.
            self._emit({"status": "resumed", "stream_s": round(stream_s, 3), "frame": index,
                        "seconds_lost": round(stream_s - self._last_stream_s, 3), "reconnects": self._gap_attempts,
                        "stale_frames_dropped": 0})
            log.info("camera %s resumed", self.stats.name)
            self._gap_open, self._gap_attempts = False, 0
        self._last_index, self._last_stream_s = index, stream_s
        self.captured_at = captured
        stats = self.stats
        stats.last_frame_at = captured
        stats.state, stats.error = "running", None
        stats.frames_dropped = self.frames_dropped
        self._status_if_due()
        return replace(frame, index=index, timestamp_s=stream_s, source=self.name)

    def _forward_status(self, notice: dict) -> None:
        """The live reader's own gap notices, in this camera's frame numbers and stream seconds."""
        offset_s = getattr(self._inner, "opened_at", self._t0) - self._t0
        notice = dict(notice)
        for key in ("frame", "last_frame"):
            if key in notice and notice[key] >= 0:
                notice[key] += self._index_offset
        if "stream_s" in notice:
            notice["stream_s"] = round(notice["stream_s"] + offset_s, 3)
        if notice.get("status") == "stalled":
            if self._gap_open:
                return  # already reported
            self._gap_open, self._gap_from = True, notice.get("last_frame", self._last_index)
            self.stats.state = "stalled"
        elif notice.get("status") == "resumed":
            self._gap_open, self._gap_attempts = False, 0
        self._emit(notice)

    def _idle(self) -> None:
        """While no frame arrives: the status events go on, and a stop is obeyed."""
        if self.stop.is_set():
            raise KeyboardInterrupt  # the pipeline finalises the camera's outputs as for Ctrl-C
        self.stats.frames_dropped = self.frames_dropped
        self._status_if_due()

    def _status_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.status_interval_s
            self._emit(self.stats.event())

    def _emit(self, notice: dict) -> None:
        # The pipeline writes each notice as a `stream` event; a notice naming its own event type
        # (`status`) keeps it.
        if self.on_status is not None:
            self.on_status(notice)


class CameraWorker:
    """The thread that runs one camera through the pipeline into its output folder."""

    def __init__(self, name: str, source: str, config: PipelineConfig, pipeline: Pipeline, out_dir: Path,
                 retry: RetryConfig, stop: threading.Event, status_interval_s: float, max_frames: int | None) -> None:
        self.name = name
        self.out_dir = out_dir
        self.pipeline = pipeline
        self.max_frames = max_frames
        self.stop = stop
        self.stats = CameraStats(name)
        self.source = CameraSource(self.stats, source, config, retry, stop, status_interval_s)
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        stats = self.stats
        try:
            summary = self.pipeline.run(self.source, self.out_dir, max_frames=self.max_frames,
                                        progress=CameraProgress(stats, self.source), should_stop=self.stop.is_set,
                                        camera=self.name)
            stats.summary = summary
            if summary.error:
                self.error, stats.state = summary.error, "failed"
            elif summary.stopped_by == "interrupted":
                stats.state = "stopped"
            else:
                stats.state = "ended"
        except Exception as exc:  # noqa: BLE001 - one camera's failure never stops the others
            self.error = redact(str(exc)) or type(exc).__name__
            stats.state, stats.error = "failed", self.error
            log.error("camera %s failed: %s", self.name, self.error)
        finally:
            stats.error = self.error or stats.error
            from stream_pipeline.runner import _write_report

            if (self.out_dir / "events.jsonl").is_file():
                _write_report(self.out_dir, folder_mode=True)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()
