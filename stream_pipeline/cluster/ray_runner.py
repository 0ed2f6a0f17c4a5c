"""Recorded videos spread over a Ray cluster: one task per video, the same outputs as a local run.

Each task runs the ordinary pipeline on one video into its own sub-folder of `--out` (so inputs
and `--out` must be on storage every node sees, at the same path) and writes that video's report.
The driver keeps at most `--workers` tasks in flight (default: the cluster's CPUs), retries a
task whose worker died or that failed unexpectedly (`--retries`), reports and skips a video that
fails for a reason a user can fix (missing, corrupt), and writes `summary.csv` and `index.html`.
Models are loaded once per worker process and kept for its next videos.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
from pathlib import Path

from rich.console import Console

from stream_pipeline.core.config import PipelineConfig
from stream_pipeline.core.errors import SourceError, UserError
from stream_pipeline.core.redaction import redact

log = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)  # whole lines in logs and pipes: no wrap at 80 columns

CONNECT_TIMEOUT_S = 10.0
# The worker process's pipeline, kept between its tasks: loading the models costs seconds.
_PIPELINES: dict[str, object] = {}


def process_video(config: PipelineConfig, source: str, out_dir: str, max_frames: int | None) -> dict:
    """One video, run in a Ray worker; returns its summary, or the user error that stopped it."""
    from stream_pipeline.core.errors import UserError as _UserError
    from stream_pipeline.pipeline import Pipeline
    from stream_pipeline.runner import _write_report

    key = config.model_dump_json()
    pipeline = _PIPELINES.get(key)
    if pipeline is None:
        _PIPELINES.clear()
        pipeline = _PIPELINES[key] = Pipeline(config)
    out = Path(out_dir)
    try:
        summary = pipeline.run(source, out, max_frames=max_frames)
    except _UserError as exc:
        return {"source": source, "error": str(exc)}
    finally:
        if (out / "events.jsonl").is_file():
            _write_report(out, folder_mode=True)
    return {"source": source, "error": summary.error, "frames": summary.frames, "fps": summary.fps,
            "vehicles": summary.vehicles, "brands_decided": summary.brands_decided, "elapsed_s": summary.elapsed_s}


def _reachable(address: str) -> None:
    """A head that does not answer fails in seconds here; Ray itself would retry for minutes."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray: expected HOST:PORT of the Ray head, or auto; got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray head at {address}: {exc.strerror or exc}") from None


def _connect(address: str):
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'stream-pipeline[cluster]'") from None
    _reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return ray


def run_on_ray(args: argparse.Namespace, config: PipelineConfig, sources: list[str], out_dirs: list[Path],
               out_root: Path, on_connected=None) -> int:
    """on_connected: called once the cluster is reached, before any video is sent (run: --overwrite
    clears the previous run there, so a bad option or an unreachable head leaves it as it was)."""
    from stream_pipeline.runner import check_folder_outputs, finish_folder
    from stream_pipeline.sources import is_live

    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.retries is None:
        args.retries = 2
    if args.retries < 0:
        raise UserError("--retries must be at least 0")
    live = [s for s in sources if is_live(s)]
    if live:
        raise UserError(f"--ray runs recorded videos; {redact(live[0])} is a live stream (use serve)")
    # Workers on other machines see the same paths only when they are absolute.
    sources = [str(Path(s).expanduser().resolve()) for s in sources]
    out_dirs = [d.resolve() for d in out_dirs]
    ray = _connect(args.ray)
    if on_connected is not None:
        on_connected()
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = min(args.workers or cpus, len(sources))
        task = ray.remote(num_cpus=1, max_retries=args.retries, retry_exceptions=True)(process_video)
        console.print(f"{len(sources)} videos on the Ray cluster at {args.ray} ({cpus} CPUs), {workers} at a time",
                      markup=False)
        started = time.perf_counter()
        pending = list(zip(sources, out_dirs))
        running: dict = {}
        failures: list[str] = []
        interrupted = False
        try:
            while pending or running:
                while pending and len(running) < workers:
                    source, out_dir = pending.pop(0)
                    running[task.remote(config, source, str(out_dir), args.max_frames)] = source
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    source = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - retries spent: reported, skipped
                        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                        result = {"source": source, "error": f"failed after {args.retries} retries: {message}"}
                    if result.get("error"):
                        console.print(f"[red]skipped[/red] {redact(source)}: {redact(result['error'])}")
                        failures.append(f"{source}: {result['error']}")
                    else:
                        console.print(
                            f"{redact(source)}: {result['frames']} frames in {result['elapsed_s']:.1f} s "
                            f"({result['fps']:.1f} FPS), {result['vehicles']} vehicles, "
                            f"{result['brands_decided']} with a brand", markup=False)
        except KeyboardInterrupt:
            interrupted = True
            for ref in running:
                ray.cancel(ref, force=True)
        console.print(f"{len(sources) - len(failures)} of {len(sources)} videos done in "
                      f"{time.perf_counter() - started:.1f} s on {workers} workers", markup=False)
    finally:
        folder_problems = finish_folder(out_root, out_dirs)
        ray.shutdown()
    if interrupted:
        console.print(f"interrupted: finished videos are in {out_root}", markup=False)
        return 130
    if failures:
        raise SourceError(f"{len(failures)} of {len(sources)} inputs failed; first: {failures[0]}")
    check_folder_outputs(folder_problems)
    return 0
