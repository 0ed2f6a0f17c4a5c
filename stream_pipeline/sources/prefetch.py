"""Decode ahead: a file source read on a thread of its own into a bounded queue.

Decoding (FFmpeg, outside the GIL) then overlaps detection instead of waiting for it.
Every frame is still delivered once and in order; the queue bounds memory. Live sources
already read on their own thread (newest frame wins) and are not wrapped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from stream_pipeline.core.types import Frame
from stream_pipeline.sources.base import FrameSource

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class PrefetchSource(FrameSource):
    """Wraps a file source; `frames()` yields what a reader thread decoded ahead."""

    def __init__(self, inner: FrameSource, depth: int = 8) -> None:
        self.inner = inner
        self.depth = max(1, depth)
        self.name = inner.name
        self.is_live = inner.is_live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str):
        # truncated, frames_read, path...: whatever the wrapped source reports.
        return getattr(self.inner, name)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self._halt()
        self.inner.close()

    @property
    def fps(self) -> float:
        return self.inner.fps

    @property
    def total_frames(self) -> int | None:
        return self.inner.total_frames

    @property
    def frames_dropped(self) -> int:
        return self.inner.frames_dropped

    def _read(self, frames: queue.Queue) -> None:
        def put(item) -> bool:
            while not self._stop.is_set():
                try:
                    frames.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for frame in self.inner.frames():
                if not put(frame):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(exc))
            return
        put(_END)

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def frames(self) -> Iterator[Frame]:
        frames: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, args=(frames,), name="decode-ahead", daemon=True)
        self._thread.start()
        try:
            while True:
                item = frames.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            # The consumer stopped (end, max-frames, Ctrl-C, error): the reader stops too.
            self._halt()


def decode_ahead(source: FrameSource, depth: int) -> FrameSource:
    """`source` read ahead by `depth` frames (files only; 0 = read in the caller's thread)."""
    if depth <= 0 or source.is_live:
        return source
    return PrefetchSource(source, depth)
