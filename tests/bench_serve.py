"""Per-camera FPS and latency of `serve` with 1, 2 and 4 live 720p cameras (local RTSP servers).

    PYTHONPATH=. .venv/bin/python -m tests.bench_serve [SECONDS] [COUNTS...]   # default: 60 s, 1 2 4

Each camera is its own `rtsp-server` (127.0.0.1) looping a 720p shared clip at its native 30 FPS.
Serve runs with the default config (brands on) until every camera has processed frames, then
for SECONDS more, and is stopped with SIGTERM; its end-of-run line per camera gives the FPS
(frames / elapsed), the frames skipped to stay live and the capture-to-processed latency.
A measurement, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
import time
from pathlib import Path

from stream_pipeline.core.paths import shared_dir
from tests.live_helpers import CliRun, RtspServer

CLIPS = ("highway_overpass_720p.mp4", "dashcam_uk_vw_hyundai.mp4")
LINE = re.compile(r"camera (\S+): \w+, (\d+) frames, ([\d.]+) FPS, (\d+) skipped, latency p50 (\d+) ms p95 (\d+) ms")


def measure(count: int, seconds: float, tmp: Path) -> list[tuple]:
    videos = shared_dir() / "videos"
    servers = [RtspServer(tmp / f"media{count}_{i}", videos, clip=CLIPS[i % len(CLIPS)]) for i in range(count)]
    cameras = tmp / f"cameras{count}.yaml"
    cameras.write_text("status_interval_s: 2\ncameras:\n" + "".join(
        f"  - {{name: cam{i}, source: \"{s.url()}\"}}\n" for i, s in enumerate(servers)))
    run = CliRun("serve", str(cameras), "--out", str(tmp / f"out{count}"), "--no-progress")
    try:
        seen: set[str] = set()
        while len(seen) < count:
            seen.add(run.wait_for_line(r"status: (cam\d+) running, [\d.]+ FPS, [1-9]").group(1))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(1)
        run.signal(signal.SIGTERM)  # not SIGINT: a background job's children ignore it
        code, _, stderr = run.finish()
    finally:
        run.kill()
        for server in servers:
            server.stop()
    rows = [m.groups() for m in LINE.finditer(stderr.replace("\n", " "))]
    assert code == 143 and len(rows) == count, stderr[-3000:]
    return rows


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    counts = [int(c) for c in sys.argv[2:]] or [1, 2, 4]
    print("| cameras | camera | FPS | frames | skipped | latency p50 / p95 |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            for name, frames, fps, skipped, p50, p95 in measure(count, seconds, Path(tmp)):
                print(f"| {count} | {name} | {fps} | {frames} | {skipped} | {p50} / {p95} ms |", flush=True)


if __name__ == "__main__":
    main()
