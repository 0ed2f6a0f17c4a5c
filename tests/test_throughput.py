"""Throughput parts (issue 12) give the same results as the sequential path: decode-ahead
reader, encode-behind writer, OpenVINO called directly, the 384x640 export for wide frames,
and the looped benchmark clip. Speed itself is measured by `stream-pipeline benchmark`."""

from __future__ import annotations

import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_pipeline.bench.clips import looped_clip
from stream_pipeline.core.config import DetectorConfig
from stream_pipeline.core.errors import OutputError, SourceError
from stream_pipeline.detection import VehicleDetector
from stream_pipeline.sinks.threaded_video import ThreadedVideoSink
from stream_pipeline.sources import VideoFileSource
from stream_pipeline.sources.prefetch import PrefetchSource, decode_ahead
from tests.conftest import count_video_frames, read_events
from tests.live_helpers import CliRun


def _frames(source) -> list:
    with source:
        return list(source.frames())


def test_decode_ahead_gives_every_frame_in_order(videos: Path):
    clip = videos / "suburban_junction.mp4"
    plain = _frames(VideoFileSource(clip))
    ahead = _frames(PrefetchSource(VideoFileSource(clip), depth=4))
    assert len(ahead) == len(plain) == 321
    for a, b in zip(ahead, plain):
        assert a.index == b.index and a.timestamp_s == b.timestamp_s
        assert np.array_equal(a.image, b.image)


def test_decode_ahead_stops_its_thread_when_the_consumer_stops(videos: Path):
    source = PrefetchSource(VideoFileSource(videos / "urban_arterial.mp4"), depth=2)
    with source:
        for frame in source.frames():
            if frame.index == 10:
                break
        assert source._thread is None  # joined, not left decoding the rest of the clip
    assert source.inner._capture is None  # and the capture released


def test_decode_ahead_raises_the_readers_error_in_the_consumer(tmp_path: Path):
    # Opens (a valid container header) but has no decodable frame: the reader's SourceError
    # must come out of frames() in the pipeline thread, not die with the reader thread.
    clip = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    writer.release()
    source = decode_ahead(VideoFileSource(clip), 4)
    try:
        with source, pytest.raises(SourceError):
            list(source.frames())
    except SourceError:
        pass  # OpenCV refused to open it at all: also a one-line source error, before any thread


def test_live_sources_are_not_wrapped():
    from stream_pipeline.sources import LiveSource

    live = LiveSource("rtsp://127.0.0.1:1/x")
    assert decode_ahead(live, 8) is live


def test_encode_behind_writes_every_frame(tmp_path: Path, videos: Path):
    frames = _frames(VideoFileSource(videos / "urban_arterial.mp4"))[:200]
    with ThreadedVideoSink(tmp_path / "out.mp4", 25.0, queue_frames=3) as sink:
        for frame in frames:
            sink.write(frame.image)
    count, codec = count_video_frames(tmp_path / "out.mp4")
    assert count == 200 and codec == "h264"
    assert not (tmp_path / "out.partial.mp4").exists()


@pytest.mark.parametrize("threaded", [False, True])
def test_live_video_plays_at_stream_time_not_fast_forward(tmp_path: Path, videos: Path, threaded: bool):
    """A live source processed slower than it sends skips frames: each frame written is shown at
    its stream time, so the video lasts as long as the stream did (the on-screen clock agrees)."""
    import av

    from stream_pipeline.sinks.video import VideoSink

    images = [f.image for f in _frames(VideoFileSource(videos / "urban_arterial.mp4"))[:8]]
    stamps = [10.0, 10.4, 10.8, 11.5, 12.0, 12.1, 14.0, 14.5]  # stream seconds; a 1.9 s gap at 12.1
    cls = ThreadedVideoSink if threaded else VideoSink
    with cls(tmp_path / "live.mp4", 25.0, timed=True) as sink:
        for image, stamp in zip(images, stamps):
            sink.write(image, stamp)
    with av.open(str(tmp_path / "live.mp4")) as container:
        shown = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert shown == pytest.approx([s - stamps[0] for s in stamps], abs=0.002)


def test_live_video_has_a_keyframe_every_2_s_of_stream_time_when_frames_are_skipped(tmp_path: Path, videos: Path):
    """A killed live run's file plays up to its last keyframe: at 2.5 processed FPS of a 25 fps
    camera, keyframes counted in frames (gop 50) came 20 s apart."""
    import av

    from stream_pipeline.sinks.video import VideoSink

    images = [f.image for f in _frames(VideoFileSource(videos / "urban_arterial.mp4"))[:40]]
    with VideoSink(tmp_path / "live.mp4", 25.0, timed=True) as sink:
        for i, image in enumerate(images):
            sink.write(image, 0.4 * i)
    with av.open(str(tmp_path / "live.mp4")) as container:
        keys = [float(p.pts * p.time_base) for p in container.demux(video=0) if p.is_keyframe and p.pts is not None]
    assert keys[0] == 0.0 and max(b - a for a, b in zip(keys, keys[1:] + [15.6])) <= 2.0 + 1e-6, keys


def test_encode_behind_reports_a_failed_write(tmp_path: Path, videos: Path, monkeypatch):
    import av

    frames = _frames(VideoFileSource(videos / "suburban_junction.mp4"))[:40]
    sink = ThreadedVideoSink(tmp_path / "out.mp4", 30.0, queue_frames=2)
    calls = []

    def failing_mux(self, packet):  # the disk fills up after a few packets
        calls.append(packet)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        with sink:
            monkeypatch.setattr(av.container.OutputContainer, "mux", failing_mux, raising=False)
            for frame in frames:
                sink.write(frame.image)
    assert not (tmp_path / "out.mp4").exists()  # never looks complete


def test_direct_openvino_matches_ultralytics(videos: Path):
    capture = cv2.VideoCapture(str(videos / "highway_overpass_720p.mp4"))
    images = [capture.read()[1] for _ in range(8)]
    capture.release()
    ultralytics = VehicleDetector(DetectorConfig(runtime="ultralytics"))
    direct = VehicleDetector(DetectorConfig(shaped_models=[]))
    assert direct.direct and not ultralytics.direct
    for image in images:
        a, b = ultralytics.detect(image), direct.detect(image)
        assert len(a) == len(b) >= 2
        order_a, order_b = np.argsort(-a.confidence), np.argsort(-b.confidence)
        assert np.allclose(a.xyxy[order_a], b.xyxy[order_b], atol=1.0)
        assert np.array_equal(a.class_id[order_a], b.class_id[order_b])


def test_wide_frames_use_the_384x640_export_and_find_the_same_vehicles(videos: Path):
    detector = VehicleDetector(DetectorConfig())
    square = VehicleDetector(DetectorConfig(shaped_models=[]))
    assert detector.backend_for(720, 1280).input_hw == (384, 640)
    assert detector.backend_for(352, 640).input_hw == (384, 640)
    assert detector.backend_for(240, 320).input_hw == (640, 640)  # 4:3 does not fit 384 rows
    assert detector.backend_for(960, 544).input_hw == (640, 640)  # portrait
    capture = cv2.VideoCapture(str(videos / "highway_overpass_720p.mp4"))
    found = total = 0
    for index in range(0, 240, 8):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        image = capture.read()[1]
        wide, reference = detector.detect(image), square.detect(image)
        confident = reference[reference.confidence >= 0.3]
        total += len(confident)
        found += sum(_best_iou(box, wide.xyxy) >= 0.5 for box in confident.xyxy)
    capture.release()
    assert total > 100 and found >= 0.95 * total, (found, total)


def _best_iou(box: np.ndarray, boxes: np.ndarray) -> float:
    if len(boxes) == 0:
        return 0.0
    x1 = np.maximum(box[0], boxes[:, 0]); y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2]); y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return float((inter / (area(box) + area(boxes) - inter)).max())


def test_looped_benchmark_clip_has_the_frames_asked_for(tmp_path: Path, videos: Path):
    clip, frames = looped_clip(videos / "highway_overpass_720p.mp4", 1500, tmp_path)
    assert frames == 426 * 4
    source = VideoFileSource(clip)
    with source:
        assert sum(1 for _ in source.frames()) == frames
        assert abs(source.fps - 30.0) < 0.1
    assert looped_clip(videos / "highway_overpass_720p.mp4", 1500, tmp_path) == (clip, frames)  # cached


@pytest.mark.parametrize("sig, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_with_decode_ahead_and_encode_behind_finalises_everything(
        tmp_path: Path, videos: Path, no_brands_config: Path, sig, exit_code):
    # A file long enough not to end before the signal, sent once the program reports frames.
    clip, _ = looped_clip(videos / "highway_overpass_720p.mp4", 3000, tmp_path)
    out = tmp_path / "out"
    run = CliRun("run", str(clip), "--config", str(no_brands_config), "--out", str(out), "--no-progress")
    try:
        run.wait_for_frames(20)
        run.signal(sig)
        code, _, stderr = run.finish()
    finally:
        run.kill()
    assert code == exit_code, stderr
    end = read_events(out / "events.jsonl")[-1]
    assert end["reason"] == "interrupted" and 20 <= end["frames"] < 3000
    frames, _ = count_video_frames(out / "annotated.mp4")
    assert frames == end["frames"]  # every processed frame was encoded before finalising


def test_latency_benchmark_measures_capture_to_overlay_on_a_local_stream(tmp_path: Path, no_brands_config: Path):
    import json

    from tests.conftest import run_cli

    result = run_cli("benchmark", "--latency-seconds", "8", "--config", str(no_brands_config), "--json",
                     "--keep", str(tmp_path))
    assert result.returncode == 0, result.stderr
    latency = json.loads(result.stdout.strip().splitlines()[-1])["latency"]
    assert latency["input_fps"] == 25.0 and latency["frames_processed"] >= 10
    # Capture precedes hand-over, which precedes the drawn overlay.
    assert latency["capture_to_overlay_ms"]["median"] >= latency["receive_to_overlay_ms"]["median"] > 0
    served = Path(latency["clip"])
    source = VideoFileSource(served)
    with source:
        assert abs(source.fps - 25.0) < 0.01 and source.total_frames == 426  # same pictures, re-timed


def test_vendored_bytetrack_tracks_exactly_as_ultralytics(videos: Path):
    """The runtime imports ByteTrack from stream_pipeline.tracking.bytetrack (no torch); it must
    give the ids and boxes ultralytics' own BYTETracker gives on real detections."""
    from ultralytics.trackers.byte_tracker import BYTETracker as UltralyticsByteTrack

    from stream_pipeline.tracking.bytetrack import BYTETracker
    from stream_pipeline.tracking.tracker import _BoxesView, load_tracker_yaml

    args = load_tracker_yaml("configs/bytetrack.yaml")
    ours, theirs = BYTETracker(args), UltralyticsByteTrack(args)
    detector = VehicleDetector(DetectorConfig())
    capture = cv2.VideoCapture(str(videos / "highway_overpass_720p.mp4"))
    rows = 0
    for _ in range(120):
        ok, image = capture.read()
        assert ok
        d = detector.detect(image)
        boxes = _BoxesView(d.xyxy, d.confidence, d.class_id.astype(np.float32))
        a, b = ours.update(boxes, image), theirs.update(boxes, image)
        assert np.array_equal(a, b)
        rows += len(a)
    capture.release()
    assert rows > 500


def test_an_odd_height_is_rounded_to_an_even_clip(tmp_path: Path, videos: Path):
    from stream_pipeline.bench.clips import resized_clip

    clip = resized_clip(videos / "dashcam_vw_close.mp4", 101, tmp_path)  # H.264 4:2:0 refuses odd sizes
    capture = cv2.VideoCapture(str(clip))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[0] == 102 and frame.shape[1] % 2 == 0
    # two clips of one name in different folders get copies of their own
    for folder, video in (("a", "dashcam_vw_close.mp4"), ("b", "intel_parking_lot.mp4")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "clip.mp4").symlink_to(videos / video)
    a, b = (resized_clip(tmp_path / folder / "clip.mp4", 64, tmp_path) for folder in ("a", "b"))
    assert a != b

    def frames(path: Path) -> int:
        with VideoFileSource(path) as source:
            return source.total_frames

    assert [frames(a), frames(b)] == [frames(videos / v) for v in ("dashcam_vw_close.mp4", "intel_parking_lot.mp4")]


@pytest.mark.parametrize("args, code, message", [
    (["--max-frames", "0"], 2, "--max-frames must be at least 1"),
    (["--height", "0"], 2, "--height must be between 16 and 4320 rows"),
    (["MISSING"], 3, "benchmark input not found"),
    (["FOLDER"], 2, "one video file, not a folder"),
    (["--min-frames", "100"], 2, "--min-frames goes with --compare-ultralytics"),
    (["--keep", "KEEP"], 2, "--keep goes with --compare-ultralytics"),
    (["--input-fps", "30"], 2, "--input-fps goes with --latency-seconds or --soak-minutes"),
    (["--latency-seconds", "5", "--input-fps", "0"], 2, "--input-fps must be between 1 and 240"),
    (["--compare-ultralytics", "--max-frames", "5"], 2, "--max-frames goes with the default mode"),
    (["--soak-minutes", "1", "--max-frames", "5"], 2, "--max-frames goes with the default mode"),
])
def test_benchmark_usage_errors_are_one_line(tmp_path: Path, videos: Path, args, code, message):
    from tests.conftest import run_cli

    args = [str(tmp_path / "nope.mp4") if a == "MISSING" else str(videos) if a == "FOLDER"
            else str(tmp_path / "keep") if a == "KEEP" else a for a in args]
    if args[0].startswith("--"):
        args = [str(videos / "dashcam_vw_close.mp4"), *args]
    result = run_cli("benchmark", *args)
    assert result.returncode == code and result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_benchmark_paths_are_made_absolute_for_its_child_runs(tmp_path: Path, monkeypatch):
    """The measured runs start in the project's folder: a relative --keep wrote into the checkout."""
    import argparse

    from stream_pipeline.benchmark import _check_mode_options

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(compare_ultralytics=True, keep="kept", config="cfg.yaml", max_frames=None)
    _check_mode_options(args)
    assert args.keep == str(tmp_path / "kept") and args.config == str(tmp_path / "cfg.yaml")
