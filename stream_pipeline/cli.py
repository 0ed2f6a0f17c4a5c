"""`stream-pipeline` command line.

Heavy libraries (ultralytics, tensorflow, openvino) are imported inside the command
functions so `--help` and config errors answer instantly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from stream_pipeline.core.errors import UserError
from stream_pipeline.core.redaction import RedactingFormatter, redact

log = logging.getLogger("stream_pipeline")


def _cmd_run(args: argparse.Namespace) -> int:
    from stream_pipeline.runner import run_command

    return run_command(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from stream_pipeline.serve.command import serve_command

    return serve_command(args)


def _cmd_fetch_samples(args: argparse.Namespace) -> int:
    from stream_pipeline.samples import fetch_samples

    fetch_samples(args.dest, names=args.names)
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from stream_pipeline.benchmark import benchmark_command

    return benchmark_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from stream_pipeline.report import rebuild

    for path in rebuild(args.out_dir):
        print(path)
    return 0


def _cmd_send_spool(args: argparse.Namespace) -> int:
    from stream_pipeline.publishers.resend import command

    return command(args.out_dir, args.config, args.base_config, args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-pipeline",
        description="Real-time vehicle-brand recognition on traffic video.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="detect, track and name the brand of vehicles in a video source")
    run.add_argument("source", nargs="+", metavar="SOURCE",
                     help="video file, folder of videos, text file listing videos, rtsp:// URL, or webcam (0, /dev/video0); "
                          "several files (e.g. a shell wildcard) are one batch, as a folder is")
    run.add_argument("--config", help="YAML configuration (default: configs/default.yaml)")
    run.add_argument("--out", help="output folder (default: runs/<timestamp>/); one that holds a run is refused")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run already in --out (its event log, tables, video, report and snapshots)")
    run.add_argument("--show", action="store_true", help="show a live window (q quits)")
    run.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames per source")
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="run the videos as tasks on a Ray cluster (host:port of its head, or auto); needs the cluster extra")
    run.add_argument("--workers", type=int, default=None, metavar="N", help="with --ray: at most N videos at a time (default: the cluster's CPUs)")
    run.add_argument("--retries", type=int, default=None, metavar="N", help="with --ray: retries of a video whose task failed unexpectedly (default 2)")
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run many cameras in one process (one model set, batched detection)")
    serve.add_argument("cameras", metavar="CAMERAS.yaml", help="the cameras: name, source, zones, overrides")
    serve.add_argument("--config", help="base YAML configuration for every camera (default: configs/default.yaml)")
    serve.add_argument("--out", help="output folder, one sub-folder per camera (default: runs/serve-<timestamp>/); "
                       "one that holds a run is refused")
    serve.add_argument("--overwrite", action="store_true",
                       help="replace the runs already in --out (each camera's event log, tables, video, report and "
                            "snapshots, and the index)")
    serve.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop each camera after N frames")
    serve.add_argument("--no-progress", action="store_true", help="status log lines instead of the live table")
    serve.set_defaults(func=_cmd_serve)

    fetch = sub.add_parser("fetch-samples", help="fetch the sample clips listed in samples/manifest.yaml and, "
                                                 "without ../shared, the models the default config reads from it")
    fetch.add_argument("--dest", default=None, help="folder to put the clips in (default: samples/videos)")
    fetch.add_argument("names", nargs="*", help="sample or model names (default: all)")
    fetch.set_defaults(func=_cmd_fetch_samples)

    report = sub.add_parser("report", help="rebuild report.html from a run's events.jsonl (or index.html over a folder of runs)")
    report.add_argument("out_dir", metavar="OUT_DIR", help="a run's output folder, or a folder of them (from a folder input)")
    report.set_defaults(func=_cmd_report)

    resend = sub.add_parser("send-spool", help="deliver the MQTT events a run kept while the broker was away")
    resend.add_argument("out_dir", metavar="OUT_DIR", help="the run's output folder (or a folder of runs, or serve's --out)")
    resend.add_argument("--config", help="the configuration (or serve cameras file) the run used: its mqtt section")
    resend.add_argument("--base-config", default=None, metavar="FILE",
                        help="with a cameras file as --config: the --config serve was given")
    resend.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds to wait for the broker per run folder (default 60)")
    resend.set_defaults(func=_cmd_send_spool)

    bench = sub.add_parser("benchmark", help="measure pipeline throughput (FPS, real-time ratio, RSS)")
    bench.add_argument("source", nargs="?", default=None, help="video file (default: highway clip from shared)")
    bench.add_argument("--config", help="YAML configuration")
    bench.add_argument("--max-frames", type=int, default=None, metavar="N",
                       help="frames to measure in the default mode (default 300)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--compare-ultralytics", action="store_true",
                       help="run `yolo track` (float yolo11n.pt, same classes and input size) and `stream-pipeline run` "
                            "on the same clip as whole processes; print both FPS, the ratio and peak RSS")
    bench.add_argument("--min-frames", type=int, default=None, metavar="N",
                       help="--compare-ultralytics: loop the clip (locally, no re-encoding) to at least N frames (default 1500)")
    bench.add_argument("--keep", default=None, metavar="DIR",
                       help="--compare-ultralytics / --latency-seconds / --soak-minutes: keep the runs' outputs (and made clips) in DIR")
    bench.add_argument("--latency-seconds", type=float, default=None, metavar="S",
                       help="live latency: serve the clip from a local RTSP server at --input-fps for S seconds and "
                            "report capture-to-overlay latency")
    bench.add_argument("--soak-minutes", type=float, default=None, metavar="M",
                       help="memory soak: `stream-pipeline run` on a local RTSP loop of the clip for M minutes; "
                            "RSS start, peak and end")
    bench.add_argument("--height", type=int, default=None, metavar="ROWS",
                       help="first resize the clip (locally, same aspect ratio) to this many rows, e.g. 1080 or 360")
    bench.add_argument("--input-fps", type=float, default=None, metavar="FPS",
                       help="--latency-seconds / --soak-minutes: frame rate the clip is served at (default 25)")
    bench.set_defaults(func=_cmd_benchmark)

    from stream_pipeline.training.classifier.cli import add_commands as add_classifier_commands
    from stream_pipeline.training.logo_detector.cli import add_commands as add_logo_commands

    from stream_pipeline.brands.gallery_cli import add_commands as add_gallery_commands

    add_classifier_commands(sub)
    add_logo_commands(sub)
    add_gallery_commands(sub)
    _verbose_anywhere(sub)
    return parser


def _verbose_anywhere(sub: argparse._SubParsersAction) -> None:
    """`-v` is taken after the command too (`run X -v`), as users type it; SUPPRESS keeps a `-v`
    given before the command from being reset."""
    for command in sub.choices.values():
        if "-v" not in command._option_string_actions:
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="debug logging")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_anywhere(action)


def _quiet_native_logs(verbose: bool) -> None:
    """FFmpeg and OpenCV print their own warnings to stderr; the CLI reports errors itself."""
    if not verbose:
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
        os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_native_logs(args.verbose)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    # Every log line, from any library, goes out with camera credentials masked, and with the
    # local time: a camera that dropped at night must be findable in a service's log.
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                                datefmt="%Y-%m-%d %H:%M:%S"))
    terminated = []

    def on_sigterm(signum, frame):
        # A service manager's stop (systemd, docker stop) gets the same clean finish as Ctrl-C:
        # video finalised, open tracks written; exit 143 as for a plain SIGTERM.
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = int(args.func(args) or 0)
        return 143 if terminated and code == 130 else code
    except UserError as exc:
        print(f"stream-pipeline: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stream-pipeline: interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # the reader went away (`classify --json ... | head`): stop quietly, as Unix tools do
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
