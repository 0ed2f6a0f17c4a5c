"""Reading a real RTSP stream from a local server (aio-rtsp-toolkit, loopback only)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import count_video_frames, read_events, run_cli


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(media: Path, videos: Path) -> tuple[subprocess.Popen, str]:
    """Serve a copy of a real clip on loopback; returns (process, looping stream URL)."""
    media.mkdir(parents=True, exist_ok=True)
    # The server refuses files outside its root, so the clip is copied (not linked) there.
    shutil.copyfile(videos / "dashcam_vw_close.mp4", media / "dashcam.mp4")
    port, control = _free_port(), _free_port()
    server_bin = Path(sys.executable).with_name("rtsp-server")
    proc = subprocess.Popen(
        [str(server_bin), "--dir", str(media), "--host", "127.0.0.1", "--port", str(port), "--control-port", str(control)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("local RTSP server did not start")
            time.sleep(0.2)
    # play_count=0: the server loops the clip, like a camera that never stops.
    return proc, f"rtsp://127.0.0.1:{port}/dashcam.mp4?play_count=0"


@pytest.fixture(scope="module")
def rtsp_url(tmp_path_factory, videos: Path):
    proc, url = start_server(tmp_path_factory.mktemp("rtsp_media"), videos)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_slow_consumer_gets_the_newest_frame(rtsp_url: str):
    """A consumer slower than the camera skips frames instead of falling behind."""
    from stream_pipeline.core.config import SourceConfig
    from stream_pipeline.sources import LiveSource

    source = LiveSource(rtsp_url, SourceConfig(read_timeout_s=5))
    indices, lags = [], []
    with source:
        for frame in source.frames():
            indices.append(frame.index)
            time.sleep(0.25)  # a pipeline at 4 FPS against a ~30 FPS stream
            if len(indices) == 12:
                break
        # How old the frame handed out next is, relative to the newest frame read.
        newest = next(source.frames())
        lags.append(source.frames_read - 1 - newest.index)
    gaps = [b - a for a, b in zip(indices, indices[1:])]
    assert max(gaps[3:]) > 1 and source.frames_dropped > 0
    assert lags[0] <= 2  # no backlog: what we get is (nearly) the latest frame


def test_rtsp_stream_runs_live(tmp_path: Path, rtsp_url: str, no_brands_config: Path):
    out = tmp_path / "out"
    result = run_cli("run", rtsp_url, "--config", str(no_brands_config), "--out", str(out), "--max-frames", "60")
    assert result.returncode == 0, result.stderr
    events = read_events(out / "events.jsonl")
    start, end = events[0], events[-1]
    assert start["status"] == "started" and start["live"] is True
    assert end["status"] == "ended" and end["reason"] == "max-frames" and end["frames"] == 60
    assert count_video_frames(out / "annotated.mp4")[0] == 60
    vehicles = [e for e in events if e["event"] == "vehicle"]
    assert vehicles, "the dash-cam clip shows a VW right ahead"
    # Live timestamps are stream seconds since the start, increasing.
    assert all(0 <= v["first_seen_s"] <= v["last_seen_s"] for v in vehicles)
    assert any(v["class"] == "car" for v in vehicles)


def test_unreachable_stream_is_one_line_error(tmp_path: Path):
    config = tmp_path / "cfg.yaml"
    config.write_text("brands:\n  enabled: false\nsource:\n  open_timeout_s: 3\n")
    url = f"rtsp://127.0.0.1:{_free_port()}/nothing"
    started = time.monotonic()
    result = run_cli("run", url, "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [f"stream-pipeline: error: cannot open stream {url} (unreachable, refused or not a video stream)"]
    assert time.monotonic() - started < 60
    # The failure is in the event log too.
    assert read_events(tmp_path / "out" / "events.jsonl")[-1]["status"] == "error"


def test_lost_stream_finalises_outputs_and_fails_cleanly(tmp_path: Path, videos: Path):
    proc, url = start_server(tmp_path / "media", videos)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "brands:\n  enabled: false\nsource:\n  read_timeout_s: 2\n  open_timeout_s: 2\n"
        "  max_reconnects: 1\n  reconnect_delay_s: 0.5\n"
    )
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "stream_pipeline", "run", url, "--config", str(config), "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "DISPLAY"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "annotated.mp4").exists():
            time.sleep(0.5)
        time.sleep(3)  # some frames through the pipeline
    finally:
        proc.kill()  # the camera goes away
        proc.wait(timeout=10)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 3, stderr
    message = [line for line in stderr.splitlines() if line.startswith("stream-pipeline: error:")]
    assert len(message) == 1 and "lost" in message[0] and "outputs so far kept" in message[0]
    end = read_events(out / "events.jsonl")[-1]
    assert end["status"] == "error" and end["frames"] > 0
    assert count_video_frames(out / "annotated.mp4")[0] == end["frames"]
