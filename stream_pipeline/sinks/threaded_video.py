"""Encode behind: the annotated video encoded on a thread of its own.

`write()` hands the frame to a bounded queue and returns; colour conversion and x264
encoding (outside the GIL) overlap the next frame's detection. `close()` encodes every
queued frame before finalising, so nothing is lost on any exit path (end, Ctrl-C,
SIGTERM, error). A write error on the encoder thread is raised by the next `write()` or
by `close()`, as the plain sink would raise it.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from stream_pipeline.sinks.video import VideoSink

_END = object()


class ThreadedVideoSink(VideoSink):
    def __init__(self, *args, queue_frames: int = 8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.frames_queued = 0

    def _encode(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain: the failure is on its way up
            try:
                super().write(*item)
            except BaseException as exc:  # noqa: BLE001 - raised in the pipeline thread
                self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self.failed = True
            raise error

    def write(self, image: np.ndarray, timestamp_s: float | None = None) -> None:
        self._raise_pending()
        if self.failed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._encode, name="encode-behind", daemon=True)
            self._thread.start()
        self._queue.put((image, timestamp_s))
        self.frames_queued += 1

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(_END)
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        try:
            self._drain()
            pending, self._error = self._error, None
        finally:
            # Finalise what was encoded even when the encoder failed (keeps `.partial` then).
            super().close()
        if pending is not None:
            raise pending


def open_video_sink(path, fps: float, output, timed: bool = False) -> VideoSink:
    """The annotated-video sink for an `OutputConfig`: encoded behind when `encode_behind_frames` > 0
    (`timed`: frames shown at their stream timestamps, for live sources)."""
    if output.encode_behind_frames > 0:
        return ThreadedVideoSink(path, fps, output.codec, output.h264_preset, output.h264_crf, timed=timed,
                                 queue_frames=output.encode_behind_frames)
    return VideoSink(path, fps, output.codec, output.h264_preset, output.h264_crf, timed=timed)
