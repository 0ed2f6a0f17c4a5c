"""Vehicle tracking: ultralytics' ByteTrack plus a track lifecycle.

ByteTrack (ultralytics' BYTETracker, vendored in tracking/bytetrack/ so torch is never imported) assigns ids; `VehicleTracker` adds what
the pipeline needs on top: a track becomes a vehicle only after `min_hits` matched
frames, and when ByteTrack drops a track its state is handed back once (to be written
as an event) and forgotten, so per-track memory stays bounded on endless streams.
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
    confirmed: bool = False
    last_tick: int = 0  # tracker update count when last matched (frame indices may skip on live sources)
    # Brand-stage state (votes, best badge); set by the brand stage, dropped with the track.
    brand: "TrackBrand | None" = None
    # Best view of the vehicle so far, for the snapshot: (crop, box area).
    best_view: np.ndarray | None = None
    best_view_area: float = 0.0

    @property
    def class_id(self) -> int:
        return self.class_votes.most_common(1)[0][0]


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


class VehicleTracker:
    """Assigns track ids to detections and reports tracks that have ended."""

    def __init__(self, config: TrackerConfig, frame_rate: float = 30.0) -> None:
        from stream_pipeline.tracking.bytetrack import BYTETracker

        self.config = config
        self.args = load_tracker_yaml(config.config)
        self._tracker = BYTETracker(self.args)
        # ByteTrack's buffer is in frames; ultralytics scales it the same way by frame rate.
        self._tracker.max_frames_lost = max(1, int(round(frame_rate / 30.0 * self.args.track_buffer)))
        self.tracks: dict[int, TrackState] = {}
        self.confirmed_count = 0
        self._overlap_runs: dict[tuple[int, int], int] = {}  # (older id, younger id) -> frames overlapping
        self._merged_into: dict[int, int] = {}  # ByteTrack id of a merged duplicate -> the track it joined

    def update(self, detections: Detections, frame: Frame) -> tuple[Detections, list[TrackState]]:
        """Track one frame. Returns the confirmed tracked detections and the tracks that ended."""
        boxes = _BoxesView(detections.xyxy, detections.confidence, detections.class_id.astype(np.float32))
        output = self._tracker.update(boxes, frame.image)
        tracked = self._redirect_merged(self._to_detections(output, detections))
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
            state.last_tick = self._tracker.frame_id
            state.class_votes[int(class_id)] += 1
            if not state.confirmed and state.hits >= self.config.min_hits:
                state.confirmed = True
                self.confirmed_count += 1
            keep[row] = state.confirmed
        tracked = tracked[keep]
        tracked = tracked[self._merge_duplicates(tracked)]
        ended = self._pop_ended()
        return tracked, ended

    def _redirect_merged(self, tracked: Detections) -> Detections:
        """Rows of tracks merged into another carry that track's id; dropped when it has its own row."""
        if not self._merged_into or len(tracked) == 0:
            return tracked
        ids = np.array([self._merged_into.get(int(t), int(t)) for t in tracked.tracker_id], dtype=np.int64)
        own = {int(t) for t in tracked.tracker_id}
        keep = np.array([not (int(t) in self._merged_into and ids[i] in own) for i, t in enumerate(tracked.tracker_id)])
        out = Detections(tracked.xyxy, tracked.confidence, tracked.class_id, ids)
        return out[keep]

    def _merge_duplicates(self, tracked: Detections) -> np.ndarray:
        """Count frames in which two confirmed tracks cover the same vehicle; merge the younger
        into the older after `duplicate_frames` in a row. Returns the rows to keep."""
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
            if frames < self.config.duplicate_frames:
                continue
            older, younger = self.tracks.get(older_id), self.tracks.get(younger_id)
            if older is None or younger is None:
                continue  # already merged this frame
            self._absorb(older, younger)
            keep &= ids != younger_id
        return keep

    def _absorb(self, older: TrackState, younger: TrackState) -> None:
        log.debug("track %d is a duplicate of track %d: merged", younger.track_id, older.track_id)
        # hits stay the older's: the two were matched in the same frames
        older.first_frame, older.first_seen_s = min(older.first_frame, younger.first_frame), min(
            older.first_seen_s, younger.first_seen_s)
        older.class_votes.update(younger.class_votes)
        if younger.best_view_area > older.best_view_area:
            older.best_view, older.best_view_area = younger.best_view, younger.best_view_area
        if younger.brand is not None:
            if older.brand is None:
                older.brand = younger.brand
            else:
                older.brand.absorb(younger.brand)
        self.tracks.pop(younger.track_id, None)
        self.confirmed_count -= 1
        self._merged_into[younger.track_id] = older.track_id
        for merged, target in list(self._merged_into.items()):
            if target == younger.track_id:
                self._merged_into[merged] = older.track_id

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
        removed = getattr(self._tracker, "removed_stracks_frame", None)
        if removed is None:  # older ultralytics: derive from the live pools
            alive = {t.track_id for t in self._tracker.tracked_stracks + self._tracker.lost_stracks}
            removed_ids = [tid for tid in self.tracks if tid not in alive]
        else:
            removed_ids = [t.track_id for t in removed]
            # Tracks ByteTrack discards without reporting (duplicate suppression) must not linger.
            horizon = self._tracker.frame_id - 2 * self._tracker.max_frames_lost - 1
            removed_ids += [tid for tid, state in self.tracks.items() if state.last_tick < horizon]
        ended = []
        for track_id in removed_ids:
            if self._merged_into.pop(int(track_id), None) is not None:
                continue  # a merged duplicate: its vehicle lives on in the track it joined
            state = self.tracks.pop(int(track_id), None)
            if state is not None and state.confirmed:
                ended.append(state)
        return ended

    def flush(self) -> list[TrackState]:
        """End every open track (end of stream); returns the confirmed ones."""
        ended = [state for state in self.tracks.values() if state.confirmed]
        self.tracks.clear()
        self._merged_into.clear()
        self._overlap_runs.clear()
        return ended


def _pairwise_iou(xyxy: np.ndarray) -> np.ndarray:
    x1 = np.maximum(xyxy[:, None, 0], xyxy[None, :, 0])
    y1 = np.maximum(xyxy[:, None, 1], xyxy[None, :, 1])
    x2 = np.minimum(xyxy[:, None, 2], xyxy[None, :, 2])
    y2 = np.minimum(xyxy[:, None, 3], xyxy[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    return inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
