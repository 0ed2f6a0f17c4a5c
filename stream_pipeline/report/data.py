"""What a report shows, read back from a run's `events.jsonl` (the report needs nothing else
but the snapshots beside it, so it can be rebuilt from any run folder)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

IN, OUT = "in", "out"
CLASS_ORDER = ("car", "truck", "bus", "motorcycle")


@dataclass
class RunData:
    folder: Path
    started: dict = field(default_factory=dict)
    ended: dict = field(default_factory=dict)  # the `ended` (or `error`) stream event; {} when cut short
    vehicles: list[dict] = field(default_factory=list)
    zone_events: list[dict] = field(default_factory=list)  # crossing / zone_enter / zone_exit
    skipped_lines: int = 0
    camera: str | None = None  # serve's camera name (its `started` event has it)

    @property
    def source(self) -> str:
        return self.started.get("source") or self.ended.get("source") or self.folder.name

    @property
    def title(self) -> str:
        source = self.source
        return source if "://" in source else Path(source).name

    @property
    def fps(self) -> float:
        return float(self.started.get("fps") or 0.0)

    @property
    def duration_s(self) -> float:
        """Stream time covered: frames / fps for files, else the last vehicle seen."""
        frames = self.ended.get("frames")
        if frames and self.fps and not self.started.get("live"):
            return frames / self.fps
        if self.ended.get("elapsed_s") and self.started.get("live"):
            return float(self.ended["elapsed_s"])
        return max((v.get("last_seen_s") or 0.0 for v in self.vehicles), default=0.0)

    def brand_counts(self) -> Counter:
        return Counter(v.get("brand", "unknown") for v in self.vehicles)

    def class_counts(self) -> Counter:
        return Counter(v.get("class", "?") for v in self.vehicles)

    def zone_counts(self) -> dict[str, dict]:
        """Per zone: type, in, out, by_class, by_brand; from the vehicle records (final class
        and brand of each vehicle). A run cut short has no record for the vehicles still in view:
        their crossing / zone events count instead, with the class and brand known then."""
        counts: dict[str, dict] = {}
        for name, item in (self.ended.get("zones") or {}).items():  # zones nobody crossed too
            counts[name] = {"type": item.get("type", "line"), IN: 0, OUT: 0, "by_class": {}, "by_brand": {}}
        kinds = {e["zone"]: ("line" if e["event"] == "crossing" else "polygon") for e in self.zone_events if "zone" in e}

        def add(name, direction, vehicle: dict) -> None:
            if direction not in (IN, OUT):
                return
            zone = counts.setdefault(name, {"type": kinds.get(name, "line"), IN: 0, OUT: 0, "by_class": {}, "by_brand": {}})
            zone[direction] += 1
            for key, value in (("by_class", vehicle.get("class", "?")), ("by_brand", vehicle.get("brand", "unknown"))):
                zone[key].setdefault(value, {IN: 0, OUT: 0})[direction] += 1

        for vehicle in self.vehicles:
            for item in vehicle.get("zones") or ():
                add(item.get("zone"), item.get("direction"), vehicle)
        if self.ended:
            # complete: every pass is in a record (a merged duplicate track's passes are not
            # counted, as `ended.zones` does not count them)
            return counts
        recorded = {v.get("track_id") for v in self.vehicles}
        for event in self.zone_events:
            if event.get("track_id") not in recorded:
                direction = {"zone_enter": IN, "zone_exit": OUT}.get(event["event"], event.get("direction"))
                add(event.get("zone"), direction, event)
        return counts


def load_run(folder: str | Path) -> RunData:
    folder = Path(folder)
    data = RunData(folder=folder)
    path = folder / "events.jsonl"
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                event = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):  # cut inside a character, or mid-line
                # A run killed mid-write can leave half a line: report the rest.
                data.skipped_lines += 1
                continue
            if not isinstance(event, dict):
                data.skipped_lines += 1
                continue
            kind = event.get("event")
            if kind == "vehicle":
                data.vehicles.append(event)
            elif kind in ("crossing", "zone_enter", "zone_exit"):
                data.zone_events.append(event)
            elif kind == "stream":
                if event.get("status") == "started":
                    data.started = event
                    data.camera = event.get("camera") if isinstance(event.get("camera"), str) else None
                elif event.get("status") in ("ended", "error"):
                    data.ended = event
    if data.skipped_lines:
        log.warning("%s: %d unreadable lines skipped", path, data.skipped_lines)
    data.vehicles.sort(key=lambda v: (v.get("first_seen_s") or 0.0, v.get("track_id") or 0))
    return data
