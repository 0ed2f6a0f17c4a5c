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
# After a failure the decoder may hand out frames it held from before the damage, or skip some in
# silence: for this many seconds each frame's number comes from its own timestamp (stale ones are
# dropped). A stretch counts as damaged (warned, `frames_undecodable`) once this many frames decoded
# after it; the last frames a cut-off file flushes out after its first failure do not make one.
RECOVERY_S = 2.0
RESUMED_FRAMES = 3


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

    def _position(self, after: int) -> int | None:
        """The number of the frame just read, from its timestamp; None when the timestamp is not usable
        (missing, or nowhere near `after`, the last frame handed out)."""
        msec = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        if not msec or msec < 0:
            return None
        number = int(round(msec * self._fps / 1000.0))
        limit = MAX_UNDECODABLE_RUN + RECOVERY_S * self._fps
        return number if after - limit <= number <= after + limit else None

    def _skipped(self, first: int, end: int, lost: int) -> None:
        """A damaged stretch, frames first..end, `lost` of them not decoded, that decoding got past."""
        span = f"frame {first}" if first == end else f"frames {first}-{end}"
        also = "" if lost == end - first + 1 else f"{lost} of them, "
        log.warning("%s: %s could not be decoded (%sdamaged file), skipped; decoding goes on", self.path, span, also)
        self.frames_undecodable += lost

    def frames(self) -> Iterator[Frame]:
        if self._capture is None:
            raise RuntimeError("source is not open")
        last = -1  # number of the last frame handed out
        failed_run = recovering = 0
        pending: list[int] | None = None  # first, last, count of frames lost, until frames follow them
        since_gap = 0
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                if self._count and last + 1 + failed_run < self._count and failed_run < MAX_UNDECODABLE_RUN:
                    failed_run += 1  # perhaps a damaged stretch: read on
                    continue
                break
            number = last + 1 + failed_run
            if failed_run:
                recovering = int(RECOVERY_S * self._fps)
                failed_run = 0
            if recovering:
                recovering -= 1
                stamped = self._position(last)
                if stamped is not None:
                    if stamped <= last:
                        continue  # held from before the damage: already handed out or too late
                    number = stamped
            if number > last + 1:  # frames last+1 .. number-1 did not decode
                lost = number - 1 - last
                pending = [pending[0], number - 1, pending[2] + lost] if pending else [last + 1, number - 1, lost]
                since_gap = 0
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            self.frames_read = number + 1
            yield Frame(image=image, index=number, timestamp_s=number / self._fps, source=self.name)
            last = number
            if pending:
                since_gap += 1
                if since_gap >= RESUMED_FRAMES:
                    self._skipped(*pending)
                    pending = None
        if last < 0:
            raise SourceError(f"no decodable frames in {self.path} (corrupt or empty video)")
        # Containers over-announce: MP4 by a frame or two; MKV / TS / WebM / FLV estimate the count
        # from their duration (3 too many on a 2 s cut), so there only over half a second counts.
        slack = round(0.5 * self._fps) if self.path.suffix.lower() in ESTIMATED_COUNT_SUFFIXES else 0
        if self._count and last + 1 < self._count - max(2, slack):
            self.truncated = True
            log.warning("decoding of %s stopped at frame %d of %d (truncated or corrupt file)", self.path, last + 1,
                        self._count)
