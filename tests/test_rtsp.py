"""Reading a real RTSP stream from a local server (aio-rtsp-toolkit, loopback only)."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def rtsp_url(tmp_path_factory, videos: Path):
    media = tmp_path_factory.mktemp("rtsp_media")
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
    yield f"rtsp://127.0.0.1:{port}/dashcam.mp4?play_count=0"
    proc.terminate()
    proc.wait(timeout=10)


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
