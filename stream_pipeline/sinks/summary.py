"""`summary.csv` of a folder run: every video's vehicle records in one table, with their video."""

from __future__ import annotations

import csv
from pathlib import Path

from stream_pipeline.sinks.events import VehicleCsv
from stream_pipeline.sinks.outdir import output_error

SUMMARY_FILE = "summary.csv"


def write_summary(out_root: Path, run_dirs: list[Path]) -> Path:
    """`out_root/summary.csv`: `video` (the run's sub-folder) then the columns of vehicles.csv."""
    target = Path(out_root) / SUMMARY_FILE
    columns = ["video", *VehicleCsv.columns()]
    try:
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            for run_dir in run_dirs:
                table = run_dir / "vehicles.csv"
                if not table.is_file():
                    continue
                with table.open(newline="", encoding="utf-8") as f:
                    for row in csv.DictReader(f):
                        writer.writerow({"video": run_dir.name, **row})
    except OSError as exc:
        raise output_error(target, exc) from None
    return target
