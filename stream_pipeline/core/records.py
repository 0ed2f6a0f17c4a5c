"""The per-vehicle record written to events.jsonl and vehicles.csv."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class VehicleRecord:
    """One vehicle (one confirmed track), written once when its track ends."""

    track_id: int
    vehicle_class: str  # car / truck / bus / motorcycle ("class" in the outputs)
    first_frame: int
    last_frame: int
    first_seen_s: float
    last_seen_s: float
    wall_time: str  # ISO-8601 UTC, when the track ended (or the stream stopped)
    brand: str  # catalogue slug or "unknown"
    brand_confidence: float
    votes: int  # badge readings over the whole track that named `brand` (0 when unknown)
    readings: int  # all badge readings over the whole track, "unknown" included
    bbox: list[float]  # last box, pixels [x1, y1, x2, y2]
    snapshot: str | None  # vehicle snapshot, relative to the run folder
    badge_snapshot: str | None
    frames_seen: int
    detection_confidence: float  # detector confidence of the last box
    source: str
    # Lines crossed and zones entered/left, in order: {"zone", "direction": "in"|"out", "frame", "stream_s"}.
    zones: list[dict] = field(default_factory=list)

    def to_event(self) -> dict:
        data = asdict(self)
        vehicle_class = data.pop("vehicle_class")
        track_id = data.pop("track_id")
        return {"event": "vehicle", "track_id": track_id, "class": vehicle_class, **data}

    @classmethod
    def csv_columns(cls) -> list[str]:
        return ["class" if f.name == "vehicle_class" else f.name for f in fields(cls)]

    def csv_row(self) -> dict:
        row = self.to_event()
        row.pop("event")
        row["bbox"] = json.dumps(row["bbox"])
        row["snapshot"] = row["snapshot"] or ""
        row["badge_snapshot"] = row["badge_snapshot"] or ""
        row["zones"] = json.dumps(row["zones"])
        return row
