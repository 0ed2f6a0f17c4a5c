"""Cost of publishing on the pipeline thread, and MQTT delivery rate, against a local Mosquitto.

    PYTHONPATH=. .venv/bin/python -m tests.bench_publishers [N]

Writes N vehicle lines through EventLog three ways: no publisher, MQTT with the broker up
(a subscriber counts what arrives), MQTT with the broker down (lines wait in the spool).
A measurement, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stream_pipeline.core.config import MqttConfig
from stream_pipeline.publishers.mqtt import MqttPublisher
from stream_pipeline.sinks.events import EventLog
from tests.mqtt_broker import Broker, Subscriber

VEHICLE = {
    "event": "vehicle", "track_id": 1, "class": "car", "first_frame": 0, "last_frame": 99, "first_seen_s": 0.0,
    "last_seen_s": 3.3, "wall_time": "2026-11-28T13:47:55.318Z", "brand": "volkswagen", "brand_confidence": 0.8,
    "votes": 5, "readings": 6, "bbox": [1.0, 2.0, 3.0, 4.0], "snapshot": "snapshots/vehicle_000001.jpg",
    "badge_snapshot": None, "frames_seen": 99, "detection_confidence": 0.9, "source": "/x/clip.mp4",
}


def measure(mode: str, n: int, tmp: Path) -> str:
    broker = Broker(tmp / mode.replace(" ", "_") / "broker", "bench", "bench-pw")
    if mode == "broker up":
        broker.start()
    os.environ["BENCH_MQTT_USER"], os.environ["BENCH_MQTT_PASSWORD"] = "bench", "bench-pw"
    drain = 0 if mode == "broker down" else 120
    config = MqttConfig(host="127.0.0.1", port=broker.port, username_env="BENCH_MQTT_USER",
                        password_env="BENCH_MQTT_PASSWORD", drain_s=drain)
    out = tmp / mode.replace(" ", "_")
    publisher = None if mode == "no publisher" else MqttPublisher(config, out, "/x/clip.mp4").__enter__()
    subscriber = Subscriber(broker.port, "bench", "bench-pw", "stream-pipeline/#") if mode == "broker up" else None
    costs = []
    started = time.perf_counter()
    with EventLog(out / "events.jsonl", [publisher] if publisher else []) as log:
        for i in range(n):
            t0 = time.perf_counter()
            log.write({**VEHICLE, "track_id": i})
            costs.append(time.perf_counter() - t0)
    written = time.perf_counter() - started
    note = ""
    if subscriber is not None:
        subscriber.wait_for(lambda got: len(got) >= n + 1, timeout=600)  # + the status line
        took = time.perf_counter() - started
        ids = {json.loads(p)["event_id"] for t, p, _ in subscriber.snapshot() if t.endswith("/vehicle")}
        note = f"; {len(ids)} distinct received, all within {took:.2f} s ({n / took:.0f} lines/s)"
    if publisher is not None:
        publisher.__exit__(None, None, None)
    if mode == "broker down":
        with sqlite3.connect(out / "mqtt_spool.sqlite3") as db:
            note = f"; {db.execute('SELECT COUNT(*) FROM pending').fetchone()[0]} waiting in the spool"
    if subscriber is not None:
        subscriber.close()
    broker.stop()
    costs.sort()
    return (f"{mode}: {n} lines in {written:.2f} s; per line median {statistics.median(costs) * 1e6:.0f} us, "
            f"p99 {costs[int(n * 0.99)] * 1e6:.0f} us, max {costs[-1] * 1e3:.1f} ms{note}")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("no publisher", "broker up", "broker down"):
            print(measure(mode, n, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
