"""Event log (JSON lines) and the vehicle table (CSV).

Each record is flushed as it is written, so a crash or Ctrl-C never loses the vehicles
already reported. Every line goes through `redact`, so no camera credential reaches a file.
If a write fails (disk full, folder gone read-only) the file is cut back to its last
complete line, the sink stops writing and an OutputError says why: what is left is valid
and visibly unfinished (no `ended` event), never a half line.

Every event line gets an `event_id` and is handed, exactly as written, to the publishers
(MQTT, webhook: stream_pipeline/publishers/).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stream_pipeline.core.records import VehicleRecord
from stream_pipeline.core.redaction import redact
from stream_pipeline.sinks.outdir import output_error

if TYPE_CHECKING:
    from stream_pipeline.publishers import EventPublisher


class _LineFile:
    """A text file written whole line by line, flushed, and cut back on a failed write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = None
        self.failed = False

    def _open(self) -> None:
        # A run owns its output folder: a re-run replaces the previous files, as the video does.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each line goes straight to the file, and nothing is left pending in a
            # buffer to be written again (half) at close after a failure.
            self._file = self.path.open("wb", buffering=0)
        except OSError as exc:
            raise output_error(self.path, exc) from None

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, text: str) -> None:
        if self.failed or self._file is None:
            return  # the first failure is on its way up; later records have nowhere to go
        data = text.encode("utf-8")
        start = self._file.tell()
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:
            self.failed = True
            self._cut_back(start)
            raise output_error(self.path, exc) from None

    def _cut_back(self, size: int) -> None:
        """Drop the partial line (truncating frees space, so it works on a full disk too)."""
        try:
            self._file.truncate(size)
        except OSError:
            pass


class EventLog(_LineFile):
    """`events.jsonl`: one JSON object per line, each with an `event_id`.

    The id is derived from the run id and the line's sequence number, so each line has its
    own, and a publisher resending a line resends the same id (consumers de-duplicate by it).
    """

    def __init__(self, path: str | Path, publishers: Sequence["EventPublisher"] = (),
                 run_id: uuid.UUID | None = None) -> None:
        super().__init__(path)
        self.publishers = list(publishers)
        self.run_id = run_id or uuid.uuid4()
        self._sequence = 0
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "EventLog":
        self._open()
        return self

    def __exit__(self, *exc_info) -> None:
        self._close()

    def write(self, event: dict) -> str:
        """Append one event; returns its `event_id`."""
        if "event" not in event:
            raise ValueError("every event needs an 'event' type")
        event_id = str(uuid.uuid5(self.run_id, str(self._sequence)))
        self._sequence += 1
        line = redact(json.dumps({"event": event["event"], "event_id": event_id,
                                  **{k: v for k, v in event.items() if k not in ("event", "event_id")}},
                                 ensure_ascii=False))
        self._write(line + "\n")
        self.counts[event["event"]] = self.counts.get(event["event"], 0) + 1
        stamped = json.loads(line)
        for publisher in self.publishers:
            publisher.publish(stamped, line)
        return event_id


class VehicleCsv(_LineFile):
    """`vehicles.csv`: the vehicle records as columns."""

    def __enter__(self) -> "VehicleCsv":
        self._open()
        self._write(self._row(dict(zip(self.columns(), self.columns()))))
        return self

    def __exit__(self, *exc_info) -> None:
        self._close()

    @staticmethod
    def columns() -> list[str]:
        return ["event_id", *VehicleRecord.csv_columns()]

    def _row(self, row: dict) -> str:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=self.columns()).writerow(row)
        return buffer.getvalue()

    def write(self, record: VehicleRecord, event_id: str = "") -> None:
        row = {key: redact(value) if isinstance(value, str) else value for key, value in record.csv_row().items()}
        self._write(self._row({"event_id": event_id, **row}))
