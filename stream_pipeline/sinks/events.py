"""Event log (JSON lines) and the vehicle table (CSV).

Each record is flushed as it is written, so a crash or Ctrl-C never loses the vehicles
already reported. Every line goes through `redact`, so no camera credential reaches a file.
If a write fails (disk full, folder gone read-only) the file is cut back to its last
complete line, the sink stops writing and an OutputError says why: what is left is valid
and visibly unfinished (no `ended` event), never a half line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from stream_pipeline.core.records import VehicleRecord
from stream_pipeline.core.redaction import redact
from stream_pipeline.sinks.outdir import output_error


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
    """`events.jsonl`: one JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "EventLog":
        self._open()
        return self

    def __exit__(self, *exc_info) -> None:
        self._close()

    def write(self, event: dict) -> None:
        if "event" not in event:
            raise ValueError("every event needs an 'event' type")
        self._write(redact(json.dumps(event, ensure_ascii=False)) + "\n")
        self.counts[event["event"]] = self.counts.get(event["event"], 0) + 1


class VehicleCsv(_LineFile):
    """`vehicles.csv`: the vehicle records as columns."""

    def __enter__(self) -> "VehicleCsv":
        self._open()
        self._write(self._row(dict(zip(VehicleRecord.csv_columns(), VehicleRecord.csv_columns()))))
        return self

    def __exit__(self, *exc_info) -> None:
        self._close()

    @staticmethod
    def _row(row: dict) -> str:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=VehicleRecord.csv_columns()).writerow(row)
        return buffer.getvalue()

    def write(self, record: VehicleRecord) -> None:
        row = {key: redact(value) if isinstance(value, str) else value for key, value in record.csv_row().items()}
        self._write(self._row(row))
