"""Common interface of every frame source."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator

from stream_pipeline.core.redaction import redact
from stream_pipeline.core.types import Frame

__all__ = ["CaptureSource", "FrameSource", "redact"]


class FrameSource(abc.ABC):
    """A context manager yielding `Frame`s.

    Files yield every frame in order; live sources yield the newest frame available
    (older unread frames are dropped so latency never grows).
    """

    name: str  # printable name (credentials redacted)
    is_live: bool
    # Called (in the consumer's thread, from `frames()`) with stream status changes such as
    # {"status": "stalled", ...}; the pipeline writes them as `stream` events.
    on_status: Callable[[dict], None] | None = None
    # Live sources: called (in the consumer's thread, from `frames()`) about every 0.5 s while no
    # frame arrives; serve uses it for its status events and to stop a camera that waits.
    on_idle: Callable[[], None] | None = None

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abc.abstractmethod
    def open(self) -> None:
        """Open the source or raise SourceError with a one-line reason."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    @property
    @abc.abstractmethod
    def fps(self) -> float:
        """Nominal frame rate (used for the output video and timestamps)."""

    @property
    def total_frames(self) -> int | None:
        """Frame count when known in advance (files), else None."""
        return None

    @property
    def frames_dropped(self) -> int:
        """Frames read from the device but skipped because a newer one arrived."""
        return 0


class CaptureSource(FrameSource):
    """A source backed by one `cv2.VideoCapture` (files, streams, webcams)."""

    def __init__(self, fps: float) -> None:
        self._capture = None  # cv2.VideoCapture while open
        self._fps = fps

    def _release_capture(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    @property
    def fps(self) -> float:
        return self._fps
