"""Benchmark clips made locally from the shared footage (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

from stream_pipeline.core.errors import UserError


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "stream-pipeline" / "bench"


def looped_clip(source: Path, min_frames: int, out_dir: Path | None = None) -> tuple[Path, int]:
    """`source` repeated until it has at least `min_frames` frames, by remuxing its packets
    (no re-encoding, so decoding costs what the original costs). Cached by name and size."""
    import av

    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        frames = stream.frames or sum(1 for _ in probe.demux(stream) if _.size)
    if frames <= 0:
        raise UserError(f"cannot count the frames of {source}")
    loops = max(1, -(-min_frames // frames))
    if loops == 1:
        return source, frames
    out_dir = out_dir or cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}_{_identity(source)}_x{loops}.mp4"
    if target.is_file():
        return target, frames * loops
    partial = target.with_suffix(".partial.mp4")
    with av.open(str(partial), mode="w") as out:
        out_stream = None
        offset = 0
        for _ in range(loops):
            with av.open(str(source)) as inp:
                in_stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                last = 0
                for packet in inp.demux(in_stream):
                    if packet.dts is None:  # the demuxer's end-of-stream packet
                        continue
                    duration = packet.duration or 1
                    packet.pts = packet.pts + offset if packet.pts is not None else None
                    packet.dts += offset
                    last = max(last, (packet.pts if packet.pts is not None else packet.dts) + duration)
                    packet.stream = out_stream
                    out.mux(packet)
                offset = last
    os.replace(partial, target)
    return target, frames * loops


def _identity(source: Path) -> str:
    """Which file, in a cache name: two clips of one name in different folders, or a clip
    replaced by another, must not share a cached copy."""
    import hashlib

    stat = source.resolve().stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def resized_clip(source: Path, height: int, out_dir: Path | None = None) -> Path:
    """`source` re-encoded (H.264, crf 18) at `height` rows, same aspect ratio and frame rate;
    for measuring other resolutions with the same content. Cached by the source file and height."""
    import av
    import cv2

    height += height % 2  # H.264 in 4:2:0 needs even sizes
    out_dir = out_dir or cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}_{_identity(source)}_{height}p.mp4"
    if target.is_file():
        return target
    partial = target.with_suffix(".partial.mp4")
    with av.open(str(source)) as inp, av.open(str(partial), mode="w") as out:
        in_stream = inp.streams.video[0]
        width = int(round(in_stream.codec_context.width * height / in_stream.codec_context.height / 2)) * 2
        stream = out.add_stream("libx264", rate=in_stream.average_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        for frame in inp.decode(in_stream):
            image = cv2.resize(frame.to_ndarray(format="bgr24"), (width, height), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(partial, target)
    return target
