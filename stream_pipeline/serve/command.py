"""`stream-pipeline serve CAMERAS.yaml`: many cameras, one process, one model set.

Layout of the output folder: one sub-folder per camera, as `run` writes it (events.jsonl,
vehicles.csv, annotated.mp4, snapshots/, report.html), and `index.html` over the cameras.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream_pipeline.core.errors import OutputError, SourceError, UserError
from stream_pipeline.pipeline import Pipeline
from stream_pipeline.serve.camera import CameraStats, CameraWorker
from stream_pipeline.serve.config import load_cameras
from stream_pipeline.serve.models import DetectionScheduler, LockedModel
from stream_pipeline.sinks.outdir import OutDirClaim

log = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)  # whole lines in logs and pipes: no wrap at 80 columns


def _fmt(value, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def status_table(stats: list[CameraStats]) -> Table:
    table = Table(title="stream-pipeline serve", title_justify="left")
    for column in ("camera", "state", "FPS", "frames", "skipped", "vehicles", "last frame", "latency", "retries"):
        table.add_column(column, justify="left" if column in ("camera", "state") else "right")
    colours = {"running": "green", "stalled": "yellow", "retrying": "yellow", "failed": "red"}
    for s in stats:
        state = f"[{colours[s.state]}]{s.state}[/]" if s.state in colours else s.state
        table.add_row(s.name, state, f"{s.fps:.1f}", str(s.frames), str(s.frames_dropped), str(s.vehicles),
                      _fmt(s.last_frame_age_s, ".1f", " s"), _fmt(s.latency_ms(), ".0f", " ms"), str(s.retries))
    return table


def status_line(s: CameraStats) -> str:
    return (f"status: {s.name} {s.state}, {s.fps:.1f} FPS, {s.frames} frames, {s.frames_dropped} skipped, "
            f"{s.vehicles} vehicles, last frame {_fmt(s.last_frame_age_s, '.1f', ' s')} ago, "
            f"latency {_fmt(s.latency_ms(), '.0f', ' ms')}, {s.retries} retries")


def load_models(configs):
    """Each model once: the detector (batched over cameras) and, when any camera reads brands, the brand models."""
    from stream_pipeline.brands.recognizer import BrandRecognizer
    from stream_pipeline.detection import VehicleDetector

    first = next(iter(configs.values()))
    scheduler = DetectionScheduler(VehicleDetector(first.detector), max_batch=max(1, len(configs)))
    with_brands = [c for c in configs.values() if c.brands.enabled]
    recognizer = None
    if with_brands:
        recognizer = BrandRecognizer(with_brands[0].brands)
        lock = threading.Lock()
        recognizer.logo_detector = LockedModel(recognizer.logo_detector, lock)
        recognizer.classifier = LockedModel(recognizer.classifier, lock)
    return scheduler, recognizer


def serve_command(args: argparse.Namespace) -> int:
    serve, configs = load_cameras(args.cameras, args.config)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    out_root = Path(args.out) if args.out else Path("runs") / time.strftime("serve-%Y%m%d-%H%M%S")
    # a restarted serve into the same folder would truncate every camera's event log; with
    # --overwrite the previous runs are cleared only once the models have loaded
    claim = OutDirClaim(out_root, overwrite=getattr(args, "overwrite", False))
    with claim.loading_models():
        scheduler, recognizer = load_models(configs)
    stop = threading.Event()
    workers = []
    for camera in serve.cameras:
        config = configs[camera.name]
        camera_recognizer = recognizer.fork(config.brands) if recognizer is not None and config.brands.enabled else None
        pipeline = Pipeline(config, detector=scheduler, recognizer=camera_recognizer)
        workers.append(CameraWorker(camera.name, camera.source, config, pipeline, out_root / camera.name,
                                    serve.retry, stop, serve.status_interval_s, args.max_frames))
    console.print(f"serving {len(workers)} cameras; outputs in {out_root}/", markup=False)
    interrupted = False
    live = None if args.no_progress else Live(status_table([w.stats for w in workers]), console=console,
                                               refresh_per_second=1, transient=False)
    try:
        for worker in workers:
            worker.start()
        if live is not None:
            live.start()
        next_line = time.monotonic() + serve.status_interval_s
        while not all(w.done for w in workers):
            time.sleep(0.5)
            if live is not None:
                live.update(status_table([w.stats for w in workers]))
            elif time.monotonic() >= next_line:
                next_line = time.monotonic() + serve.status_interval_s
                for worker in workers:
                    log.info("%s", status_line(worker.stats))
    except KeyboardInterrupt:
        interrupted = True
        console.print("stopping every camera...", markup=False)
        stop.set()
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        if live is not None:
            live.update(status_table([w.stats for w in workers]))
            live.stop()
        scheduler.close()
        index_problem = _write_index(out_root, [w.out_dir for w in workers])
    for worker in workers:
        console.print(summary_line(worker.stats), markup=False, soft_wrap=True)
    if interrupted:
        console.print(f"interrupted: outputs finalised in {out_root}", markup=False)
        return 130
    failed = [w for w in workers if w.error]
    if failed:
        raise SourceError(f"{len(failed)} of {len(workers)} cameras failed; first: {failed[0].name}: {failed[0].error}")
    if index_problem:
        raise OutputError(f"{index_problem} (each camera's own outputs are complete)")
    return 0


def summary_line(s: CameraStats) -> str:
    """The end-of-serve line per camera (the benchmark reads it)."""
    lat = sorted(s.latencies_ms)
    p50 = lat[len(lat) // 2] if lat else None
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else None
    summary = s.summary
    fps = summary.fps if summary is not None else 0.0
    dropped = summary.frames_dropped if summary is not None else s.frames_dropped
    return (f"camera {s.name}: {s.state}, {s.frames} frames, {fps:.2f} FPS, {dropped} skipped, "
            f"latency p50 {_fmt(p50, '.0f', ' ms')} p95 {_fmt(p95, '.0f', ' ms')}, {s.vehicles} vehicles, "
            f"{s.retries} retries" + (f"; {s.error}" if s.state == "failed" and s.error else ""))


def _write_index(out_root: Path, run_dirs: list[Path]) -> str | None:
    from stream_pipeline.runner import _write_index as write

    return write(out_root, [d for d in run_dirs if (d / "events.jsonl").is_file()])
