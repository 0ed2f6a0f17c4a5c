"""Track lifecycle on top of ByteTrack: confirmation, ending, pruning."""

from __future__ import annotations

import numpy as np

from stream_pipeline.core.config import TrackerConfig
from stream_pipeline.core.types import Detections, Frame
from stream_pipeline.tracking import VehicleTracker

IMAGE = np.zeros((480, 640, 3), dtype=np.uint8)


def _frame(i: int) -> Frame:
    return Frame(IMAGE, i, i / 30.0)


def _box(x: float) -> Detections:
    return Detections(np.array([[x, 100, x + 80, 160]]), [0.9], [2])


def test_track_is_confirmed_then_ended_and_pruned():
    tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=30)
    ended_all = []
    for i in range(10):  # a car moving right for 10 frames
        tracked, ended = tracker.update(_box(50 + 8 * i), _frame(i))
        ended_all += ended
        if i >= 2:
            assert len(tracked) == 1  # confirmed from its third frame on
    track_id = int(tracked.tracker_id[0])
    assert tracker.tracks[track_id].hits == 10
    for i in range(10, 60):  # gone: ByteTrack keeps it lost for track_buffer frames, then drops it
        _, ended = tracker.update(Detections.empty(), _frame(i))
        ended_all += ended
    assert [t.track_id for t in ended_all] == [track_id]
    assert ended_all[0].first_frame == 0 and ended_all[0].last_frame == 9
    assert tracker.tracks == {}  # per-track state pruned


def test_flicker_never_becomes_a_vehicle():
    tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=30)
    outputs = []
    for i in range(2):
        tracked, _ = tracker.update(_box(300), _frame(i))
        outputs.append(len(tracked))
    ended = []
    for i in range(2, 60):
        ended += tracker.update(Detections.empty(), _frame(i))[1]
    assert outputs == [0, 0]
    assert ended == [] and tracker.flush() == [] and tracker.tracks == {}


def test_flush_returns_open_confirmed_tracks():
    tracker = VehicleTracker(TrackerConfig(min_hits=2), frame_rate=30)
    for i in range(5):
        tracker.update(_box(100 + 5 * i), _frame(i))
    flushed = tracker.flush()
    assert len(flushed) == 1 and flushed[0].last_frame == 4
    assert tracker.tracks == {}


def test_two_tracks_on_one_vehicle_give_one_record():
    """A parked car boxed twice (e.g. as car and as truck) starts two ByteTrack tracks: the
    younger's row is withheld from the first frame they overlap heavily, and after
    `duplicate_frames` such frames it is merged into the older."""
    tracker = VehicleTracker(TrackerConfig(min_hits=3, duplicate_iou=0.7, duplicate_frames=5), frame_rate=30)
    both = Detections(np.array([[100, 100, 300, 260], [106, 104, 306, 262]]), [0.9, 0.85], [2, 7])
    seen_ids, ended = set(), []
    for i in range(40):
        tracked, gone = tracker.update(both, _frame(i))
        seen_ids |= set(tracked.tracker_id.tolist())
        ended += gone
        if i >= 2:
            assert len(tracked) == 1  # one box per frame from confirmation on, merged or not yet
    assert len(seen_ids) == 1
    for i in range(40, 120):
        ended += tracker.update(Detections.empty(), _frame(i))[1]
    ended += tracker.flush()
    assert len(ended) == 1, [t.track_id for t in ended]
    assert ended[0].hits == 40 and ended[0].first_frame == 0 and ended[0].last_frame == 39
    assert tracker.confirmed_count == 1


def test_neighbours_that_only_touch_are_not_merged():
    tracker = VehicleTracker(TrackerConfig(min_hits=3), frame_rate=30)
    pair = Detections(np.array([[100, 100, 300, 260], [250, 100, 450, 260]]), [0.9, 0.9], [2, 2])
    for i in range(30):
        tracked, _ = tracker.update(pair, _frame(i))
    assert len(tracked) == 2 and len(tracker.flush()) == 2


def test_the_video_label_shows_the_tracks_class_not_this_frames_box(monkeypatch):
    """A van boxed as a truck in one frame is labelled with the class its record will give."""
    from collections import Counter

    from stream_pipeline.sinks import annotate
    from stream_pipeline.tracking.tracker import TrackState

    texts = []
    monkeypatch.setattr(annotate, "_label", lambda image, text, *args: texts.append(text))
    names = {2: "car", 7: "truck"}
    state = TrackState(5, 0, 0.0, 9, 0.3, np.array([10, 10, 90, 60], np.float32), class_votes=Counter({2: 8, 7: 1}))
    tracked = Detections(np.array([[10, 10, 90, 60]], np.float32), np.array([0.9], np.float32),
                         np.array([7], np.int32), np.array([5]))
    frame = Frame(image=np.zeros((120, 160, 3), np.uint8), index=9, timestamp_s=0.3, source="clip")
    annotate.Annotator(names, draw_clock=False).draw(frame, tracked, {5: state}, 1)
    assert texts == ["#5 car"]


def test_a_vehicles_class_is_decided_by_its_near_views():
    """A box truck driving away is boxed as a car in most of its small, far frames."""
    tracker = VehicleTracker(TrackerConfig(min_hits=1), frame_rate=30)
    image = np.zeros((720, 1280, 3), np.uint8)
    ended = []
    for i in range(12):
        near = i < 3  # large as a truck first, then small and far
        w = 300 - 25 * i
        box = np.array([[400.0, 300.0, 400.0 + w, 300.0 + 0.8 * w]], np.float32)
        dets = Detections(box, np.array([0.9], np.float32), np.array([7 if near else 2], np.int32))
        ended += tracker.update(dets, Frame(image=image, index=i, timestamp_s=i / 30))[1]
    ended += tracker.flush()
    assert [(t.class_votes[2], t.class_votes[7], t.class_id) for t in ended] == [(9, 3, 7)]
