"""The run report: `report.html` in a run's output folder, rebuilt from its `events.jsonl`.

Layout of a run folder after `write_report`:
    report.html            the page (styles inline, no script, no network)
    report/brands.png      vehicles per brand
    report/timeline.png    vehicles per minute by class
    report/zones.png       line and zone counts (when the run had zones)
    report/thumbs/         small copies of the vehicle and badge snapshots
For a folder of videos, `write_index` adds `index.html` (+ `report/all_brands.png`) over the runs.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

from stream_pipeline.core.errors import UserError

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"
ASSETS = "report"
THUMB_PX = 240  # longest side of a table thumbnail (sharp at 120 CSS px on 2x screens)


def _thumbnail(source: Path, target: Path) -> str | None:
    import cv2

    image = cv2.imread(str(source))
    if image is None:
        return None
    scale = THUMB_PX / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return target.as_posix()


def write_report(run_dir: str | Path, index_link: str | None = None) -> Path:
    """Build `run_dir/report.html` (and `run_dir/report/`) from `run_dir/events.jsonl`."""
    from stream_pipeline.report import charts
    from stream_pipeline.report.data import load_run
    from stream_pipeline.report.render import run_page

    run_dir = Path(run_dir)
    if not (run_dir / "events.jsonl").is_file():
        raise UserError(f"no events.jsonl in {run_dir}")
    run = load_run(run_dir)
    assets = run_dir / ASSETS
    # Thumbnails are rebuilt whole, so none outlives its vehicle in a rebuilt report.
    shutil.rmtree(assets / "thumbs", ignore_errors=True)
    (assets / "zones.png").unlink(missing_ok=True)
    (assets / "thumbs").mkdir(parents=True)
    chart_files = {
        "brands": charts.brand_chart(run.brand_counts(), assets / "brands.png"),
        "timeline": charts.timeline_chart(run.vehicles, run.duration_s, assets / "timeline.png"),
    }
    zones = run.zone_counts()
    if zones:
        chart_files["zones"] = charts.zone_chart(zones, assets / "zones.png")
    thumbs: dict[int, tuple[str | None, str | None]] = {}
    for vehicle in run.vehicles:
        pair = []
        for key in ("snapshot", "badge_snapshot"):
            relative = vehicle.get(key)
            source = run_dir / relative if relative else None
            if source is None or not source.is_file():
                pair.append(None)
                continue
            made = _thumbnail(source, assets / "thumbs" / Path(relative).name)
            pair.append(Path(made).relative_to(run_dir).as_posix() if made else None)
        thumbs[vehicle.get("track_id")] = (pair[0], pair[1])
    links = {key: path.relative_to(run_dir).as_posix() for key, path in chart_files.items()}
    page = run_page(run, links, thumbs, index_link=index_link)
    target = run_dir / REPORT_FILE
    target.write_text(page, encoding="utf-8")
    return target


def write_index(root: str | Path, run_dirs: list[Path]) -> Path:
    """`root/index.html` over the runs in `run_dirs` (each with its own report.html)."""
    from stream_pipeline.report import charts
    from stream_pipeline.report.data import load_run
    from stream_pipeline.report.render import index_page

    root = Path(root)
    runs = [load_run(d) for d in run_dirs if (d / "events.jsonl").is_file()]
    assets = root / ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    brands: Counter = Counter()
    for run in runs:
        brands.update(run.brand_counts())
    # Not brands.png: a video named "report" has its own run folder (and brands.png) here.
    chart = charts.brand_chart(brands, assets / "all_brands.png", title="Vehicles per brand, all videos")
    links = [(run, (run.folder / REPORT_FILE).relative_to(root).as_posix()) for run in runs]
    target = root / INDEX_FILE
    target.write_text(index_page(links, chart.relative_to(root).as_posix()), encoding="utf-8")
    return target


def run_folders(path: Path) -> list[Path]:
    """Run folders below `path` (sub-folders holding an events.jsonl), sorted."""
    return sorted(p.parent for p in path.glob("*/events.jsonl"))


def rebuild(path: str | Path) -> list[Path]:
    """`stream-pipeline report OUT_DIR`: one run folder, or a folder of runs (+ index)."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"{path} is a file: give the run's output folder (the one holding events.jsonl)")
    if not path.is_dir():
        raise UserError(f"output folder not found: {path}")
    if (path / "events.jsonl").is_file():
        # One video of a folder run keeps its link back to the index.
        index_link = f"../{INDEX_FILE}" if (path.parent / INDEX_FILE).is_file() else None
        return [write_report(path, index_link=index_link)]
    folders = run_folders(path)
    if not folders:
        raise UserError(f"no events.jsonl in {path} or its sub-folders: not a run output folder")
    written = [write_report(folder, index_link=f"../{INDEX_FILE}") for folder in folders]
    return [*written, write_index(path, folders)]
