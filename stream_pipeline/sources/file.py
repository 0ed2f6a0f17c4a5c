"""Video files: every frame, in order."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2

from stream_pipeline.core.errors import SourceError
from stream_pipeline.core.types import Frame
from stream_pipeline.sources.base import CaptureSource

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".webm", ".wmv", ".flv"}
DEFAULT_FPS = 25.0


ESTIMATED_COUNT_SUFFIXES = {".mkv", ".ts", ".m2ts", ".mts", ".webm", ".flv"}
# A damaged stretch in the middle of a recording fails to decode for some frames, then decoding
# resumes; a file cut off fails for good. So failed reads short of the announced frame count are
# retried, up to this many in a row, before the rest of the file is given up.
MAX_UNDECODABLE_RUN = 300


def _why_unopenable(path: Path) -> str:
    """Why OpenCV could not open a file, in a user's words: PyAV (already a dependency) reads the
    container, so a recording with sound only is told apart from a damaged file."""
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                kinds = sorted({stream.type for stream in container.streams})
                return f"no video stream: {', '.join(kinds)} only" if kinds else "no video stream"
    except Exception:  # noqa: BLE001 - any failure to read it is the generic answer below
        pass
    return "unsupported or corrupt"


def check_readable(path: str | Path) -> None:
    """Raise SourceError unless the file opens and decodes a first frame: checked before a run
    clears the previous one in its output folder (--overwrite), which a bad input must not cost."""
    source = VideoFileSource(path)
    source.open()
    try:
        next(iter(source.frames()), None)
    finally:
        source.close()


class VideoFileSource(CaptureSource):
    is_live = False

    def __init__(self, path: str | Path) -> None:
        super().__init__(DEFAULT_FPS)
        self.path = Path(path)
        self.name = str(self.path)
        self._count: int | None = None
        self.frames_read = 0
        # Set when decoding stopped before the container's announced frame count.
        self.truncated = False
        # Frames of damaged stretches that could not be decoded and were skipped (decoding went on).
        self.frames_undecodable = 0

    def open(self) -> None:
        if not self.path.exists():
            raise SourceError(f"input file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"input is not a file: {self.path}")
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open video ({_why_unopenable(self.path)}): {self.path}")
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and 1.0 <= fps <= 1000.0 else DEFAULT_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._count = count if count > 0 else None
        self._capture = capture

    def close(self) -> None:
        self._release_capture()

    @property
    def total_frames(self) -> int | None:
        return self._count

    def frames(self) -> Iterator[Frame]:
        if self._capture is None:
            raise RuntimeError("source is not open")
        index = decoded = failed_run = 0
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                if self._count and index < self._count and failed_run < MAX_UNDECODABLE_RUN:
                    failed_run += 1  # perhaps a damaged stretch: the frame is counted, not shown
                    index += 1
                    continue
                break
            if failed_run:
                log.warning("%s: frames %d-%d could not be decoded (damaged file), skipped; decoding goes on",
                            self.path, index - failed_run, index - 1)
                self.frames_undecodable += failed_run
                failed_run = 0
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            self.frames_read = index + 1
            decoded += 1
            yield Frame(image=image, index=index, timestamp_s=index / self._fps, source=self.name)
            index += 1
        index -= failed_run  # failures up to the end: the file ends there, nothing was skipped
        if decoded == 0:
            raise SourceError(f"no decodable frames in {self.path} (corrupt or empty video)")
        # Containers over-announce: MP4 by a frame or two; MKV / TS / WebM / FLV estimate the count
        # from their duration (3 too many on a 2 s cut), so there only over half a second counts.
        slack = round(0.5 * self._fps) if self.path.suffix.lower() in ESTIMATED_COUNT_SUFFIXES else 0
        if self._count and index < self._count - max(2, slack):
            self.truncated = True
            log.warning("decoding of %s stopped at frame %d of %d (truncated or corrupt file)", self.path, index, self._count)
