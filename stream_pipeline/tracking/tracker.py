"""Vehicle tracking: ultralytics' ByteTrack plus a track lifecycle.

ByteTrack (ultralytics' BYTETracker, vendored in tracking/bytetrack/ so torch is never imported) assigns ids; `VehicleTracker` adds what
the pipeline needs on top: a track becomes a vehicle only after `min_hits` matched
frames (counted from the detection that started it), and when a track ends its state is
handed back once (to be written as an event) and forgotten, so per-track memory stays
bounded on endless streams.

A lost track is kept for `track_buffer` of ByteTrack's updates (processed frames), so a vehicle
is found again after frames were skipped, and for at most GAP_S of stream time
(`Frame.timestamp_s`); a stall or reconnect ends every open track (`flush`), so a vehicle that
stands where another stood before the gap starts a record of its own.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import yaml

from stream_pipeline.core.config import TrackerConfig
from stream_pipeline.core.errors import ConfigError
from stream_pipeline.core.paths import resolve_model_path
from stream_pipeline.core.types import Detections, Frame

if TYPE_CHECKING:
    from stream_pipeline.brands.recognizer import TrackBrand

log = logging.getLogger(__name__)

_REQUIRED_KEYS = {"tracker_type", "track_high_thresh", "track_low_thresh", "new_track_thresh", "track_buffer", "match_thresh"}


class _BoxesView:
    """The minimal `Boxes`-like view BYTETracker.update() reads (conf, cls, xywh, masks)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls

    @property
    def xywh(self) -> np.ndarray:
        xywh = self.xyxy.copy()
        xywh[:, 2:] = self.xyxy[:, 2:] - self.xyxy[:, :2]
        xywh[:, :2] = self.xyxy[:, :2] + xywh[:, 2:] / 2
        return xywh

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> "_BoxesView":
        return _BoxesView(self.xyxy[index], self.conf[index], self.cls[index])


@dataclass
class TrackState:
    """Everything the pipeline remembers about one track while it is alive."""

    track_id: int
    first_frame: int
    first_seen_s: float
    last_frame: int
    last_seen_s: float
    bbox: np.ndarray
    hits: int = 0
    last_confidence: float = 0.0
    class_votes: Counter = field(default_factory=Counter)
    # per class, the summed box area of its detections: the class decision weighs near views
    # over far ones (a box truck driving away was a "car" in most of its tiny frames)
    class_area: Counter = field(default_factory=Counter)
    confirmed: bool = False
    # Brand-stage state (votes, best badge); set by the brand stage, dropped with the track.
    brand: "TrackBrand | None" = None
    # Best view of the vehicle so far, for the snapshot: (crop, box area).
    best_view: np.ndarray | None = None
    best_view_area: float = 0.0
    # Ids of duplicate tracks merged into this one (their zone passes belong to this vehicle).
    merged_ids: list[int] = field(default_factory=list)

    @property
    def class_id(self) -> int:
        votes = self.class_area if self.class_area else self.class_votes
        return votes.most_common(1)[0][0]


def load_tracker_yaml(path: str | Path) -> SimpleNamespace:
    resolved = resolve_model_path(path)
    if not resolved.is_file():
        raise ConfigError(f"tracker config not found: {resolved}")
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in tracker config {resolved}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"tracker config {resolved} must be a mapping")
    missing = sorted(_REQUIRED_KEYS - data.keys())
    if missing:
        raise ConfigError(f"tracker config {resolved}: missing key '{missing[0]}'")
    if data["tracker_type"] != "bytetrack":
        raise ConfigError(f"tracker config {resolved}: 'tracker_type' must be bytetrack, got {data['tracker_type']!r}")
    data.setdefault("fuse_score", True)
    return SimpleNamespace(**data)


# ByteTrack's `track_buffer` is in frames at this rate (ultralytics scales it by the frame rate
# the same way).
BUFFER_FPS = 30.0
# A lost track is kept for `track_buffer` of ByteTrack's updates (processed frames): when a busy
# machine skips frames, in bursts, a vehicle is found again a few updates later, and keeping it
# fewer updates split one vehicle into a record per burst (live highway at ~7 FPS: median record
# 60-74 frames long by updates, 5-9 frames with a 1 s clock). Stream time bounds it too: a
# vehicle not matched for GAP_S of stream time has ended (a gap with no stall notice).
GAP_S = 5.0


class VehicleTracker:
    """Assigns track ids to detections and reports tracks that have ended."""

    def __init__(self, config: TrackerConfig, frame_rate: float = 30.0) -> None:
        from stream_pipeline.tracking.bytetrack import BYTETracker

        self.config = config
        self.args = load_tracker_yaml(config.config)
        self._tracker = BYTETracker(self.args)
        self._tracker.max_frames_lost = max(1, int(round(frame_rate / BUFFER_FPS * self.args.track_buffer)))
        self.lost_after_s = max(GAP_S, self.args.track_buffer / BUFFER_FPS)  # see GAP_S
        self.tracks: dict[int, TrackState] = {}
        self.confirmed_count = 0
        self._overlap_runs: dict[tuple[int, int], int] = {}  # (older id, younger id) -> frames overlapping
        # Every live ByteTrack track -> the vehicle (TrackState id) it feeds: itself, or the track a
        # duplicate was merged into. A vehicle ends when no live ByteTrack track feeds it.
        self._vehicle_of: dict[int, int] = {}
        self._matched_s: dict[int, float] = {}  # live ByteTrack track -> stream time of its last match

    def update(self, detections: Detections, frame: Frame) -> tuple[Detections, list[TrackState]]:
        """Track one frame. Returns the confirmed tracked detections and the tracks that ended."""
        self._expire(frame.timestamp_s)
        boxes = _BoxesView(detections.xyxy, detections.confidence, detections.class_id.astype(np.float32))
        output = self._tracker.update(boxes, frame.image)
        self._note_matches(frame.timestamp_s)
        tracked = self._rows_by_vehicle(self._to_detections(self._with_new_tracks(output), detections))
        keep = np.zeros(len(tracked), dtype=bool)
        for row, (track_id, box, class_id, score) in enumerate(
            zip(tracked.tracker_id, tracked.xyxy, tracked.class_id, tracked.confidence)
        ):
            state = self.tracks.get(int(track_id))
            if state is None:
                state = TrackState(int(track_id), frame.index, frame.timestamp_s, frame.index, frame.timestamp_s, box)
                self.tracks[int(track_id)] = state
            state.last_frame, state.last_seen_s, state.bbox = frame.index, frame.timestamp_s, box.copy()
            state.hits += 1
            state.last_confidence = float(score)
            state.class_votes[int(class_id)] += 1
            state.class_area[int(class_id)] += float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))
            if not state.confirmed and state.hits >= self.config.min_hits:
                state.confirmed = True
                self.confirmed_count += 1
            keep[row] = state.confirmed
        tracked = tracked[keep]
        tracked = tracked[self._merge_duplicates(tracked)]
        ended = self._pop_ended()
        return tracked, ended

    def _expire(self, now_s: float) -> None:
        """Drop ByteTrack tracks (tracked or lost) not matched for `lost_after_s` of stream time: after
        a gap in the stream, a box where a vehicle stood before it is another vehicle."""
        horizon = now_s - self.lost_after_s
        stale = {track_id for track_id, seen_s in self._matched_s.items() if seen_s < horizon}
        if not stale:
            return
        for pool in ("tracked_stracks", "lost_stracks"):
            kept = []
            for strack in getattr(self._tracker, pool):
                if strack.track_id in stale:
                    strack.mark_removed()
                else:
                    kept.append(strack)
            setattr(self._tracker, pool, kept)

    def _note_matches(self, now_s: float) -> None:
        frame_id = self._tracker.frame_id
        for strack in self._tracker.tracked_stracks:
            if strack.frame_id == frame_id:  # matched (or started) in this update
                self._matched_s[strack.track_id] = now_s

    def _with_new_tracks(self, output: np.ndarray) -> np.ndarray:
        """ByteTrack's output plus the tracks started in this update, which it reports only from
        their second match: the detection that starts a track is the vehicle's first sighting."""
        new = [strack.result for strack in self._tracker.tracked_stracks if not strack.is_activated]
        if not new:
            return output
        return np.concatenate([output.reshape(-1, 8), np.asarray(new, dtype=np.float32)])

    def _rows_by_vehicle(self, tracked: Detections) -> Detections:
        """Rows under the id of the vehicle their track feeds (a merged duplicate feeds the track it
        joined), one row per vehicle: its own track's row when there is one."""
        if len(tracked) == 0:
            return tracked
        own_ids = [int(t) for t in tracked.tracker_id]
        ids = np.array([self._vehicle_of.setdefault(t, t) for t in own_ids], dtype=np.int64)
        keep, seen = np.zeros(len(ids), dtype=bool), set()
        for row in sorted(range(len(ids)), key=lambda r: own_ids[r] != ids[r]):
            if ids[row] not in seen:
                seen.add(int(ids[row]))
                keep[row] = True
        return Detections(tracked.xyxy, tracked.confidence, tracked.class_id, ids)[keep]

    def _merge_duplicates(self, tracked: Detections) -> np.ndarray:
        """Two confirmed tracks whose boxes overlap by `duplicate_iou` are taken for one vehicle: the
        younger's row is withheld from the first such frame (so the vehicle is counted, read and drawn
        once), and after `duplicate_frames` in a row it is merged into the older. Returns the rows to keep."""
        keep = np.ones(len(tracked), dtype=bool)
        if len(tracked) < 2:
            self._overlap_runs.clear()
            return keep
        iou = _pairwise_iou(tracked.xyxy)
        ids = tracked.tracker_id
        runs = {}
        for i, j in zip(*np.nonzero(np.triu(iou >= self.config.duplicate_iou, k=1))):
            a, b = self.tracks[int(ids[i])], self.tracks[int(ids[j])]
            older, younger = (a, b) if (a.first_frame, a.track_id) <= (b.first_frame, b.track_id) else (b, a)
            pair = (older.track_id, younger.track_id)
            runs[pair] = self._overlap_runs.get(pair, 0) + 1
        self._overlap_runs = runs
        for (older_id, younger_id), frames in sorted(runs.items()):
            keep &= ids != younger_id
            if frames < self.config.duplicate_frames:
                continue
            older, younger = self.tracks.get(older_id), self.tracks.get(younger_id)
            if older is None or younger is None:
                continue  # already merged this frame
            self._absorb(older, younger)
        return keep

    def _absorb(self, older: TrackState, younger: TrackState) -> None:
        log.debug("track %d is a duplicate of track %d: merged", younger.track_id, older.track_id)
        # hits stay the older's: the two were matched in the same frames
        older.first_frame, older.first_seen_s = min(older.first_frame, younger.first_frame), min(
            older.first_seen_s, younger.first_seen_s)
        older.class_votes.update(younger.class_votes)
        older.class_area.update(younger.class_area)
        if younger.best_view_area > older.best_view_area:
            older.best_view, older.best_view_area = younger.best_view, younger.best_view_area
        if younger.brand is not None:
            if older.brand is None:
                older.brand = younger.brand
            else:
                older.brand.absorb(younger.brand)
        older.merged_ids += [younger.track_id, *younger.merged_ids]
        self.tracks.pop(younger.track_id, None)
        self.confirmed_count -= 1
        # The younger's ByteTrack tracks now feed the older: whichever of them is lost first, the
        # vehicle goes on (one record) while any is still matched.
        for track_id, vehicle in self._vehicle_of.items():
            if vehicle == younger.track_id:
                self._vehicle_of[track_id] = older.track_id

    def _to_detections(self, output: np.ndarray, detections: Detections) -> Detections:
        if len(output) == 0:
            return Detections.empty()
        # Rows: x1, y1, x2, y2, track_id, score, cls, detection index. The box is the
        # detection's own (not the Kalman estimate) so crops follow what was seen.
        index = output[:, 7].astype(int)
        return Detections(
            xyxy=detections.xyxy[index],
            confidence=output[:, 5],
            class_id=output[:, 6].astype(np.int32),
            tracker_id=output[:, 4].astype(np.int64),
        )

    def _pop_ended(self) -> list[TrackState]:
        """Vehicles no live ByteTrack track feeds any more (removed, expired, or discarded as
        ByteTrack's own duplicates) have ended; the confirmed ones are returned, once."""
        alive = {strack.track_id for strack in self._tracker.tracked_stracks}
        alive.update(strack.track_id for strack in self._tracker.lost_stracks)
        for registry in (self._vehicle_of, self._matched_s):
            for track_id in [t for t in registry if t not in alive]:
                del registry[track_id]
        fed = set(self._vehicle_of.values())
        ended = []
        for vehicle in [v for v in self.tracks if v not in fed]:
            state = self.tracks.pop(vehicle)
            if state.confirmed:
                ended.append(state)
        return ended

    def flush(self) -> list[TrackState]:
        """End every open track (end of the stream, or a gap in it); returns the confirmed ones.
        ByteTrack forgets them too: what is seen next starts new tracks (ids keep counting up)."""
        ended = [state for state in self.tracks.values() if state.confirmed]
        self.tracks.clear()
        self._vehicle_of.clear()
        self._matched_s.clear()
        self._overlap_runs.clear()
        for strack in self._tracker.tracked_stracks + self._tracker.lost_stracks:
            strack.mark_removed()
        self._tracker.tracked_stracks, self._tracker.lost_stracks, self._tracker.removed_stracks = [], [], []
        return ended


def _pairwise_iou(xyxy: np.ndarray) -> np.ndarray:
    x1 = np.maximum(xyxy[:, None, 0], xyxy[None, :, 0])
    y1 = np.maximum(xyxy[:, None, 1], xyxy[None, :, 1])
    x2 = np.minimum(xyxy[:, None, 2], xyxy[None, :, 2])
    y2 = np.minimum(xyxy[:, None, 3], xyxy[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    return inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
