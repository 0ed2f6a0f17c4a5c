"""When a vehicle's record starts and ends: stream time and gaps, the first detection, duplicate
tracks, and records that must survive Ctrl-C. Synthetic boxes through the real tracker for the
exact cases; real clips through the real pipeline (detector included) end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from stream_pipeline.core.config import PipelineConfig, TrackerConfig
from stream_pipeline.core.types import Detections, Frame
from stream_pipeline.pipeline import Pipeline
from stream_pipeline.sources.base import FrameSource
from stream_pipeline.tracking import VehicleTracker
from stream_pipeline.zones.config import ZoneConfig
from stream_pipeline.zones.monitor import ZoneMonitor
from tests.conftest import read_events

IMAGE = np.zeros((720, 1280, 3), dtype=np.uint8)


def _frame(i: int, t: float | None = None) -> Frame:
    return Frame(IMAGE, i, i / 30.0 if t is None else t)


def _box(x: float, y: float = 200, cls: int = 2) -> Detections:
    return Detections(np.array([[x, y, x + 120, y + 90]], dtype=np.float32), np.array([0.9]), np.array([cls]))


# --- stream time ------------------------------------------------------------------------


def test_a_gap_in_the_stream_ends_the_tracks_before_it():
    """A car waits at a stop line, the camera freezes for 20 s, then a truck stands where the car
    stood: two records, each with its own class, not one that mixes them."""
    tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=25)
    ended = []
    for i in range(50):
        ended += tracker.update(_box(300 + 0.5 * i), _frame(i, i / 25))[1]
    for k in range(50):  # resumed at frame 50, 22 s into the stream
        ended += tracker.update(_box(310, cls=7), _frame(50 + k, 22 + k / 25))[1]
    ended += tracker.flush()
    assert [(t.first_frame, t.last_frame, dict(t.class_votes)) for t in ended] == [(0, 49, {2: 50}), (50, 99, {7: 50})]
    assert ended[0].track_id != ended[1].track_id


def test_a_gone_vehicle_ends_after_the_buffer_in_processed_frames_and_at_most_5_s():
    """A lost track is kept `track_buffer` processed frames (so ByteTrack can find it again after
    skipped frames), and never more than 5 s of stream time."""
    # every frame of a 25 fps camera: 25 frames (track_buffer 30 at 30 fps), 1 s; a busy serve at 5 FPS: 5 s
    for processed_fps, expect_s in ((25, 1.0), (5, 5.0)):
        tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=25)
        step = 25 // processed_fps
        ended, ended_at = [], None
        for i in range(10):
            tracker.update(_box(100 + 2 * step * i), _frame(step * i, step * i / 25))
        last_seen = 9 * step / 25
        for i in range(10, 200):
            gone = tracker.update(Detections.empty(), _frame(step * i, step * i / 25))[1]
            if gone and ended_at is None:
                ended_at = step * i / 25
            ended += gone
        assert len(ended) == 1 and ended[0].last_seen_s == last_seen
        assert expect_s - 1e-9 <= ended_at - last_seen <= expect_s + 2 * step / 25 + 1e-9, (processed_fps, ended_at)


def test_a_vehicle_is_one_record_when_a_busy_machine_skips_frames_in_bursts(videos):
    """Live highway at ~7 processed FPS, frames skipped in bursts: with the lost buffer counted in
    seconds (1 s) one vehicle became a record per burst (median record 5-9 frames long)."""
    import cv2

    from stream_pipeline.core.config import DetectorConfig
    from stream_pipeline.detection.vehicle_detector import VehicleDetector

    detector = VehicleDetector(DetectorConfig())
    capture = cv2.VideoCapture(str(videos / "highway_overpass_720p.mp4"))
    rng = np.random.default_rng(0)
    tracker, lengths, next_index, index = VehicleTracker(TrackerConfig(), frame_rate=30), [], 0, 0
    while index < 300:
        ok, image = capture.read()
        if not ok:
            break
        if index == next_index:
            gone = tracker.update(detector.detect(image), Frame(image=image, index=index, timestamp_s=index / 30))[1]
            lengths += [t.last_frame - t.first_frame for t in gone]
            next_index += int(rng.integers(1, 3)) if rng.random() < 0.7 else int(rng.integers(6, 21))
        index += 1
    lengths += [t.last_frame - t.first_frame for t in tracker.flush()]
    assert np.median(lengths) >= 30, sorted(lengths)


# --- the first detection ----------------------------------------------------------------


def test_a_record_starts_at_the_detection_that_started_its_track():
    tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=30)
    for i in range(10):
        tracker.update(Detections.empty(), _frame(i))
    ended, confirmed_at = [], None
    for i in range(10, 20):  # detected in frames 10-19
        tracked, gone = tracker.update(_box(50 + 8 * (i - 10)), _frame(i))
        ended += gone
        if len(tracked) and confirmed_at is None:
            confirmed_at = i
    ended += tracker.flush()
    assert [(t.first_frame, round(t.first_seen_s, 3), t.hits) for t in ended] == [(10, 0.333, 10)]
    assert confirmed_at == 12  # its third detection, min_hits = 3


def test_a_vehicle_seen_in_exactly_min_hits_frames_is_a_vehicle():
    tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=30)
    for i in range(5):
        tracker.update(Detections.empty(), _frame(i))
    ended = []
    for i in range(5, 8):
        ended += tracker.update(_box(50 + 8 * i), _frame(i))[1]
    for i in range(8, 80):
        ended += tracker.update(Detections.empty(), _frame(i))[1]
    assert [(t.first_frame, t.last_frame, t.hits) for t in ended] == [(5, 7, 3)]
    # min_hits 1: a single detection is a vehicle, and its row is output in that frame
    single = VehicleTracker(TrackerConfig(min_hits=1), frame_rate=30)
    single.update(Detections.empty(), _frame(0))
    tracked, _ = single.update(_box(400), _frame(1))
    assert len(tracked) == 1 and [t.hits for t in single.flush()] == [1]


# --- duplicate tracks of one vehicle ----------------------------------------------------

BOX_A = [100, 100, 300, 260]
BOX_B = [120, 110, 320, 268]  # IoU ~0.75 with A: one vehicle boxed twice (per-class NMS keeps both)


def test_a_merged_vehicle_stays_one_record_when_its_older_track_is_lost():
    """After the merge the detector keeps only the box the younger track follows: the older
    ByteTrack track is lost, and the vehicle must go on under its id, not end and start again."""
    tracker = VehicleTracker(TrackerConfig(min_hits=3, duplicate_iou=0.7, duplicate_frames=5), frame_rate=30)
    both = Detections(np.array([BOX_A, BOX_B], dtype=np.float32), np.array([0.9, 0.85]), np.array([2, 7]))
    only_b = Detections(np.array([BOX_B], dtype=np.float32), np.array([0.85]), np.array([7]))
    ended, rows = [], []
    for i in range(150):
        tracked, gone = tracker.update(both if i < 20 else only_b, _frame(i))
        ended += gone
        rows.append(tracked.tracker_id.tolist())
    ended += tracker.flush()
    assert [(t.track_id, t.first_frame, t.last_frame, t.hits) for t in ended] == [(1, 0, 149, 150)]
    assert all(r == [1] for r in rows[2:])  # one row, one id, in every frame from confirmation on
    assert tracker.confirmed_count == 1


def test_two_boxes_of_one_vehicle_cross_a_line_once():
    """A van boxed as car and as truck (detector.agnostic_nms: false) crosses a counting line
    before the two tracks have overlapped for duplicate_frames: one crossing, one record."""
    tracker = VehicleTracker(TrackerConfig(min_hits=3, duplicate_iou=0.7, duplicate_frames=5), frame_rate=30)
    monitor = ZoneMonitor([ZoneConfig(name="mid", line=[[0.0, 0.5], [1.0, 0.5]])], {2: "car", 7: "truck"})
    events, ended = [], []
    for i in range(60):
        y = 150 + 20 * min(i, 25)
        boxes = np.array([[500, y, 700, y + 150], [504, y + 3, 704, y + 152]], dtype=np.float32)
        tracked, gone = tracker.update(Detections(boxes, np.array([0.9, 0.8]), np.array([2, 7])), _frame(i))
        events += monitor.on_frame(_frame(i), tracked, tracker.tracks)
        ended += gone
    ended += tracker.flush()
    assert [(e["track_id"], e["direction"]) for e in events] == [(1, "in")]
    assert len(ended) == 1 and ended[0].merged_ids == [2]
    assert monitor.zones[0].live["in"] == 1


def test_a_duplicate_that_crossed_before_the_merge_is_not_counted_twice_in_the_record():
    """Both tracks crossed the line while still apart enough to be two vehicles: when they are
    merged, the record (and the ended event's counts) list the vehicle's crossing once."""
    from stream_pipeline.core.records import VehicleRecord

    tracker = VehicleTracker(TrackerConfig(min_hits=3, duplicate_iou=0.7, duplicate_frames=5), frame_rate=30)
    monitor = ZoneMonitor([ZoneConfig(name="mid", line=[[0.0, 0.5], [1.0, 0.5]])], {2: "car", 7: "truck"})
    ended = []
    for i in range(60):
        y = 150 + 20 * min(i, 25)
        shift = max(0, 60 - 4 * i)  # the second box slides onto the first: IoU >= 0.7 from frame 12
        boxes = np.array([[500, y, 700, y + 150], [504 + shift, y + 3, 704 + shift, y + 152]], dtype=np.float32)
        tracked, gone = tracker.update(Detections(boxes, np.array([0.9, 0.8]), np.array([2, 7])), _frame(i))
        monitor.on_frame(_frame(i), tracked, tracker.tracks)
        ended += gone
    ended += tracker.flush()
    assert len(ended) == 1
    track = ended[0]
    record = VehicleRecord(track.track_id, "car", track.first_frame, track.last_frame, track.first_seen_s,
                           track.last_seen_s, "", "unknown", 0.0, 0, 0, list(track.bbox), None, None, track.hits, 0.9, "x")
    assert [p["zone"] for p in monitor.on_vehicle(track, record).zones] == ["mid"]
    assert monitor.summary()["zones"]["mid"]["in"] == 1
    assert monitor._passes == {}  # nothing left behind for the merged track


# --- real clips through the pipeline ----------------------------------------------------


class ClipSource(FrameSource):
    """A real clip, read as a live camera would hand it out, with an optional stall: the
    `stalled` / `resumed` notices and `gap_s` stream seconds lost before frame `gap_at`."""

    is_live = True

    def __init__(self, path: Path, frames: int, gap_at: int | None = None, gap_s: float = 20.0) -> None:
        self.name, self.path, self.count, self.gap_at, self.gap_s = path.name, path, frames, gap_at, gap_s
        self._fps = 0.0

    def open(self) -> None:
        capture = cv2.VideoCapture(str(self.path))
        self._fps = capture.get(cv2.CAP_PROP_FPS)
        capture.release()

    def close(self) -> None:
        pass

    @property
    def fps(self) -> float:
        return self._fps

    def frames(self) -> Iterator[Frame]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            for i in range(self.count):
                ok, image = capture.read()
                if not ok:
                    return
                t = i / self._fps + (self.gap_s if self.gap_at is not None and i >= self.gap_at else 0.0)
                if i == self.gap_at and self.on_status is not None:
                    self.on_status({"status": "stalled", "stream_s": round((i - 1) / self._fps, 3),
                                    "last_frame": i - 1, "reason": "test"})
                    self.on_status({"status": "resumed", "stream_s": round(t, 3), "frame": i,
                                    "seconds_lost": self.gap_s, "reconnects": 1, "stale_frames_dropped": 0})
                yield Frame(image, i, t, self.name)
        finally:
            capture.release()


def _config(**tracker) -> PipelineConfig:
    return PipelineConfig.model_validate({"output": {"video": False, "snapshots": False, "csv": False},
                                          "brands": {"enabled": False}, "tracker": tracker})


def test_a_stall_writes_the_vehicles_in_view_before_the_gap(tmp_path: Path, videos: Path):
    """The parked Honda, with the camera stalled for 20 s after frame 39: its record is written
    when the stream stalls (before the `stalled` event), and what is seen after the gap is a
    record of its own."""
    out = tmp_path / "run"
    Pipeline(_config()).run(ClipSource(videos / "parked_honda_portrait.mp4", 80, gap_at=40), out)
    events = read_events(out / "events.jsonl")
    kinds = [(e["event"], e.get("status")) for e in events]
    stalled = kinds.index(("stream", "stalled"))
    before = [e for e in events[:stalled] if e["event"] == "vehicle"]
    after = [e for e in events[stalled:] if e["event"] == "vehicle"]
    assert before and all(v["last_frame"] <= 39 for v in before), before
    assert after and all(v["first_frame"] >= 40 and v["first_seen_s"] >= 20 for v in after), after
    assert events[-1]["vehicles"] == len(before) + len(after)


class InterruptWhenATrackEnds:
    """Stands in for the brand stage: raises KeyboardInterrupt (Ctrl-C, or SIGTERM as the CLI turns
    it) in the first frame in which a confirmed vehicle is no longer among the open tracks, i.e.
    after the tracker ended it and before its record could be written."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.ended: list[int] = []

    def process(self, frame, tracked, tracks):
        gone = sorted(t for t in self.seen if t not in tracks)
        if gone:
            self.ended = gone
            raise KeyboardInterrupt
        self.seen |= {t for t, state in tracks.items() if state.confirmed}
        return []

    def refresh_class_gate(self, track) -> None:  # the brand stage's hook before a record: no brands here
        pass


def test_ctrl_c_in_the_frame_a_track_ended_keeps_its_record(tmp_path: Path, videos: Path):
    out = tmp_path / "run"
    interrupter = InterruptWhenATrackEnds()
    summary = Pipeline(_config(), recognizer=interrupter).run(
        ClipSource(videos / "highway_overpass_720p.mp4", 400), out)
    assert summary.stopped_by == "interrupted" and interrupter.ended
    events = read_events(out / "events.jsonl")
    written = {e["track_id"] for e in events if e["event"] == "vehicle"}
    assert set(interrupter.ended) <= written, (interrupter.ended, written)
    assert events[-1]["reason"] == "interrupted" and events[-1]["vehicles"] == len(written)
