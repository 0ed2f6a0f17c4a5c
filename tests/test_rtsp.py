"""Reading a real RTSP stream from a local server (aio-rtsp-toolkit, loopback only)."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import count_video_frames, read_events, run_cli
from tests.live_helpers import DEADLINE_S, CliRun, RtspServer, free_port, read_events_so_far, wait_for_event


@pytest.fixture(scope="module")
def rtsp_server(tmp_path_factory, videos: Path):
    server = RtspServer(tmp_path_factory.mktemp("rtsp_media"), videos)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rtsp_url(rtsp_server: RtspServer) -> str:
    return rtsp_server.url()


def _wait_until(condition, what: str, timeout: float = DEADLINE_S) -> None:
    """Bounded polling on a counter the source itself exposes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_slow_consumer_gets_the_newest_frame(rtsp_url: str):
    """A consumer slower than the camera skips frames instead of falling behind."""
    from stream_pipeline.core.config import SourceConfig
    from stream_pipeline.sources import LiveSource

    # No jitter buffer: this is about newest-wins (pacing: tests/test_webcam.py, test_pacing.py).
    source = LiveSource(rtsp_url, SourceConfig(read_timeout_s=5, jitter_buffer_ms=0))
    with source:
        frames = source.frames()
        frame = next(frames)
        indices = [frame.index]
        for _ in range(10):
            # Slower than the camera by construction: the next frame is asked for only once the
            # reader has decoded 5 more (no sleep, so a busy machine cannot change the outcome).
            _wait_until(lambda: source.frames_read >= indices[-1] + 6, "the reader to decode 5 more frames")
            newest_read = source.frames_read - 1
            frame = next(frames)
            # No backlog: the frame handed out is the newest one read (the one being
            # published at that instant may still be in flight).
            assert frame.index >= newest_read - 1, (frame.index, newest_read)
            indices.append(frame.index)
    gaps = [b - a for a, b in zip(indices, indices[1:])]
    assert min(gaps) >= 4 and source.frames_dropped > 0, gaps


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
    # The video shows each frame at its stream time (never fast-forward when frames were skipped).
    import av

    with av.open(str(out / "annotated.mp4")) as container:
        shown = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert shown == sorted(shown) and shown[-1] >= max(v["last_seen_s"] for v in vehicles) - shown[0] - 0.05


def test_unreachable_stream_is_one_line_error(tmp_path: Path):
    config = tmp_path / "cfg.yaml"
    config.write_text("brands:\n  enabled: false\nsource:\n  open_timeout_s: 3\n")
    port = free_port()
    url = f"rtsp://admin:Unre4chable@127.0.0.1:{port}/nothing?Password=Unre4chable"
    shown = f"rtsp://admin:***@127.0.0.1:{port}/nothing?Password=***"
    # No wall-clock bound here: a refused connection fails at once, and run_cli's timeout catches a hang.
    result = run_cli("run", url, "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [f"stream-pipeline: error: cannot open stream {shown} (unreachable, refused or not a video stream)"]
    # The failure is in the event log too, with the credentials masked there as well.
    assert read_events(tmp_path / "out" / "events.jsonl")[-1]["status"] == "error"
    assert_secret_nowhere("Unre4chable", [result.stdout, result.stderr], tmp_path / "out")


def test_lost_stream_finalises_outputs_and_fails_cleanly(tmp_path: Path, videos: Path):
    server = RtspServer(tmp_path / "media", videos)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "brands:\n  enabled: false\nsource:\n  read_timeout_s: 2\n  open_timeout_s: 2\n"
        "  max_reconnects: 1\n  reconnect_delay_s: 0.5\n"
    )
    out = tmp_path / "out"
    run = CliRun("run", server.url(), "--config", str(config), "--out", str(out), "--no-progress")
    try:
        run.wait_for_frames(5)  # the program says frames went through the pipeline
    finally:
        server.stop()  # the camera goes away
    code, _, stderr = run.finish()
    assert code == 3, stderr
    message = [line for line in stderr.splitlines() if line.startswith("stream-pipeline: error:")]
    assert len(message) == 1 and "lost" in message[0] and "outputs so far kept" in message[0]
    events = read_events(out / "events.jsonl")
    end = events[-1]
    assert end["status"] == "error" and end["frames"] >= 5
    assert [e["status"] for e in events if e["event"] == "stream"][-2] == "stalled"  # the gap was reported
    assert count_video_frames(out / "annotated.mp4")[0] == end["frames"]


def assert_secret_nowhere(secret: str, texts: list[str], folder: Path) -> None:
    """Not in the console output, not in any file name, not in any file's bytes."""
    for text in texts:
        assert secret not in text, text
    needle = secret.encode()
    files = [p for p in folder.rglob("*")]
    assert files, f"no outputs in {folder}"
    for path in files:
        assert secret not in str(path.relative_to(folder)), path
        if path.is_file():
            assert needle not in path.read_bytes(), f"{secret!r} in {path}"


SECRET = "Xq7S3cr3t"


@pytest.mark.parametrize(
    "userinfo, query",
    [
        (f":{SECRET}", f"password={SECRET}&pass={SECRET}&pwd={SECRET}"),  # no user name
        (f"admin:{SECRET}", f"user=admin&PASSWD={SECRET}&Token={SECRET}&AUTH={SECRET}"),
    ],
    ids=["password-only-userinfo", "user-and-password"],
)
def test_credentials_never_reach_any_output(tmp_path: Path, rtsp_server: RtspServer, no_brands_config: Path,
                                            userinfo: str, query: str):
    out = tmp_path / "out"
    url = rtsp_server.url(userinfo, query)
    result = run_cli("run", url, "--config", str(no_brands_config), "--out", str(out), "--max-frames", "30")
    assert result.returncode == 0, result.stderr
    events = read_events(out / "events.jsonl")
    assert events[0]["source"].count("***") == 1 + query.count("=") - query.count("user=")
    assert events[-1]["frames"] == 30 and any(e["event"] == "vehicle" for e in events)
    assert_secret_nowhere(SECRET, [result.stdout, result.stderr], out)


def test_frozen_stream_hands_out_no_stale_frames(tmp_path: Path, videos: Path):
    """The server hangs (SIGSTOP): nothing from before the freeze comes out late; the gap is reported."""
    from stream_pipeline.core.config import SourceConfig
    from stream_pipeline.sources import LiveSource

    server = RtspServer(tmp_path / "media", videos)
    config = SourceConfig(read_timeout_s=2, open_timeout_s=2, reconnect_delay_s=0.5, max_reconnects=100)
    source = LiveSource(server.url(), config)
    notices: list[dict] = []

    def on_status(notice: dict) -> None:
        notices.append(notice)
        if notice["status"] == "stalled":
            server.thaw()  # the camera comes back once the program has reported the gap

    source.on_status = on_status
    delivered: list[tuple[int, float]] = []
    # Without the stall report the test would wait forever on a frozen server: thaw it anyway.
    safety = threading.Timer(DEADLINE_S / 3, server.thaw)
    safety.start()
    try:
        with source:
            for frame in source.frames():
                delivered.append((frame.index, frame.timestamp_s))
                if len(delivered) == 20:
                    server.freeze()
                resumed_at = [n["frame"] for n in notices if n["status"] == "resumed"]
                if (resumed_at and frame.index > resumed_at[0] + 10) or len(delivered) > 500:
                    break
    finally:
        safety.cancel()
        server.stop()
    statuses = [n["status"] for n in notices]
    assert statuses[:2] == ["stalled", "resumed"], notices
    stalled, resumed = notices[0], notices[1]
    assert stalled["last_frame"] >= delivered[19][0]
    # No frame handed out inside the gap: neither the decoder's leftovers nor a repeat after reconnecting.
    inside = [(i, t) for i, t in delivered if stalled["stream_s"] < round(t, 3) < resumed["stream_s"]]
    assert not inside, inside
    after = [i for i, _ in delivered if i > stalled["last_frame"]]
    assert after[0] == resumed["frame"]  # the first frame after the gap is the fresh one announced
    assert resumed["seconds_lost"] >= config.read_timeout_s
    assert resumed["reconnects"] >= 1


def test_stream_gap_is_in_the_events_and_no_credential_leaks(tmp_path: Path, videos: Path):
    """A camera that hangs for a while: `stalled` / `resumed` events, masked reconnect messages."""
    server = RtspServer(tmp_path / "media", videos)
    secret = "G4pS3cret"
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "brands:\n  enabled: false\nsource:\n  read_timeout_s: 2\n  open_timeout_s: 2\n"
        "  max_reconnects: 100\n  reconnect_delay_s: 0.5\n"
    )
    out = tmp_path / "out"
    events_path = out / "events.jsonl"
    run = CliRun("run", server.url(query=f"user=admin&pwd={secret}"), "--config", str(config), "--out", str(out),
                 "--no-progress")
    try:
        run.wait_for_frames(5)
        server.freeze()
        wait_for_event(events_path, lambda e: e.get("status") == "stalled", "stalled", run)
        server.thaw()
        wait_for_event(events_path, lambda e: e.get("status") == "resumed", "resumed", run)
        run.signal(signal.SIGINT)
        code, stdout, stderr = run.finish()
    finally:
        run.kill()
        server.stop()
    assert code == 130, stderr
    events = read_events(events_path)
    stream = [e for e in events if e["event"] == "stream"]
    assert [e["status"] for e in stream] == ["started", "stalled", "resumed", "ended"]
    stalled, resumed = stream[1], stream[2]
    assert resumed["seconds_lost"] >= 2 and resumed["stream_s"] - stalled["stream_s"] == pytest.approx(resumed["seconds_lost"], abs=0.01)
    assert "reconnecting" in stderr and "resumed" in stderr  # the messages that used to carry the password
    assert_secret_nowhere(secret, [stdout, stderr], out)


def test_ctrl_c_while_reconnecting_stops_at_once_and_says_so(tmp_path: Path, videos: Path):
    """Ctrl-C while the camera hangs: the run says it is stopping, does not wait for the reconnect
    attempt in progress, and reports no reconnect failure after the stop."""
    server = RtspServer(tmp_path / "media", videos)
    config = tmp_path / "cfg.yaml"
    # a reconnect attempt that would block for minutes
    config.write_text(
        "brands:\n  enabled: false\nsource:\n  read_timeout_s: 2\n  open_timeout_s: 300\n"
        "  max_reconnects: 100\n  reconnect_delay_s: 0.2\n"
    )
    out = tmp_path / "out"
    run = CliRun("run", server.url(), "--config", str(config), "--out", str(out), "--no-progress")
    try:
        run.wait_for_frames(5)
        server.freeze()
        run.wait_for_line(re.compile(r"reconnecting \(1/100\)"))
        run.signal(signal.SIGINT)
        code, stdout, stderr = run.finish()
    finally:
        run.kill()
        server.thaw()
        server.stop()
    assert code == 130, stderr
    assert "interrupted: stopping the source and finalising the outputs" in stderr
    assert "cannot open stream" not in stderr
    ended = read_events(out / "events.jsonl")[-1]
    assert ended["status"] == "ended" and ended["reason"] == "interrupted"


def test_a_killed_live_run_keeps_its_video_playable(tmp_path: Path, rtsp_url: str, no_brands_config: Path):
    """A live recording ended by SIGKILL (or a power cut) never writes a plain MP4's index: the
    video is fragmented, so what was written before the kill still plays."""
    import av

    out = tmp_path / "out"
    run = CliRun("run", rtsp_url, "--config", str(no_brands_config), "--out", str(out), "--no-progress")
    try:
        run.wait_for_frames(100)
        run.proc.kill()
        run.proc.wait()
    finally:
        run.kill()
    partial = out / "annotated.partial.mp4"
    assert partial.is_file() and not (out / "annotated.mp4").exists()
    decoded = 0
    try:
        with av.open(str(partial)) as container:
            for _ in container.decode(video=0):
                decoded += 1
    except av.error.InvalidDataError:
        pass  # the fragment being written when the process died
    assert decoded >= 40, decoded
