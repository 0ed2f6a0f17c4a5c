"""Vehicle tracking: ultralytics' ByteTrack plus a track lifecycle.

ByteTrack (ultralytics.trackers.BYTETracker) assigns ids; `VehicleTracker` adds what
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
        from ultralytics.trackers.byte_tracker import BYTETracker

        self.config = config
        self.args = load_tracker_yaml(config.config)
        self._tracker = BYTETracker(self.args)
        # ByteTrack's buffer is in frames; ultralytics scales it the same way by frame rate.
        self._tracker.max_frames_lost = max(1, int(round(frame_rate / 30.0 * self.args.track_buffer)))
        self.tracks: dict[int, TrackState] = {}
        self.confirmed_count = 0

    def update(self, detections: Detections, frame: Frame) -> tuple[Detections, list[TrackState]]:
        """Track one frame. Returns the confirmed tracked detections and the tracks that ended."""
        boxes = _BoxesView(detections.xyxy, detections.confidence, detections.class_id.astype(np.float32))
        output = self._tracker.update(boxes, frame.image)
        tracked = self._to_detections(output, detections)
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
        ended = self._pop_ended()
        return tracked[keep], ended

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
            state = self.tracks.pop(int(track_id), None)
            if state is not None and state.confirmed:
                ended.append(state)
        return ended

    def flush(self) -> list[TrackState]:
        """End every open track (end of stream); returns the confirmed ones."""
        ended = [state for state in self.tracks.values() if state.confirmed]
        self.tracks.clear()
        return ended
