"""`stream-pipeline benchmark`: throughput of the full pipeline on a clip.

Reports frames per second, the real-time ratio (processing FPS / the clip's FPS; >= 1
keeps up with a live camera), time per stage and peak resident memory. Performance
targets are checked here, not in timed tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from stream_pipeline.core.config import load_config
from stream_pipeline.core.errors import SourceError, UserError
from stream_pipeline.core.paths import shared_path
from stream_pipeline.pipeline import Pipeline


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>16}: {value}")


def compare_command(args: argparse.Namespace, source: Path, config) -> int:
    from stream_pipeline.bench.clips import looped_clip
    from stream_pipeline.bench.compare import compare

    clip, frames = looped_clip(source, args.min_frames)
    result = compare(clip, frames, config, args.config, keep=Path(args.keep) if args.keep else None)
    if args.json:
        print(json.dumps(result))
        return 0
    y, s = result["yolo_track"], result["stream_pipeline"]
    print(f"clip: {clip} ({frames} frames), brands {'on' if config.brands.enabled else 'off'}")
    print(f"  yolo track          : {y['fps']:6.2f} FPS  ({y['wall_s']:.1f} s)  peak RSS {y['peak_rss_tree_mb']:.0f} MB (tree), {y['peak_rss_max_mb']:.0f} MB (largest process)")
    print(f"  stream-pipeline run : {s['fps']:6.2f} FPS  ({s['wall_s']:.1f} s)  peak RSS {s['peak_rss_tree_mb']:.0f} MB (tree), {s['peak_rss_max_mb']:.0f} MB (largest process), {s['vehicles']} vehicles")
    print(f"  ratio               : {result['ratio']:.2f}  (load average after: {result['load_avg_1m_after']})")
    print(f"  commands: {y['command']}\n            {s['command']}")
    return 0


def live_command(args: argparse.Namespace, source: Path, config) -> int:
    from stream_pipeline.bench.live import latency_run, retimed_clip, soak_run, work_dir

    with work_dir(args.keep) as tmp:
        work = Path(tmp)
        if args.latency_seconds:
            _print({"latency": latency_run(source, args.input_fps, args.latency_seconds, config, work)}, args.json)
        if args.soak_minutes:
            clip = retimed_clip(source, args.input_fps, work)
            _print({"soak": soak_run(clip, args.soak_minutes, args.config, work)}, args.json)
    return 0


def _check_mode_options(args: argparse.Namespace) -> None:
    """An option of another mode would be ignored in silence: say so instead, and fill defaults."""
    compare = getattr(args, "compare_ultralytics", False)
    live = bool(getattr(args, "latency_seconds", None) or getattr(args, "soak_minutes", None))
    if getattr(args, "min_frames", None) is not None and not compare:
        raise UserError("--min-frames goes with --compare-ultralytics")
    if getattr(args, "input_fps", None) is not None and not live:
        raise UserError("--input-fps goes with --latency-seconds or --soak-minutes")
    if getattr(args, "keep", None) and not (compare or live):
        raise UserError("--keep goes with --compare-ultralytics, --latency-seconds or --soak-minutes")
    if getattr(args, "max_frames", None) is not None and (compare or live):
        raise UserError("--max-frames goes with the default mode (--compare-ultralytics: --min-frames; "
                        "--latency-seconds / --soak-minutes: their durations)")
    args.max_frames = args.max_frames if getattr(args, "max_frames", None) is not None else 300
    # the measured runs are child processes started in the project's folder: relative paths
    # would point there (outputs written into the checkout, a config not found)
    if getattr(args, "keep", None):
        args.keep = str(Path(args.keep).expanduser().resolve())
    if getattr(args, "config", None):
        args.config = str(Path(args.config).expanduser().resolve())
    if getattr(args, "input_fps", None) is not None and not 1 <= args.input_fps <= 240:
        raise UserError(f"--input-fps must be between 1 and 240, not {args.input_fps:g}")
    args.min_frames = args.min_frames if getattr(args, "min_frames", None) is not None else 1500
    args.input_fps = args.input_fps if getattr(args, "input_fps", None) is not None else 25.0


def benchmark_command(args: argparse.Namespace) -> int:
    source = Path(args.source).expanduser().resolve() if args.source else shared_path("videos", "highway_overpass_720p.mp4")
    if source.is_dir():
        raise UserError(f"benchmark takes one video file, not a folder: {source}")
    if not source.is_file():
        raise SourceError(f"benchmark input not found: {source}")  # exit 3, as run
    _check_mode_options(args)
    if args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    height = getattr(args, "height", None)
    if height is not None and not 16 <= height <= 4320:
        raise UserError(f"--height must be between 16 and 4320 rows, not {height}")
    config = load_config(args.config)
    if height:
        from stream_pipeline.bench.clips import resized_clip

        source = resized_clip(source, args.height)
    if getattr(args, "compare_ultralytics", False):
        return compare_command(args, source, config)
    if getattr(args, "latency_seconds", None) or getattr(args, "soak_minutes", None):
        return live_command(args, source, config)
    pipeline = Pipeline(config)
    # Warm-up: first inferences compile kernels and fill caches.
    with tempfile.TemporaryDirectory() as tmp:
        pipeline.run(source, Path(tmp) / "warmup", max_frames=5)
    with tempfile.TemporaryDirectory() as tmp:
        summary = pipeline.run(source, Path(tmp) / "run", max_frames=args.max_frames)
    frames = max(1, summary.frames)
    result = {
        "source": str(source),
        "frames": summary.frames,
        "elapsed_s": round(summary.elapsed_s, 2),
        "fps": round(summary.fps, 2),
        "source_fps": round(summary.source_fps, 2),
        "realtime_ratio": round(summary.fps / summary.source_fps, 3) if summary.source_fps else None,
        "vehicles": summary.vehicles,
        "brands_decided": summary.brands_decided,
        "ms_per_frame": {k: round(1000 * v / frames, 2) for k, v in summary.stage_s.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "brands_enabled": config.brands.enabled,
    }
    _print(result, args.json)
    return 0
