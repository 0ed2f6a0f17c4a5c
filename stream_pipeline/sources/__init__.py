"""Frame readers: video files, RTSP streams and webcams."""

from __future__ import annotations

from pathlib import Path

from stream_pipeline.core.config import SourceConfig
from stream_pipeline.sources.base import FrameSource, redact
from stream_pipeline.sources.file import VIDEO_SUFFIXES, VideoFileSource
from stream_pipeline.sources.live import LiveSource, parse_webcam

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def is_live(source: str) -> bool:
    return source.lower().startswith(LIVE_SCHEMES) or parse_webcam(source) is not None


def open_source(source: str | Path, config: SourceConfig | None = None) -> FrameSource:
    """Build the right (unopened) source for a CLI argument."""
    text = str(source)
    if is_live(text):
        return LiveSource(text, config)
    return VideoFileSource(text)


__all__ = ["FrameSource", "LiveSource", "VideoFileSource", "VIDEO_SUFFIXES", "open_source", "is_live", "redact"]
