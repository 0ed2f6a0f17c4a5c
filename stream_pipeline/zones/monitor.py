"""`ZoneMonitor`: the run observer that counts vehicles over the configured lines and zones."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import replace

import cv2
import numpy as np

from stream_pipeline.brands.recognizer import track_decision
from stream_pipeline.core.observer import RunObserver
from stream_pipeline.core.records import VehicleRecord, utc_now_iso
from stream_pipeline.core.types import Detections, Frame
from stream_pipeline.tracking.tracker import TrackState
from stream_pipeline.zones.config import ZoneConfig
from stream_pipeline.zones.counters import IN, OUT, LineCounter, PolygonCounter, anchor_points

log = logging.getLogger(__name__)

LINE_COLOR = (0, 215, 255)  # BGR amber
POLYGON_COLOR = (255, 160, 0)
FLASH_COLOR = (60, 220, 60)
MIN_ZONE_PX = 8  # a line or zone smaller than this across is a coordinate mistake, not a zone
FLASH_FRAMES = 8  # a line or zone shows green this long after a vehicle crossed it


class _Zone:
    def __init__(self, config: ZoneConfig, width: int, height: int) -> None:
        self.config = config
        self.points = config.pixel_points(width, height)
        if config.kind == "line":
            self.counter: LineCounter | PolygonCounter = LineCounter(self.points[0], self.points[1], config.hysteresis_px)
        else:
            self.counter = PolygonCounter(self.points, config.hysteresis_px)
        self.live = Counter()  # crossings so far, by direction (drawn on the video)
        self.last_event_frame = -(10**9)
        outside = [p for p in self.points if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
        if outside:
            log.warning("zone '%s' reaches outside the %dx%d frame (point %s)", config.name, width, height, outside[0])
        # Coordinates are fractions only when all of them are within 0-1: [[0, 200], [1, 200]] is
        # a line one pixel long, which no vehicle will cross.
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        if max(max(xs) - min(xs), max(ys) - min(ys)) < MIN_ZONE_PX:
            log.warning("zone '%s' is under %d px across in the %dx%d frame: give every coordinate as a "
                        "fraction (0-1) or every one in pixels", config.name, MIN_ZONE_PX, width, height)


class ZoneMonitor(RunObserver):
    """Feeds each confirmed track's anchor point to every line / polygon, logs `crossing`,
    `zone_enter` and `zone_exit` events, lists each vehicle's passes in its record and counts
    them per direction, class and brand (the vehicle's final brand) for the `ended` event."""

    def __init__(self, zones: list[ZoneConfig], class_names: dict[int, str]) -> None:
        self.configs = zones
        self.class_names = class_names
        self.zones: list[_Zone] | None = None  # built on the first frame, when its size is known
        self._passes: dict[int, list[dict]] = defaultdict(list)
        self._counts = {z.name: _empty_counts(z.kind) for z in zones}

    def on_frame(self, frame: Frame, tracked: Detections, tracks: dict[int, TrackState]) -> list[dict]:
        if self.zones is None:
            self.zones = [_Zone(z, frame.width, frame.height) for z in self.configs]
        events: list[dict] = []
        if not len(tracked):
            return events
        anchors = {
            anchor: anchor_points(tracked.xyxy, anchor) for anchor in {z.config.anchor for z in self.zones}
        }
        for zone in self.zones:
            points = anchors[zone.config.anchor]
            for row, track_id in enumerate(tracked.tracker_id):
                track_id = int(track_id)
                direction = zone.counter.update(track_id, (float(points[row][0]), float(points[row][1])))
                if direction is None:
                    continue
                zone.live[direction] += 1
                zone.last_event_frame = frame.index
                self._passes[track_id].append({"zone": zone.config.name, "direction": direction,
                                               "frame": frame.index, "stream_s": round(frame.timestamp_s, 3)})
                events.append(self._event(zone, direction, track_id, int(tracked.class_id[row]), tracks.get(track_id), frame))
        return events

    def _event(self, zone: _Zone, direction: str, track_id: int, class_id: int, track: TrackState | None, frame: Frame) -> dict:
        if track is not None:
            class_id = track.class_id  # the track's majority class, as in its record
            decision = track_decision(track)
            brand, confidence = decision.brand, round(float(decision.confidence), 4)
        else:
            brand, confidence = "unknown", 0.0
        if zone.config.kind == "line":
            head = {"event": "crossing", "zone": zone.config.name, "track_id": track_id, "direction": direction}
        else:
            head = {"event": "zone_enter" if direction == IN else "zone_exit", "zone": zone.config.name, "track_id": track_id}
        return {**head, "class": self.class_names.get(class_id, str(class_id)), "brand": brand,
                "brand_confidence": confidence, "frame": frame.index, "stream_s": round(frame.timestamp_s, 3),
                "wall_time": utc_now_iso()}

    def on_vehicle(self, track: TrackState, record: VehicleRecord) -> VehicleRecord:
        ids = [track.track_id, *track.merged_ids]
        passes = self._vehicle_passes(ids)
        for zone in self.zones or ():
            for track_id in ids:
                zone.counter.forget(track_id)
        for item in passes:
            counts = self._counts[item["zone"]]
            direction = item["direction"]
            counts[direction] += 1
            for key, value in (("by_class", record.vehicle_class), ("by_brand", record.brand)):
                counts[key].setdefault(value, {IN: 0, OUT: 0})[direction] += 1
        return replace(record, zones=passes)

    def _vehicle_passes(self, ids: list[int]) -> list[dict]:
        """The passes of a vehicle's track and of the duplicates merged into it (`ids`, its own
        first). A duplicate's passes count only in zones the vehicle has none in yet: both tracks
        may have crossed the same line before they were found to be one vehicle."""
        passes: list[dict] = []
        for track_id in ids:
            done = {item["zone"] for item in passes}
            passes += [item for item in self._passes.pop(track_id, []) if item["zone"] not in done]
        return sorted(passes, key=lambda item: item["frame"])

    def summary(self) -> dict:
        return {"zones": self._counts}

    def draw(self, image: np.ndarray, frame: Frame) -> None:
        if self.zones is None:
            return
        thickness = 2 if image.shape[1] >= 1000 else 1
        scale = max(0.4, min(0.9, image.shape[1] / 1600))
        for zone in self.zones:
            flash = frame.index - zone.last_event_frame <= FLASH_FRAMES
            pts = np.round(np.asarray(zone.points)).astype(np.int32)
            if zone.config.kind == "line":
                color = FLASH_COLOR if flash else LINE_COLOR
                a, b = pts
                cv2.line(image, tuple(a), tuple(b), color, thickness + 1, cv2.LINE_AA)
                # Arrow from the middle towards the `in` side (right of the a -> b direction).
                d = (b - a).astype(np.float64)
                normal = np.array([-d[1], d[0]]) / max(1e-9, np.hypot(*d))
                mid = (a + b) / 2
                tip = mid + normal * 45
                cv2.arrowedLine(image, tuple(np.round(mid).astype(int)), tuple(np.round(tip).astype(int)),
                                color, thickness + 1, cv2.LINE_AA, tipLength=0.3)
                _text(image, "in", (int(tip[0]) + 6, int(tip[1]) + 10), color, scale, thickness)
                text = f"{zone.config.name}  in {zone.live[IN]}  out {zone.live[OUT]}"
                _text(image, text, (int(mid[0]) + 8, int(mid[1]) - 8), color, scale, thickness)
            else:
                color = FLASH_COLOR if flash else POLYGON_COLOR
                x, y, w, h = cv2.boundingRect(pts)
                x, y = max(0, x), max(0, y)
                roi = image[y : y + h, x : x + w]
                if roi.size:
                    overlay = roi.copy()
                    cv2.fillPoly(overlay, [pts - [x, y]], color)
                    cv2.addWeighted(overlay, 0.18, roi, 0.82, 0, dst=roi)
                cv2.polylines(image, [pts], True, color, thickness, cv2.LINE_AA)
                occupancy = zone.counter.occupancy if isinstance(zone.counter, PolygonCounter) else 0
                text = f"{zone.config.name}  inside {occupancy}  in {zone.live[IN]}  out {zone.live[OUT]}"
                _text(image, text, (int(pts[:, 0].min()) + 4, int(pts[:, 1].min()) - 6), color, scale, thickness)


def _empty_counts(kind: str) -> dict:
    return {"type": kind, IN: 0, OUT: 0, "by_class": {}, "by_brand": {}}


def _text(image: np.ndarray, text: str, origin: tuple[int, int], color, scale: float, thickness: int) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = max(0, min(origin[0], image.shape[1] - tw - 4))
    y = max(th + base + 2, min(origin[1], image.shape[0] - 2))
    cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 4, y), (30, 30, 30), -1)
    cv2.putText(image, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
