"""`summary.csv` of a folder run: every video's vehicle records in one table, with their video."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from stream_pipeline.sinks.events import VehicleCsv
from stream_pipeline.sinks.outdir import output_error

SUMMARY_FILE = "summary.csv"


def _rows_from_events(events: Path, columns: list[str]):
    """vehicles.csv's rows rebuilt from the event log (a run with `output.csv: false`)."""
    with events.open(encoding="utf-8") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:  # a line cut short by a crash: the rest still counts
                continue
            if isinstance(event, dict) and event.get("event") == "vehicle":
                yield {c: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                       for c, v in ((c, event.get(c)) for c in columns)}


def write_summary(out_root: Path, run_dirs: list[Path]) -> Path:
    """`out_root/summary.csv`: `video` (the run's sub-folder) then the columns of vehicles.csv,
    read from each run's vehicles.csv, or from its events.jsonl when the table was turned off."""
    target = Path(out_root) / SUMMARY_FILE
    columns = ["video", *VehicleCsv.columns()]
    try:
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            for run_dir in run_dirs:
                table, events = run_dir / "vehicles.csv", run_dir / "events.jsonl"
                if table.is_file():
                    with table.open(newline="", encoding="utf-8") as f:
                        for row in csv.DictReader(f):
                            writer.writerow({"video": run_dir.name, **row})
                elif events.is_file():
                    for row in _rows_from_events(events, columns[1:]):
                        writer.writerow({"video": run_dir.name, **row})
    except OSError as exc:
        raise output_error(target, exc) from None
    return target
