"""`stream-pipeline serve`: the cameras file, and three real RTSP cameras (local servers) in one process."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest

from stream_pipeline.core.errors import ConfigError
from stream_pipeline.serve.config import load_cameras
from tests.conftest import count_video_frames, read_events, run_cli
from tests.live_helpers import CliRun, RtspServer, read_events_so_far, wait_for_event


def _cameras_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def test_cameras_file_merges_defaults_overrides_and_zones(tmp_path: Path):
    path = _cameras_file(tmp_path, """
defaults:
  brands: {enabled: false}
  tracker: {min_hits: 4}
cameras:
  - name: north
    source: rtsp://127.0.0.1:8554/north
    overrides:
      tracker: {min_hits: 2}
      output: {video: false}
  - name: south
    source: clip.mp4
    zones:
      - name: lane
        line: [[0.0, 0.5], [1.0, 0.5]]
""")
    serve, configs = load_cameras(path)
    assert [c.name for c in serve.cameras] == ["north", "south"]
    north, south = configs["north"], configs["south"]
    assert north.tracker.min_hits == 2 and north.output.video is False and not north.zones
    assert south.tracker.min_hits == 4 and south.output.video is True and [z.name for z in south.zones] == ["lane"]
    assert not north.brands.enabled and not south.brands.enabled


def test_example_cameras_file_is_valid():
    from stream_pipeline.core.paths import CONFIGS_DIR

    serve, configs = load_cameras(CONFIGS_DIR / "cameras.yaml")
    assert [c.name for c in serve.cameras] == ["north-gate", "car-park", "desk-webcam"]
    assert configs["car-park"].output.video is False and configs["north-gate"].zones[0].name == "entry"


@pytest.mark.parametrize("text, message", [
    ("cameras:\n  - name: a\n    source: x.mp4\n    overrides: {tracker: {min_hit: 2}}\n",
     "cameras[0] (a): unknown key 'overrides.tracker.min_hit'"),
    ("defaults: {detector: {confidance: 0.2}}\ncameras:\n  - {name: a, source: x.mp4}\n",
     "unknown key 'defaults.detector.confidance'"),
    ("cameras:\n  - {name: a, source: x.mp4}\n  - {name: a, source: y.mp4}\n", "duplicate camera names: a"),
    ("cameras:\n  - {name: a, source: x.mp4}\n  - {name: b, source: y.mp4, overrides: {detector: {imgsz: 320}}}\n",
     "cameras[1] (b): 'overrides.detector' is shared by all cameras"),
    ("cameras:\n  - {name: a, source: x.mp4, overrides: {detector: {imgsz: 320}}}\n  - {name: b, source: y.mp4}\n",
     "cameras[0] (a): 'overrides.detector' is shared by all cameras"),
    ("cameras:\n  - {name: a, source: x.mp4, overrides: {brands: {gallery: g.npz}}}\n",
     "cameras[0] (a): 'overrides.brands.gallery' is shared by all cameras"),
    ("cameras:\n  - {name: a, source: x.mp4, camera: 2}\n", "unknown key 'cameras.0.camera'"),
    ("cameras: []\n", "'cameras'"),
    ("cameras:\n  - {name: ../up, source: x.mp4}\n", "'cameras.0.name'"),
    ("cameras:\n  - {name: report, source: x.mp4}\n", "'report' is the name of serve's own output"),
])
def test_cameras_file_errors_name_the_key(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError) as error:
        load_cameras(_cameras_file(tmp_path, text))
    assert message in str(error.value)


def test_bad_cameras_file_is_one_line_error(tmp_path: Path):
    path = _cameras_file(tmp_path, "cameras:\n  - {name: a, source: x.mp4, overrides: {output: {vidoe: false}}}\n")
    result = run_cli("serve", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"stream-pipeline: error: invalid cameras file {path}: cameras[0] (a): unknown key 'overrides.output.vidoe'"]


def _latest_status(path: Path) -> dict | None:
    statuses = [e for e in read_events_so_far(path) if e["event"] == "status"]
    return statuses[-1] if statuses else None


def test_three_rtsp_cameras_one_lost_and_back(tmp_path: Path, videos: Path):
    """Camera c's server is killed mid-run and restarted on the same address: a and b never stop
    (their frames keep counting while c is away), c resumes; every camera's outputs are complete."""
    servers = {name: RtspServer(tmp_path / f"media_{name}", videos) for name in "abc"}
    cameras = _cameras_file(tmp_path, f"""
defaults:
  brands: {{enabled: false}}
  source: {{read_timeout_s: 2, open_timeout_s: 2, reconnect_delay_s: 0.5, max_reconnects: 3}}
status_interval_s: 1
retry: {{initial_s: 0.5, max_s: 2}}
cameras:
  - {{name: a, source: "{servers['a'].url()}"}}
  - {{name: b, source: "{servers['b'].url()}"}}
  - name: c
    source: "{servers['c'].url()}"
    overrides:
      source: {{max_reconnects: 0}}   # the camera's own reader gives up at once: serve's retry brings it back
""")
    out = tmp_path / "out"
    events = {name: out / name / "events.jsonl" for name in "abc"}
    run = CliRun("serve", str(cameras), "--out", str(out), "--no-progress")
    try:
        for name in "abc":
            wait_for_event(events[name], lambda e: e["event"] == "status" and e["frames"] >= 5, f"{name} running", run)
        servers["c"].stop()  # camera c goes away
        stalled = wait_for_event(events["c"], lambda e: e.get("status") == "stalled", "c stalled", run)
        wait_for_event(events["c"], lambda e: e["event"] == "status" and e["state"] == "retrying", "c retrying", run)
        # While c is away, a and b report more frames than they had when c stalled.
        for name in "ab":
            before = max(e["frames"] for e in read_events_so_far(events[name])
                         if e["event"] == "status" and e["wall_time"] <= stalled["wall_time"])
            wait_for_event(events[name], lambda e: e["event"] == "status" and e["wall_time"] > stalled["wall_time"]
                           and e["frames"] > before and e["state"] == "running", f"{name} going on", run)
        servers["c"] = RtspServer(tmp_path / "media_c2", videos, port=servers["c"].port)  # back on the same address
        resumed = wait_for_event(events["c"], lambda e: e.get("status") == "resumed", "c resumed", run)
        wait_for_event(events["c"], lambda e: e["event"] == "status" and e["frames"] > resumed["frame"] + 5, "c going on", run)
        run.signal(signal.SIGINT)
        code, _, stderr = run.finish()
    finally:
        run.kill()
        for server in servers.values():
            server.stop()
    assert code == 130, stderr
    assert "camera c:" in stderr and "retry 1" in stderr
    for name in "abc":
        log = read_events(events[name])
        stream = [e["status"] for e in log if e["event"] == "stream"]
        assert stream == (["started", "ended"] if name != "c" else ["started", "stalled", "resumed", "ended"]), (name, stream)
        end = log[-1]
        assert end["reason"] == "interrupted" and end["frames"] > 10
        # Complete outputs: the video has every processed frame, the CSV every vehicle record, and a report.
        assert count_video_frames(out / name / "annotated.mp4")[0] == end["frames"]
        with (out / name / "vehicles.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len([e for e in log if e["event"] == "vehicle"]) == end["vehicles"]
        assert (out / name / "report.html").is_file()
        frames = [e["frames"] for e in log if e["event"] == "status"]
        assert frames == sorted(frames)
    c_log = read_events(events["c"])
    gap = [e for e in c_log if e["event"] == "stream" and e["status"] in ("stalled", "resumed")]
    assert gap[1]["frame"] > gap[0]["last_frame"] and gap[1]["seconds_lost"] > 0
    assert (out / "index.html").is_file()


def test_unreachable_camera_is_retried_and_never_stops_the_others(tmp_path: Path, videos: Path):
    """A camera that is never reachable is retried with backoff and given up; the other camera's
    run is complete; the exit code says a camera failed."""
    from tests.live_helpers import free_port

    cameras = _cameras_file(tmp_path, f"""
defaults:
  brands: {{enabled: false}}
  source: {{open_timeout_s: 2}}
retry: {{initial_s: 0.2, max_s: 0.4, max_attempts: 2}}
cameras:
  - {{name: away, source: "rtsp://admin:S3cretPw@127.0.0.1:{free_port()}/nothing"}}
  - {{name: clip, source: "{videos / 'suburban_junction.mp4'}"}}
""")
    out = tmp_path / "out"
    result = run_cli("serve", str(cameras), "--out", str(out), "--max-frames", "30", "--no-progress")
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("stream-pipeline: error:")]
    assert len(errors) == 1 and "1 of 2 cameras failed; first: away" in errors[0] and "gave up after 2 retries" in errors[0]
    assert "S3cretPw" not in result.stderr
    clip = read_events(out / "clip" / "events.jsonl")
    assert clip[-1]["status"] == "ended" and clip[-1]["frames"] == 30
    away = read_events(out / "away" / "events.jsonl")
    assert [e["status"] for e in away if e["event"] == "stream"] == ["started", "stalled", "error"]
    # The first try and 2 retries, each failure logged with the next retry, then given up.
    assert result.stderr.count("camera away: cannot open stream") == 2
    assert "retry 1 in" in result.stderr and "retry 2 in" in result.stderr and "retry 3" not in result.stderr


def test_sigterm_stops_every_camera_cleanly(tmp_path: Path, videos: Path):
    cameras = _cameras_file(tmp_path, f"""
defaults:
  brands: {{enabled: false}}
status_interval_s: 1
cameras:
  - {{name: one, source: "{videos / 'highway_overpass_720p.mp4'}"}}
  - {{name: two, source: "{videos / 'urban_arterial.mp4'}"}}
""")
    out = tmp_path / "out"
    run = CliRun("serve", str(cameras), "--out", str(out), "--no-progress")
    try:
        for name in ("one", "two"):
            wait_for_event(out / name / "events.jsonl", lambda e: e["event"] == "status" and e["frames"] >= 3, name, run)
        run.signal(signal.SIGTERM)
        code, _, stderr = run.finish()
    finally:
        run.kill()
    assert code == 143, stderr
    for name in ("one", "two"):
        end = read_events(out / name / "events.jsonl")[-1]
        assert end["status"] == "ended" and end["reason"] == "interrupted"
        assert count_video_frames(out / name / "annotated.mp4")[0] == end["frames"]


def test_a_second_serve_into_the_same_folder_is_refused_unless_overwrite(tmp_path: Path, videos: Path):
    """Restarting serve with the same --out must not truncate the cameras' event logs."""
    cameras = _cameras_file(tmp_path, f"""
defaults:
  brands: {{enabled: false}}
cameras:
  - {{name: clip, source: "{videos / 'suburban_junction.mp4'}"}}
""")
    out = tmp_path / "out"
    first = run_cli("serve", str(cameras), "--out", str(out), "--max-frames", "10", "--no-progress")
    assert first.returncode == 0, first.stderr
    events_before = (out / "clip" / "events.jsonl").read_bytes()
    (out / "notes.txt").write_text("the operator's own file")

    again = run_cli("serve", str(cameras), "--out", str(out), "--max-frames", "5", "--no-progress")
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds a run" in again.stderr and "--overwrite" in again.stderr
    assert (out / "clip" / "events.jsonl").read_bytes() == events_before  # nothing lost

    # --overwrite with models that cannot load: serve never starts, so nothing is replaced
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"detector:\n  model: {tmp_path / 'no_such_detector.xml'}\n")
    failed = run_cli("serve", str(cameras), "--config", str(broken), "--out", str(out), "--max-frames", "5",
                     "--no-progress", "--overwrite")
    assert failed.returncode == 4 and "no_such_detector" in failed.stderr, failed.stderr
    assert (out / "clip" / "events.jsonl").read_bytes() == events_before and (out / "index.html").is_file()

    replaced = run_cli("serve", str(cameras), "--out", str(out), "--max-frames", "5", "--no-progress", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    events = read_events(out / "clip" / "events.jsonl")
    assert events[-1]["frames"] == 5 and events[0]["status"] == "started" and events[0]["camera"] == "clip"
    index = (out / "index.html").read_text()
    assert "1 camera ·" in index and ">clip</a>" in index  # named as in the cameras file, not by its source
    assert (out / "notes.txt").read_text() == "the operator's own file"


def test_a_missing_video_file_fails_at_once_while_the_other_camera_runs(tmp_path: Path, videos: Path):
    """Retrying is for cameras; a mistyped file path never appears, so serve must not wait on it forever."""
    cameras = _cameras_file(tmp_path, f"""
defaults:
  brands: {{enabled: false}}
retry: {{initial_s: 0.2, max_s: 0.4, max_attempts: 1}}
cameras:
  - {{name: ghost, source: "{tmp_path / 'no_such_clip.mp4'}"}}
  - {{name: clip, source: "{videos / 'suburban_junction.mp4'}"}}
""")
    out = tmp_path / "out"
    result = run_cli("serve", str(cameras), "--out", str(out), "--max-frames", "20", "--no-progress")
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("stream-pipeline: error:")]
    assert len(errors) == 1 and "1 of 2 cameras failed; first: ghost" in errors[0] and "no_such_clip" in errors[0]
    assert "retry" not in result.stderr
    # every failed camera says why in its own summary line, not only the first
    assert any(line.startswith("camera ghost: failed,") and "no_such_clip" in line for line in result.stderr.splitlines())
    assert read_events(out / "clip" / "events.jsonl")[-1]["frames"] == 20
    ghost = [e.get("status") for e in read_events(out / "ghost" / "events.jsonl") if e["event"] == "stream"]
    assert "stalled" not in ghost and ghost[-1] == "error", ghost


def test_serve_latency_counts_from_arrival_including_the_jitter_buffer(monkeypatch):
    """Frames of a bursty stream are held by the jitter buffer; serve's latency must include the
    hold (README), not start at the frame's paced release."""
    import threading

    import numpy as np

    from stream_pipeline.core.config import PipelineConfig
    from stream_pipeline.serve import camera as cam
    from stream_pipeline.serve.camera import CameraProgress, CameraSource, CameraStats
    from stream_pipeline.serve.config import RetryConfig
    from stream_pipeline.sources import live
    from stream_pipeline.sources.live import LiveSource

    clock = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cam.time, "monotonic", lambda: clock[0])
    source = LiveSource("rtsp://127.0.0.1:9/none")  # never opened: frames are handed in directly
    source._t0 = 100.0
    stats = CameraStats("gate")
    camera = CameraSource(stats, "rtsp://127.0.0.1:9/none", PipelineConfig(), RetryConfig(), threading.Event(), 1e9)
    camera._t0 = 100.0
    progress = CameraProgress(stats, camera)
    image = np.zeros((4, 4, 3), np.uint8)
    for i in range(9 * 20):  # nine frames within 16 ms every 0.3 s
        burst, k = divmod(i, 9)
        clock[0] = 100.0 + 0.3 * (burst + 1) + 0.002 * k
        source._deliver(image, i / 30)
    true = []
    for due, frame in list(source._pending)[9 * 4:]:
        clock[0] = due
        camera._deliver(frame, source.opened_at)
        clock[0] += 0.05  # processing
        progress.update(1, 0, 1.0)
        true.append(1000 * (clock[0] - frame.captured_at))
    assert np.median(list(stats.latencies_ms)[-len(true):]) == pytest.approx(np.median(true), abs=1.0)
    assert np.median(true) > 100  # the hold is there to be counted
