"""Live-source benchmarks on a local RTSP server (aio-rtsp-toolkit's `rtsp-server`, the one
the tests use, from the `test` extra) playing a clip in a loop at its own frame rate.

Latency (`benchmark --latency-seconds N`): the server sends stream frame k at
`origin + k / fps`; the reader numbers every decoded frame, so a frame's capture time is
`origin + index / fps`, with `origin` the earliest `received - index / fps` seen (the
least-delayed frame fixes the server's clock; loopback transport is then counted as 0).
Capture-to-overlay latency = the time the overlay was drawn on the frame minus its
capture time: it includes the reader's queueing, decoding, waiting for the pipeline and
the pipeline itself. Receive-to-overlay (from the reader's hand-over) is reported too.

Soak (`benchmark --soak-minutes N`): `stream-pipeline run` on the stream as a separate
process; RSS of its process tree sampled every few seconds; start (first frame), warm
(after 10 % of the time), peak and end are reported; the run is then stopped with SIGTERM
(clean finish, exit 143).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from stream_pipeline.core.errors import UserError
from stream_pipeline.core.observer import RunObserver
from stream_pipeline.core.paths import PROJECT_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRtspServer:
    """`rtsp-server` on 127.0.0.1 serving one clip in a loop (context manager)."""

    def __init__(self, clip: Path, work: Path) -> None:
        self.clip, self.media = clip, work / "media"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "LocalRtspServer":
        server = shutil.which("rtsp-server") or str(Path(sys.executable).with_name("rtsp-server"))
        if not Path(server).exists():
            raise UserError("live benchmarks need aio-rtsp-toolkit's rtsp-server (pip install 'aio-rtsp-toolkit[server]')")
        self.media.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.clip, self.media / "clip.mp4")  # the server serves only files under its root
        self.port = _free_port()
        self.proc = subprocess.Popen([server, "--dir", str(self.media), "--host", "127.0.0.1", "--port", str(self.port),
                                      "--control-port", str(_free_port())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise UserError("local RTSP server did not start") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/clip.mp4?play_count=0"


def retimed_clip(source: Path, fps: float, out_dir: Path) -> Path:
    """`source` with its timestamps rescaled to `fps` (same pictures, no re-encoding)."""
    import av

    target = out_dir / f"{source.stem}_{fps:g}fps.mp4"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as inp, av.open(str(target), mode="w") as out:
        in_stream = inp.streams.video[0]
        factor = Fraction(in_stream.average_rate) / Fraction(fps).limit_denominator(1001)
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue
            packet.pts = int(packet.pts * factor) if packet.pts is not None else None
            packet.dts = int(packet.dts * factor)
            if packet.duration:
                packet.duration = int(packet.duration * factor)
            packet.stream = out_stream
            out.mux(packet)
    return target


class OverlayClock(RunObserver):
    """Records, per frame, when it was received and when its overlay was drawn."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float]] = []  # (index, received, drawn)

    def draw(self, image: np.ndarray, frame) -> None:
        if frame.captured_at is not None:
            self.rows.append((frame.index, frame.captured_at, time.monotonic()))


def latency_run(clip: Path, fps: float, seconds: float, config, work: Path) -> dict:
    from stream_pipeline.pipeline import Pipeline

    stream_clip = retimed_clip(clip, fps, work) if abs(_clip_fps(clip) - fps) > 0.01 else clip
    pipeline = Pipeline(config)
    clock = OverlayClock()
    with LocalRtspServer(stream_clip, work) as server:
        started = time.monotonic()
        summary = pipeline.run(server.url, work / "latency-run", extra_observers=[clock],
                               should_stop=lambda: time.monotonic() - started > seconds)
    rows = np.array(clock.rows, dtype=np.float64)
    if len(rows) < 10:
        raise UserError(f"latency run processed only {len(rows)} frames")
    rows = rows[len(rows) // 10:]  # warm-up (first inferences, reader start) left out
    index, received, drawn = rows[:, 0], rows[:, 1], rows[:, 2]
    origin = float(np.min(received - index / fps))
    capture_to_overlay = 1000 * (drawn - (origin + index / fps))
    receive_to_overlay = 1000 * (drawn - received)

    def stats(values: np.ndarray) -> dict:
        return {"median": round(float(np.median(values)), 1), "p95": round(float(np.percentile(values, 95)), 1),
                "max": round(float(values.max()), 1)}

    return {"clip": str(stream_clip), "input_fps": fps, "seconds": round(summary.elapsed_s, 1),
            "frames_processed": summary.frames, "frames_dropped_to_stay_live": summary.frames_dropped,
            "processing_fps": round(summary.fps, 2),
            "capture_to_overlay_ms": stats(capture_to_overlay), "receive_to_overlay_ms": stats(receive_to_overlay)}


def _clip_fps(clip: Path) -> float:
    import cv2

    capture = cv2.VideoCapture(str(clip))
    try:
        return float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()


def soak_run(clip: Path, minutes: float, config_path: str | None, work: Path, sample_s: float = 5.0) -> dict:
    """`stream-pipeline run` on a looping local stream for `minutes`; RSS of its process tree over time."""
    import psutil

    from stream_pipeline.bench.compare import _tree_rss

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    with LocalRtspServer(clip, work) as server:
        command = [sys.executable, "-m", "stream_pipeline", "run", server.url, "--out", str(work / "soak-run"), "--no-progress"]
        if config_path:
            command += ["--config", str(config_path)]
        log_path = work / "soak.log"
        with open(log_path, "wb") as log:
            child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        samples: list[tuple[float, float]] = []  # (seconds since first frame, MB)
        first_frame_at = None
        deadline = None
        try:
            while child.poll() is None:
                now = time.monotonic()
                if first_frame_at is None and b"progress:" in log_path.read_bytes():
                    first_frame_at, deadline = now, now + 60 * minutes
                if first_frame_at is not None:
                    samples.append((now - first_frame_at, _tree_rss(proc) / 2**20))
                    if now >= deadline:
                        break
                time.sleep(sample_s if first_frame_at is not None else 0.5)
        finally:
            if child.poll() is None:
                # A clean stop (video finalised, records written). SIGTERM, not SIGINT: a benchmark
                # started in the background (`cmd &`) passes SIGINT on as ignored.
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(120)
                except subprocess.TimeoutExpired:
                    child.kill()
    if len(samples) < 3:
        raise UserError(f"soak run ended early (exit {child.returncode}); see {log_path}")
    times = np.array([t for t, _ in samples])
    rss = np.array([m for _, m in samples])
    warm = float(rss[np.searchsorted(times, 0.1 * times[-1])])
    return {"minutes": round(float(times[-1]) / 60, 2), "samples": len(samples), "exit_code": child.returncode,
            "rss_start_mb": round(float(rss[0]), 1), "rss_warm_mb": round(warm, 1), "rss_peak_mb": round(float(rss.max()), 1),
            "rss_end_mb": round(float(rss[-1]), 1), "growth_end_vs_warm_pct": round(float(100 * (rss[-1] / warm - 1)), 2),
            # The trend: still rising at the end, or levelled off?
            "rss_by_tenth_mb": [round(float(rss[np.searchsorted(times, k / 10 * times[-1])]), 1) for k in range(1, 10)]}


def work_dir(keep: str | None):
    """A kept folder, or a temporary one removed afterwards."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        return _Kept(path)
    return tempfile.TemporaryDirectory(prefix="sp-bench-")


class _Kept:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> str:
        return str(self.path)

    def __exit__(self, *exc) -> None:
        pass
