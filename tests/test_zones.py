"""Counting lines and zones: config validation, hysteresis, and counts on the highway clip
checked against a count made by hand from its frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_pipeline.core.config import load_config
from stream_pipeline.core.errors import ConfigError
from stream_pipeline.zones.counters import IN, OUT, LineCounter, PolygonCounter
from tests.conftest import read_events, run_cli

# ---------------------------------------------------------------------------------------
# Hand count, highway_overpass_720p.mp4 (1280x720, 30 fps), frames 0-289, line y = 360
# across the whole width drawn left to right ([[0, 0.5], [1, 0.5]]): "in" = moving down the
# picture (the left carriageway, towards the camera), "out" = moving up (the right
# carriageway, away from it).
# How: every 4th frame, the band y = 240..480 with the line drawn on it was cut out with
# OpenCV and stacked 10 strips per PNG (frames 0-39, 40-79, ...), and each vehicle was
# followed by eye from strip to strip; a crossing is the frame at which the bottom of its
# wheels passes y = 360 (+-2 frames: strips are 4 frames apart). "Clear" crossings: the
# vehicle is fully in the picture on both sides of the line. "Edge" crossings: it crosses
# while entering the picture at the right edge or leaving it at the left edge, where the
# detector sees only part of it (a box there may or may not be confirmed in time).
# No vehicle crosses between frames 285 and 297, so stopping at 290 frames cuts no crossing.
HAND_IN_CLEAR = [65, 105, 187, 242, 267]
HAND_IN_EDGE = [129, 225, 248]
HAND_OUT_CLEAR = [58, 68, 102, 110, 134, 135, 164, 171, 172, 185, 253, 267]
HAND_OUT_EDGE = [82, 142, 197, 222, 282]
FRAMES = 290
TOLERANCE = 5  # frames between the hand-read crossing and the counted one
# ---------------------------------------------------------------------------------------

ZONES_CONFIG = """\
brands:
  enabled: false
zones:
  - name: lanes
    line: [[0.0, 0.5], [1.0, 0.5]]
  - name: far lanes
    polygon: [[640, 260], [1100, 260], [1100, 420], [640, 420]]
"""


@pytest.fixture(scope="module")
def zones_run(tmp_path_factory, videos: Path) -> Path:
    out = tmp_path_factory.mktemp("zones")
    config = out / "zones.yaml"
    config.write_text(ZONES_CONFIG)
    result = run_cli("run", str(videos / "highway_overpass_720p.mp4"), "--config", str(config),
                     "--out", str(out / "run"), "--max-frames", str(FRAMES), "--no-progress")
    assert result.returncode == 0, result.stderr
    return out / "run"


def _match(counted: list[int], clear: list[int], edge: list[int]) -> tuple[list[int], list[int]]:
    """One-to-one match of counted crossing frames to hand-read ones (clear first).
    Returns (clear crossings not counted, counted crossings matching no hand-read one)."""
    unmatched = sorted(counted)
    missed = []
    for frame in clear:
        near = [c for c in unmatched if abs(c - frame) <= TOLERANCE]
        if near:
            unmatched.remove(min(near, key=lambda c: abs(c - frame)))
        else:
            missed.append(frame)
    for frame in edge:
        near = [c for c in unmatched if abs(c - frame) <= TOLERANCE]
        if near:
            unmatched.remove(min(near, key=lambda c: abs(c - frame)))
    return missed, unmatched


@pytest.mark.parametrize(("direction", "clear", "edge"), [(IN, HAND_IN_CLEAR, HAND_IN_EDGE), (OUT, HAND_OUT_CLEAR, HAND_OUT_EDGE)])
def test_line_counts_match_the_hand_count(zones_run: Path, direction: str, clear: list[int], edge: list[int]):
    events = read_events(zones_run / "events.jsonl")
    counted = [e["frame"] for e in events if e["event"] == "crossing" and e["direction"] == direction]
    missed, extra = _match(counted, clear, edge)
    assert missed == [], f"clear {direction} crossings not counted (hand-read frames): {missed}; counted: {counted}"
    assert extra == [], f"{direction} crossings counted where none was seen by hand: {extra}"
    assert len(clear) <= len(counted) <= len(clear) + len(edge)
    ended = events[-1]
    assert ended["status"] == "ended" and ended["frames"] == FRAMES
    assert ended["zones"]["lanes"][direction] == len(counted)


def test_crossing_events_records_and_ended_counts_agree(zones_run: Path):
    events = read_events(zones_run / "events.jsonl")
    crossings = [e for e in events if e["event"] == "crossing"]
    vehicles = {e["track_id"]: e for e in events if e["event"] == "vehicle"}
    assert crossings
    for e in crossings:
        assert e["zone"] == "lanes" and e["direction"] in (IN, OUT)
        assert e["class"] in {"car", "truck", "bus", "motorcycle"} and e["brand"] == "unknown"
        assert e["stream_s"] == pytest.approx(e["frame"] / 30.0, abs=0.01)
        # ...and the vehicle's record lists the same pass.
        passes = vehicles[e["track_id"]]["zones"]
        assert {"zone": "lanes", "direction": e["direction"], "frame": e["frame"], "stream_s": e["stream_s"]} in passes
    # A vehicle crosses the line once: jitter on the line never shows as a second crossing.
    tracks = [e["track_id"] for e in crossings]
    assert len(tracks) == len(set(tracks))
    lanes = events[-1]["zones"]["lanes"]
    assert lanes["type"] == "line"
    by_class = lanes["by_class"]
    for direction in (IN, OUT):
        assert sum(c[direction] for c in by_class.values()) == lanes[direction]
        assert lanes["by_brand"]["unknown"][direction] == lanes[direction]
        assert lanes[direction] == sum(1 for v in vehicles.values() for p in v["zones"]
                                       if p["zone"] == "lanes" and p["direction"] == direction)


def test_polygon_entries_and_exits(zones_run: Path):
    events = read_events(zones_run / "events.jsonl")
    zone_events = [e for e in events if e["event"] in ("zone_enter", "zone_exit") and e["zone"] == "far lanes"]
    enters = [e for e in zone_events if e["event"] == "zone_enter"]
    exits = [e for e in zone_events if e["event"] == "zone_exit"]
    # Most cars leaving up the right carriageway pass through this box: they enter at its
    # bottom edge and leave at its top.
    assert len(enters) >= 5 and len(exits) >= 5
    per_track: dict[int, list[str]] = {}
    for e in zone_events:
        per_track.setdefault(e["track_id"], []).append(e["event"])
    for track_id, sequence in per_track.items():
        # Enter and exit alternate: no double entry from a box wobbling on the edge.
        assert all(a != b for a, b in zip(sequence, sequence[1:])), (track_id, sequence)
    counts = events[-1]["zones"]["far lanes"]
    assert counts["type"] == "polygon" and counts[IN] == len(enters) and counts[OUT] == len(exits)


def test_report_counts_of_a_complete_run_are_the_runs_own(zones_run: Path):
    from stream_pipeline.report.data import load_run

    ended = read_events(zones_run / "events.jsonl")[-1]
    counts = load_run(zones_run).zone_counts()
    for name, zone in ended["zones"].items():
        assert (counts[name][IN], counts[name][OUT]) == (zone[IN], zone[OUT]), name


def test_report_of_a_run_cut_short_counts_the_vehicles_still_in_view(zones_run: Path, tmp_path: Path):
    """A killed run has no record for the vehicles still in view (and no `ended` counts): their
    crossing and zone events must still count in the report."""
    import shutil

    lines = (zones_run / "events.jsonl").read_text().splitlines(keepends=True)
    kinds = [json.loads(line)["event"] for line in lines]
    # cut where a crossing has been written whose vehicle record has not: killed mid-run
    cut = max(i for i, kind in enumerate(kinds) if kind == "crossing")
    kept = lines[:cut + 1] + ['{"event": "vehicle", "track_id": 99']  # and a half-written line
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "events.jsonl").write_text("".join(kept))
    if (zones_run / "snapshots").is_dir():
        shutil.copytree(zones_run / "snapshots", killed / "snapshots")
    events = [json.loads(line) for line in kept[:-1]]
    assert not any(e["event"] == "stream" and e.get("status") == "ended" for e in events)
    recorded = {e["track_id"] for e in events if e["event"] == "vehicle"}
    crossings = [e for e in events if e["event"] == "crossing"]
    assert any(e["track_id"] not in recorded for e in crossings)  # the case that used to be lost

    result = run_cli("report", str(killed))
    assert result.returncode == 0, result.stderr
    from stream_pipeline.report.data import load_run

    counts = load_run(killed).zone_counts()
    for direction in (IN, OUT):
        assert counts["lanes"][direction] == sum(e["direction"] == direction for e in crossings)
        assert sum(c[direction] for c in counts["lanes"]["by_class"].values()) == counts["lanes"][direction]
    far = [e["event"] for e in events if e["event"] in ("zone_enter", "zone_exit") and e["zone"] == "far lanes"]
    if far:
        assert counts["far lanes"][IN] == far.count("zone_enter") and counts["far lanes"][OUT] == far.count("zone_exit")
    assert "Lines and zones" in (killed / "report.html").read_text()


def test_zones_are_drawn_on_the_video(zones_run: Path, videos: Path):
    import cv2

    def frame_at(path: Path, index: int) -> np.ndarray:
        capture = cv2.VideoCapture(str(path))
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
        capture.release()
        assert ok
        return image.astype(np.int16)

    drawn = frame_at(zones_run / "annotated.mp4", 20)
    original = frame_at(videos / "highway_overpass_720p.mp4", 20)
    # Frame 20: no vehicle near the line; the line (y = 360) is painted across the picture,
    # the road a little above it is left alone.
    on_line = np.abs(drawn[358:363, 50:600] - original[358:363, 50:600]).mean()
    off_line = np.abs(drawn[330:335, 50:600] - original[330:335, 50:600]).mean()
    assert on_line > 40 and off_line < 10, (on_line, off_line)


# --- hysteresis and direction on synthetic anchor tracks (exact, fast) -----------------


def test_line_direction_convention():
    line = LineCounter((0, 100), (200, 100), hysteresis=5)  # drawn left to right
    assert [line.update(1, (50, y)) for y in (80, 90, 110, 120)] == [None, None, IN, None]  # moving down: in
    assert [line.update(2, (50, y)) for y in (120, 110, 90, 80)] == [None, None, OUT, None]
    reverse = LineCounter((200, 100), (0, 100), hysteresis=5)  # same line drawn right to left
    assert [reverse.update(1, (50, y)) for y in (80, 120)] == [None, OUT]


def test_jitter_on_the_line_counts_once():
    line = LineCounter((0, 100), (200, 100), hysteresis=8)
    rng = np.random.default_rng(0)
    # A vehicle approaches, stops on the line with its box wobbling +-6 px for 200 frames,
    # then drives on.
    ys = list(range(60, 100, 4)) + list(100 + rng.uniform(-6, 6, 200)) + list(range(100, 140, 4))
    results = [line.update(7, (100, y)) for y in ys]
    assert [r for r in results if r] == [IN]
    # A vehicle that noses onto the line, wobbles there and backs off has not crossed;
    # without the band its first wobble past the line would count.
    back = list(range(60, 100, 4)) + list(100 + rng.uniform(-6, 6, 50)) + list(range(96, 60, -4))
    banded, bare = LineCounter((0, 100), (200, 100), 8), LineCounter((0, 100), (200, 100), 0)
    assert [r for r in (banded.update(9, (100, y)) for y in back) if r] == []
    assert [r for r in (bare.update(9, (100, y)) for y in back) if r] == [IN]
    # Jumps wider than the band (a box cut short while another vehicle hides part of it):
    # still one crossing per track and line.
    jumps = [80, 120, 80, 120, 80, 120]
    line2 = LineCounter((0, 100), (200, 100), hysteresis=8)
    assert [r for r in (line2.update(8, (100, y)) for y in jumps) if r] == [IN]
    # Once the track has ended and is forgotten, its id may be reused by a new vehicle.
    line2.forget(8)
    assert [r for r in (line2.update(8, (100, y)) for y in (120, 80)) if r] == [OUT]


def test_passing_beside_a_segment_is_not_a_crossing():
    line = LineCounter((0, 100), (200, 100), hysteresis=5)
    assert [line.update(1, (300, y)) for y in (80, 120)] == [None, None]
    # Seen above the line beside it, then below it across it: no crossing either.
    assert [line.update(2, p) for p in ((300, 80), (150, 120))] == [None, None]


def test_a_vehicle_first_seen_inside_the_band_still_crosses():
    """The first position is the starting side, even a few pixels from the line: the band only
    keeps a settled side from flipping."""
    line = LineCounter((0, 360), (1280, 360), hysteresis=8)
    assert [line.update(1, (640, y)) for y in (355, 372, 395, 420)] == [None, IN, None, None]
    assert [line.update(2, (640, y)) for y in (365, 350, 330)] == [None, OUT, None]
    box = PolygonCounter([(400, 300), (900, 300), (900, 600), (400, 600)], hysteresis=8)
    assert [box.update(3, (x, 450)) for x in (395, 420, 500, 800, 920)] == [None, IN, None, None, OUT]
    assert [box.update(4, (x, 450)) for x in (405, 395, 380)] == [None, None, OUT]  # first seen just inside


def test_a_fast_vehicle_crossing_near_a_line_end_is_counted():
    """Its path between two frames passes through the segment, though the second anchor is
    already beyond the segment's end."""
    line = LineCounter((300, 400), (900, 400), hysteresis=8)
    assert [line.update(1, p) for p in ((840, 340), (880, 385), (920, 430), (960, 475))] == [None, None, IN, None]
    # the same speed just past the end: the path passes beside the segment, no crossing
    beside = LineCounter((300, 400), (900, 400), hysteresis=8)
    assert [beside.update(2, p) for p in ((880, 340), (920, 385), (960, 430))] == [None, None, None]
    # and once round the end, coming back through the segment is a crossing
    assert [beside.update(2, p) for p in ((850, 430), (820, 370))] == [None, OUT]


def test_polygon_enter_exit_with_hysteresis():
    box = PolygonCounter([(0, 0), (100, 0), (100, 100), (0, 100)], hysteresis=5)
    path = [(-20, 50), (-2, 50), (2, 50), (-3, 50), (20, 50), (50, 50), (97, 50), (103, 50), (120, 50)]
    assert [box.update(1, p) for p in path] == [None, None, None, None, IN, None, None, None, OUT]
    assert box.update(2, (50, 50)) is None  # first seen inside: not an entry
    assert box.occupancy == 1


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("zones:\n  - name: a\n", "zone 'a' needs exactly one of 'line' or 'polygon'"),
        ("zones:\n  - name: a\n    line: [[0, 0], [1, 1]]\n    polygon: [[0, 0], [1, 0], [1, 1]]\n", "exactly one"),
        ("zones:\n  - name: a\n    line: [[0, 0]]\n", "'zones.0.line'"),
        ("zones:\n  - name: a\n    line: [[0, 0], [0, 0]]\n", "the line's two points are the same"),
        ("zones:\n  - name: a\n    line: [[0, -1], [5, 5]]\n", "'zones.0.line.0.1'"),
        ("zones:\n  - name: a\n    line: [[0, 0, 3], [5, 5]]\n", "'zones.0.line.0'"),
        ("zones:\n  - name: a\n    polygon: [[0, 0], [1, 0], [2, 0]]\n", "the polygon has no area"),
        ("zones:\n  - name: a\n    line: [[0, 0], [1, 1]]\n  - name: a\n    line: [[0, 1], [1, 0]]\n", "duplicate zone name 'a'"),
        ("zones:\n  - name: a\n    line: [[0, 0], [1, 1]]\n    hysteresis: 3\n", "unknown key 'zones.0.hysteresis'"),
        ("zones:\n  - name: a\n    line: [[0, 0], [1, 1]]\n    anchor: top\n", "'zones.0.anchor'"),
        ("zones:\n  - line: [[0, 0], [1, 1]]\n", "'zones.0.name'"),
        ("zones:\n  name: a\n", "'zones'"),
    ],
)
def test_invalid_zone_config_names_the_problem(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_fractions_and_pixels(tmp_path: Path):
    path = tmp_path / "zones.yaml"
    path.write_text("zones:\n  - name: mid\n    line: [[0, 0.5], [1, 0.5]]\n"
                    "  - name: px\n    polygon: [[10, 10], [300, 10], [300, 1]]\n")
    mid, px = load_config(path).zones
    assert mid.pixel_points(1280, 720) == [(0.0, 360.0), (1280.0, 360.0)]
    assert px.pixel_points(1280, 720) == [(10.0, 10.0), (300.0, 10.0), (300.0, 1.0)]


def test_a_zone_given_in_mixed_units_or_off_the_frame_is_warned_about(tmp_path: Path, caplog):
    import logging

    from stream_pipeline.zones.config import ZoneConfig
    from stream_pipeline.zones.monitor import _Zone

    with caplog.at_level(logging.WARNING, logger="stream_pipeline.zones.monitor"):
        _Zone(ZoneConfig(name="mixed", line=[[0, 200], [1, 200]]), 1280, 720)  # x in fractions, y in pixels
        _Zone(ZoneConfig(name="elsewhere", polygon=[[1400, 800], [1900, 800], [1900, 1000]]), 1280, 720)
        _Zone(ZoneConfig(name="fine", line=[[0, 0.5], [1, 0.5]]), 1280, 720)
    messages = [r.getMessage() for r in caplog.records]
    assert any("zone 'mixed' is under 8 px across" in m for m in messages), messages
    assert any("zone 'elsewhere' reaches outside the 1280x720 frame" in m for m in messages), messages
    assert not any("'fine'" in m for m in messages), messages
