"""Event log (JSON lines) and the vehicle table (CSV).

Each record is flushed as it is written, so a crash or Ctrl-C never loses the vehicles
already reported.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stream_pipeline.core.records import VehicleRecord

if TYPE_CHECKING:
    from stream_pipeline.publishers import EventPublisher


class EventLog:
    """`events.jsonl`: one JSON object per line, each with an `event_id`.

    Every line written is also handed, as written, to the `publishers` (MQTT, webhook...).
    The id is derived from the run id and the line's sequence number, so each line has its
    own, and a publisher resending a line resends the same id (consumers de-duplicate by it).
    """

    def __init__(self, path: str | Path, publishers: Sequence["EventPublisher"] = (), run_id: uuid.UUID | None = None) -> None:
        self.path = Path(path)
        self.publishers = list(publishers)
        self.run_id = run_id or uuid.uuid4()
        self._sequence = 0
        self._file = None
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "EventLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, event: dict) -> str:
        """Append one event; returns its `event_id`."""
        if "event" not in event:
            raise ValueError("every event needs an 'event' type")
        event_id = str(uuid.uuid5(self.run_id, str(self._sequence)))
        self._sequence += 1
        stamped = {"event": event["event"], "event_id": event_id, **{k: v for k, v in event.items() if k not in ("event", "event_id")}}
        line = json.dumps(stamped, ensure_ascii=False)
        self._file.write(line + "\n")
        self._file.flush()
        self.counts[event["event"]] = self.counts.get(event["event"], 0) + 1
        for publisher in self.publishers:
            publisher.publish(stamped, line)
        return event_id


class VehicleCsv:
    """`vehicles.csv`: the vehicle records as columns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = None
        self._writer: csv.DictWriter | None = None

    def __enter__(self) -> "VehicleCsv":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A run owns its output folder: a re-run replaces the previous files, as the video does.
        self._file = self.path.open("w", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=["event_id", *VehicleRecord.csv_columns()])
        self._writer.writeheader()
        self._file.flush()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: VehicleRecord, event_id: str = "") -> None:
        self._writer.writerow({"event_id": event_id, **record.csv_row()})
        self._file.flush()
