"""Annotated video writer: H.264 through PyAV (libx264), OpenCV mp4v as fallback.

OpenCV's pip wheels ship FFmpeg without an H.264 encoder, so H.264 (playable in every
browser and player) goes through PyAV. Frames are written as they come: if the run
stops early the file is still finalised by `close()` (context manager exit).

The file is written as `<name>.partial.mp4` and renamed to its final name once finalised,
so a video that could not be finished (disk full, killed process) never looks complete.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from stream_pipeline.core.errors import OutputError, UserError
from stream_pipeline.sinks.outdir import output_error

log = logging.getLogger(__name__)
TIMED_BASE = Fraction(1, 1000)  # timed (live) videos: presentation times in milliseconds
KEYFRAME_EVERY_MS = 2000  # timed videos: a keyframe (and so a fragment) every 2 s of stream time


class VideoSink:
    def __init__(
        self, path: str | Path, fps: float, codec: str = "auto", preset: str = "superfast", crf: int = 23,
        timed: bool = False,
    ) -> None:
        """`timed`: each frame is shown at its stream timestamp (a live source, processed slower than
        it sends, skips frames; at a fixed rate the video would play fast-forward)."""
        self.path = Path(path)
        self.partial_path = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
        self.failed = False
        self.preset, self.crf = preset, crf
        self.fps = fps if fps > 0 else 25.0
        self.requested = codec
        self.codec_name: str | None = None
        self.frames_written = 0
        self.timed = timed
        self._first_ts: float | None = None
        self._last_pts = -1
        self._last_key_pts: int | None = None
        self._size: tuple[int, int] | None = None
        self._av_container = None
        self._av_stream = None
        self._cv_writer: cv2.VideoWriter | None = None

    def __enter__(self) -> "VideoSink":
        # A run owns its output folder: an older video of the same name must not pass for this run's.
        try:
            self.path.unlink(missing_ok=True)
            self.partial_path.unlink(missing_ok=True)
        except OSError as exc:
            raise output_error(self.path, exc) from None
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open(self, width: int, height: int) -> None:
        self._size = (width, height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(self.path, exc) from None
        if self.requested in ("auto", "h264") and self._open_h264(width, height):
            return
        if self.requested == "h264":
            raise UserError("H.264 encoding requested (output.codec: h264) but libx264 is not available")
        writer = cv2.VideoWriter(str(self.partial_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            raise OutputError(f"cannot write video {self.partial_path}")
        self._cv_writer = writer
        self.codec_name = "mp4v (MPEG-4 part 2, OpenCV)"
        if self.requested == "auto":  # mp4v asked for by name is no fallback
            log.warning("H.264 encoder unavailable; writing %s with the fallback codec %s", self.path, self.codec_name)
        else:
            log.info("writing %s as %s", self.path, self.codec_name)

    def _open_h264(self, width: int, height: int) -> bool:
        try:
            import av
        except ImportError:
            return False
        try:
            # A live recording can run for hours and end by a kill or a power cut, before the
            # index a plain MP4 writes at the end: fragments keep what was written playable.
            # frag_duration: every 2 s of stream time also when frames are skipped (gop counts frames).
            options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "2000000"} \
                if self.timed else {}
            container = av.open(str(self.partial_path), mode="w", options=options)
        except OSError as exc:  # PyAV's errno errors are OSErrors: the folder, not the encoder
            raise output_error(self.partial_path, exc) from None
        try:
            stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        except (av.error.FFmpegError, ValueError) as exc:
            container.close()
            log.debug("libx264 unavailable: %s", exc)
            return False
        # yuv420p needs even dimensions; odd frames get one padded row/column.
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        if self.timed:
            stream.codec_context.time_base = TIMED_BASE
            stream.codec_context.gop_size = max(1, round(2 * self.fps))  # a fragment every ~2 s
        stream.options = {"preset": self.preset, "crf": str(self.crf)}
        if self.timed:
            # no B-frames: their reordering delay would start a fragmented file's clock late (0.8 s)
            stream.options = {**stream.options, "bf": "0"}
        self._av_container, self._av_stream = container, stream
        self.codec_name = "h264 (libx264)"
        log.info("writing %s as %s", self.path, self.codec_name)
        return True

    def write(self, image: np.ndarray, timestamp_s: float | None = None) -> None:
        if self.failed:
            return  # the first failure is on its way up
        height, width = image.shape[:2]
        if self._size is None:
            self._open(width, height)
        elif (width, height) != self._size:
            # Streams can change resolution mid-way (camera reconfigured); keep one size.
            image = cv2.resize(image, self._size)
        if self._av_stream is not None:
            import av

            if image.shape[1] % 2 or image.shape[0] % 2:
                image = cv2.copyMakeBorder(image, 0, image.shape[0] % 2, 0, image.shape[1] % 2, cv2.BORDER_REPLICATE)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            if self.timed:
                frame.pts, frame.time_base = self._pts(timestamp_s), TIMED_BASE
                # gop_size counts frames: with frames skipped to stay live, keyframes (where a
                # killed run's file can be played up to) came 9-16 s apart; force them by time
                if self._last_key_pts is None or frame.pts - self._last_key_pts >= KEYFRAME_EVERY_MS:
                    frame.pict_type = av.video.frame.PictureType.I
                    self._last_key_pts = frame.pts
            try:
                for packet in self._av_stream.encode(frame):
                    self._av_container.mux(packet)
            except OSError as exc:
                self.failed = True
                raise output_error(self.partial_path, exc) from None
        else:
            self._cv_writer.write(image)
        self.frames_written += 1

    def _pts(self, timestamp_s: float | None) -> int:
        """Milliseconds since the first frame; strictly increasing, as the container requires."""
        if timestamp_s is None:
            timestamp_s = (self._first_ts or 0.0) + self.frames_written / self.fps
        if self._first_ts is None:
            self._first_ts = timestamp_s
        pts = max(int(round((timestamp_s - self._first_ts) / TIMED_BASE)), self._last_pts + 1)
        self._last_pts = pts
        return pts

    def close(self) -> None:
        """Finalise the file and give it its final name; a video that cannot be finished keeps `.partial`."""
        opened = self._av_container is not None or self._cv_writer is not None
        error: OSError | None = None
        if self._av_container is not None:
            try:
                if not self.failed:
                    for packet in self._av_stream.encode():  # flush delayed frames
                        self._av_container.mux(packet)
            except OSError as exc:
                error = exc
            finally:
                try:
                    self._av_container.close()  # writes the index (moov): the file becomes playable
                except OSError as exc:
                    error = error or exc
                self._av_container = self._av_stream = None
        if self._cv_writer is not None:
            self._cv_writer.release()
            self._cv_writer = None
        if not opened or self.failed:
            return
        if error is None:
            try:
                os.replace(self.partial_path, self.path)
                return
            except OSError as exc:
                error = exc
        self.failed = True
        raise output_error(self.partial_path, error)
