"""Event log (JSON lines) and the vehicle table (CSV).

Each record is flushed as it is written, so a crash or Ctrl-C never loses the vehicles
already reported.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from stream_pipeline.core.records import VehicleRecord


class EventLog:
    """`events.jsonl`: one JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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

    def write(self, event: dict) -> None:
        if "event" not in event:
            raise ValueError("every event needs an 'event' type")
        self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._file.flush()
        self.counts[event["event"]] = self.counts.get(event["event"], 0) + 1


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
        self._writer = csv.DictWriter(self._file, fieldnames=VehicleRecord.csv_columns())
        self._writer.writeheader()
        self._file.flush()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: VehicleRecord) -> None:
        self._writer.writerow(record.csv_row())
        self._file.flush()
