"""Events to a real Mosquitto broker and to a local webhook (127.0.0.1 only, started here).

The broker outage and the failing webhook are timed by what the program reports (its event
lines, its log lines), never by sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stream_pipeline.core.config import load_config
from stream_pipeline.core.errors import ConfigError
from stream_pipeline.core.paths import PROJECT_ROOT
from stream_pipeline.publishers.spool import DiskSpool
from stream_pipeline.sinks.events import EventLog
from tests.conftest import read_events, run_cli
from tests.mqtt_broker import Broker, Subscriber, free_port

USER = "pipeline"
CLIP = "highway_overpass_720p.mp4"
TOPICS = "traffic/highway_overpass_720p"


@pytest.fixture
def password() -> str:
    return "pw-" + secrets.token_hex(10)


@pytest.fixture
def broker(tmp_path: Path, password: str):
    broker = Broker(tmp_path / "broker", USER, password)
    broker.start()
    yield broker
    broker.stop()


def mqtt_config(tmp_path: Path, port: int, extra: str = "", drain_s: float = 60) -> Path:
    path = tmp_path / "publish.yaml"
    path.write_text(
        "brands:\n  enabled: false\noutput:\n  video: false\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  topic_prefix: traffic\n"
        f"  username_env: TEST_MQTT_USER\n  password_env: TEST_MQTT_PASSWORD\n  drain_s: {drain_s}\n" + extra
    )
    return path


def start_run(args: list[str], env: dict) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.Popen(
        [sys.executable, "-m", "stream_pipeline", "run", *args, "--no-progress"],
        cwd=PROJECT_ROOT, env={**full_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_events(proc: subprocess.Popen, path: Path, predicate, what: str) -> list[dict]:
    """Poll events.jsonl (what the run reports) until predicate(events) holds."""
    import time

    while True:
        events = read_events(path) if path.exists() else []
        # A line may be caught half written: only complete lines count.
        if predicate(events):
            return events
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before {what}: rc={proc.returncode} {err[-2000:]}")
        time.sleep(0.1)


def leaks(password: str, folder: Path, *texts: str) -> list[str]:
    found = [str(p) for p in folder.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    return found + [f"output text {i}" for i, text in enumerate(texts) if password in text]


# -- event ids and the spool ------------------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[dict, str]] = []

    def publish(self, event: dict, line: str) -> None:
        self.got.append((event, line))


def test_event_ids_are_unique_stable_and_shared_with_publishers(tmp_path: Path):
    run_id = uuid.uuid4()
    recorder = _Recorder()
    with EventLog(tmp_path / "a.jsonl", [recorder], run_id=run_id) as log:
        ids = [log.write({"event": "vehicle", "track_id": i}) for i in range(50)]
    with EventLog(tmp_path / "b.jsonl", run_id=run_id) as again:
        assert [again.write({"event": "vehicle", "track_id": i}) for i in range(50)] == ids  # same run, same ids
    assert len(set(ids)) == 50 and all(uuid.UUID(i) for i in ids)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert [line for _, line in recorder.got] == lines  # publishers get the exact line
    assert [json.loads(line)["event_id"] for line in lines] == ids
    with EventLog(tmp_path / "c.jsonl") as other_run:
        assert other_run.write({"event": "vehicle"}) not in ids


def test_spool_keeps_order_bounded_and_survives_reopening(tmp_path: Path):
    spool = DiskSpool(tmp_path / "spool.sqlite3", max_rows=5).open()
    assert spool.append([("t", str(i)) for i in range(3)]) == 0
    assert spool.append([("t", str(i)) for i in range(3, 8)]) == 3  # the three oldest go
    assert [payload for _, _, payload in spool.after(0, 100)] == ["3", "4", "5", "6", "7"]
    first = spool.after(0, 1)[0][0]
    spool.remove(first)
    assert spool.close() == 4
    reopened = DiskSpool(tmp_path / "spool.sqlite3", max_rows=5).open()
    assert [payload for _, _, payload in reopened.after(0, 100)] == ["4", "5", "6", "7"]
    for seq, _, _ in reopened.after(0, 100):
        reopened.remove(seq)
    assert reopened.close() == 0
    assert not (tmp_path / "spool.sqlite3").exists()  # nothing left behind when all was sent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt:\n  hots: broker\n", "unknown key 'mqtt.hots'"),
        ("mqtt:\n  port: 1883\n", "'mqtt.host'"),
        ("mqtt:\n  host: b\n  topic_prefix: 'a/#'\n", "'mqtt.topic_prefix'"),
        ("mqtt:\n  host: b\n  password_env: 'not a name'\n", "'mqtt.password_env'"),
        ("mqtt:\n  host: b\n  ca_file: ca.pem\n", "ca_file needs tls"),
        ("mqtt:\n  host: b\n  password_env: P\n", "password_env needs username_env"),
        ("webhook:\n  url: ftp://example.org/x\n", "'webhook.url'"),
        ("webhook:\n  url: http://example.org/x\n  retries: -1\n", "'webhook.retries'"),
        ("webhook:\n  url: http://example.org/x\n  secret: x\n", "unknown key 'webhook.secret'"),
        ("webhook:\n  url: http://127.0.0.1:99999/x\n", "'webhook.url': Value error, not a valid URL (Port out of range"),
        ("webhook:\n  url: http://127.0.0.1:abc/x\n", "'webhook.url': Value error, not a valid URL"),
        ("webhook:\n  url: http://127.0.0.1:0/x\n", "not a valid URL (port 0)"),
    ],
)
def test_publisher_config_is_validated(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)


def test_publishers_are_off_by_default():
    config = load_config()
    assert config.mqtt is None and config.webhook is None


def test_missing_credential_variable_is_one_line_error(tmp_path: Path, videos: Path):
    config = mqtt_config(tmp_path, free_port())
    result = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(config), "--out", str(tmp_path / "out"),
                     "--max-frames", "1", env={"TEST_MQTT_USER": USER})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "stream-pipeline: error: mqtt.password_env: environment variable TEST_MQTT_PASSWORD is not set"
    ]


# -- MQTT -------------------------------------------------------------------------------------

def test_every_event_reaches_the_broker_once(tmp_path: Path, videos: Path, broker: Broker, password: str):
    subscriber = Subscriber(broker.port, USER, password, "traffic/#")
    try:
        out = tmp_path / "out"
        result = run_cli("run", str(videos / CLIP), "--config", str(mqtt_config(tmp_path, broker.port)), "--out", str(out),
                         "--max-frames", "90", env={"TEST_MQTT_USER": USER, "TEST_MQTT_PASSWORD": password})
        assert result.returncode == 0, result.stderr
        lines = (out / "events.jsonl").read_text().splitlines()
        expected = [(f"{TOPICS}/{json.loads(line)['event']}", line) for line in lines]
        status = f"{TOPICS}/availability"
        assert subscriber.wait_for(lambda got: sum(t != status for t, _, _ in got) >= len(expected)
                                   and got[-1][:2] == (status, "offline"))
        got = subscriber.snapshot()
        # Every line, exactly once, in order, with the payload identical to the events.jsonl line.
        assert [(t, p) for t, p, _ in got if t != status] == expected
        vehicles = [json.loads(line) for line in lines if json.loads(line)["event"] == "vehicle"]
        assert len(vehicles) >= 3
        assert [p for t, p, _ in got if t == status] == ["online", "offline"]
    finally:
        subscriber.close()
    # The status stays retained for whoever looks later: a clean stop says offline.
    late = Subscriber(broker.port, USER, password, f"{TOPICS}/availability")
    try:
        assert late.wait_for(lambda got: len(got) >= 1, timeout=30)
        assert late.snapshot()[0] == (f"{TOPICS}/availability", "offline", True)
    finally:
        late.close()
    assert not (out / "mqtt_spool.sqlite3").exists()  # everything was acknowledged
    assert leaks(password, out, result.stdout, result.stderr) == []


def test_serve_cameras_publish_under_their_own_names(tmp_path: Path, videos: Path, broker: Broker, password: str):
    """Two cameras of one source (an NVR's channels differ only in a query) must not share topics,
    and serve's `status` events must not overwrite the retained availability flag."""
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(f"""
status_interval_s: 0.2
defaults:
  brands: {{enabled: false}}
  output: {{video: false}}
  mqtt: {{host: 127.0.0.1, port: {broker.port}, topic_prefix: traffic, username_env: TEST_MQTT_USER,
          password_env: TEST_MQTT_PASSWORD, drain_s: 60}}
cameras:
  - {{name: north, source: "{videos / CLIP}"}}
  - {{name: south, source: "{videos / CLIP}"}}
""")
    subscriber = Subscriber(broker.port, USER, password, "traffic/#")
    try:
        out = tmp_path / "out"
        result = run_cli("serve", str(cameras), "--out", str(out), "--max-frames", "40", "--no-progress",
                         env={"TEST_MQTT_USER": USER, "TEST_MQTT_PASSWORD": password})
        assert result.returncode == 0, result.stderr
        for name in ("north", "south"):
            lines = (out / name / "events.jsonl").read_text().splitlines()
            assert any(json.loads(line)["event"] == "status" for line in lines)
            expected = [(f"traffic/{name}/{json.loads(line)['event']}", line) for line in lines]
            flag = f"traffic/{name}/availability"
            assert subscriber.wait_for(lambda got: [(t, p) for t, p, _ in got if t.startswith(f"traffic/{name}/")
                                                    and t != flag] == expected
                                       and [p for t, p, _ in got if t == flag] == ["online", "offline"])
    finally:
        subscriber.close()


def test_broker_outage_mid_run_loses_nothing(tmp_path: Path, videos: Path, broker: Broker, password: str):
    # A durable subscriber: the broker keeps its subscription (and what arrives for it) across the restart.
    subscriber = Subscriber(broker.port, USER, password, "traffic/#", client_id="outage-watcher", durable=True)
    out = tmp_path / "out"
    proc = start_run([str(videos / CLIP), "--config", str(mqtt_config(tmp_path, broker.port)), "--out", str(out),
                      "--max-frames", "200"], env={"TEST_MQTT_USER": USER, "TEST_MQTT_PASSWORD": password})
    try:
        assert subscriber.wait_for(lambda got: any(t == f"{TOPICS}/stream" for t, _, _ in got))
        broker.stop()  # the run has started and reached the broker: now it goes away
        before = len([e for e in read_events(out / "events.jsonl") if e["event"] == "vehicle"])
        wait_for_events(proc, out / "events.jsonl",
                        lambda events: sum(e["event"] == "vehicle" for e in events) >= before + 2,
                        "two vehicles were written during the outage")
        # They wait on disk, in the output folder.
        with sqlite3.connect(f"file:{out / 'mqtt_spool.sqlite3'}?mode=ro", uri=True) as db:
            waiting = [json.loads(p) for (p,) in db.execute("SELECT payload FROM pending ORDER BY seq")]
        assert sum(e["event"] == "vehicle" for e in waiting) >= 2
        broker.start()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        events = read_events(out / "events.jsonl")
        ids = [e["event_id"] for e in events]
        assert subscriber.wait_for(lambda got: {json.loads(p)["event_id"] for t, p, _ in got if t != f"{TOPICS}/availability"} >= set(ids))
    finally:
        if proc.poll() is None:
            proc.kill()
        subscriber.close()
    received = [json.loads(p) for t, p, _ in subscriber.snapshot() if t != f"{TOPICS}/availability"]
    vehicle_ids = [e["event_id"] for e in received if e["event"] == "vehicle"]
    assert sorted(vehicle_ids) == sorted(e["event_id"] for e in events if e["event"] == "vehicle")  # each once
    assert len(vehicle_ids) >= before + 2
    first_seen = list(dict.fromkeys(e["event_id"] for e in received))
    assert first_seen == ids  # in order
    # The outage is logged once when it starts and once when it ends, not per event.
    assert stderr.count("unreachable") == 1 and stderr.count("reachable again") == 1, stderr
    assert not (out / "mqtt_spool.sqlite3").exists()
    assert leaks(password, out, stderr) == []


def test_send_spool_delivers_what_a_run_kept_without_touching_the_run(tmp_path: Path, videos: Path, password: str):
    """The broker was away for the whole run: `send-spool` delivers the kept lines later, in
    order, without a new run into (or --overwrite of) that folder, and sets no availability flag."""
    broker = Broker(tmp_path / "broker", USER, password)  # not started yet
    env = {"TEST_MQTT_USER": USER, "TEST_MQTT_PASSWORD": password}
    config = mqtt_config(tmp_path, broker.port, drain_s=0.5)
    out = tmp_path / "out"
    result = run_cli("run", str(videos / CLIP), "--config", str(config), "--out", str(out), "--max-frames", "60",
                     "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert f"stream-pipeline send-spool {out}" in result.stderr
    run_files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "spool" not in p.name}

    still_down = run_cli("send-spool", str(out), "--config", str(config), "--timeout", "2", env=env)
    assert still_down.returncode == 3, still_down.stderr
    assert "not delivered" in still_down.stderr and f"broker 127.0.0.1:{broker.port} unreachable" in still_down.stderr
    assert (out / "mqtt_spool.sqlite3").is_file()

    # a spool another process has open (a camera still running) is left to it
    held = DiskSpool(out / "mqtt_spool.sqlite3", 10000).open()
    try:
        busy = run_cli("send-spool", str(out), "--config", str(config), "--timeout", "2", env=env)
    finally:
        kept = held.close()
    assert busy.returncode == 3 and "in use by a running process" in busy.stderr, busy.stderr
    assert kept == len((out / "events.jsonl").read_text().splitlines())

    broker.start()
    subscriber = Subscriber(broker.port, USER, password, "traffic/#")
    try:
        sent = run_cli("send-spool", str(out), "--config", str(config), env=env)
        assert sent.returncode == 0, sent.stderr
        lines = (out / "events.jsonl").read_text().splitlines()
        expected = [(f"{TOPICS}/{json.loads(line)['event']}", line) for line in lines]
        assert subscriber.wait_for(lambda got: len(got) >= len(expected))
        assert [(t, p) for t, p, _ in subscriber.snapshot()] == expected  # in order, no availability flag
    finally:
        subscriber.close()
        broker.stop()
    assert not (out / "mqtt_spool.sqlite3").exists()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "spool" not in p.name} == run_files
    again = run_cli("send-spool", str(out), "--config", str(config), env=env)
    assert again.returncode == 0 and "no undelivered MQTT events" in again.stderr
    assert leaks(password, out, result.stderr, sent.stderr) == []


def test_killed_run_is_marked_offline_by_its_will(tmp_path: Path, videos: Path, broker: Broker, password: str):
    status = f"{TOPICS}/availability"
    subscriber = Subscriber(broker.port, USER, password, status)
    proc = start_run([str(videos / CLIP), "--config", str(mqtt_config(tmp_path, broker.port)), "--out", str(tmp_path / "out")],
                     env={"TEST_MQTT_USER": USER, "TEST_MQTT_PASSWORD": password})
    try:
        assert subscriber.wait_for(lambda got: (status, "online", False) in got)
        proc.send_signal(signal.SIGKILL)  # no clean stop: only the broker can say we are gone
        proc.communicate(timeout=60)
        assert subscriber.wait_for(lambda got: got[-1][:2] == (status, "offline"), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        subscriber.close()
    late = Subscriber(broker.port, USER, password, status)
    try:
        assert late.wait_for(lambda got: len(got) >= 1, timeout=30)
        assert late.snapshot()[0] == (status, "offline", True)
    finally:
        late.close()


# -- webhook ----------------------------------------------------------------------------------

class FlakyEndpoint:
    """A local HTTP endpoint answering 500 to its first `failures` requests, then 200."""

    def __init__(self, port: int, failures: int) -> None:
        self.received: list[dict] = []
        self.authorization: list[str | None] = []  # per request
        self.failures_left = failures
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests += 1
                endpoint.authorization.append(self.headers.get("Authorization"))
                if endpoint.failures_left > 0:
                    endpoint.failures_left -= 1
                    self.send_response(500)
                else:
                    record = json.loads(body)
                    assert self.headers["Content-Type"] == "application/json"
                    assert self.headers["X-Event-Id"] == record["event_id"]
                    endpoint.received.append(record)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_gets_every_vehicle_despite_a_failing_start(tmp_path: Path, videos: Path):
    port = free_port()  # nothing listens yet: the first tries are refused
    config = tmp_path / "webhook.yaml"
    token = "tok-" + secrets.token_hex(8)
    config.write_text(
        "brands:\n  enabled: false\noutput:\n  video: false\n"
        f"webhook:\n  url: http://127.0.0.1:{port}/hook?token={token}\n  timeout_s: 5\n  retries: 8\n  backoff_s: 0.2\n"
        "  drain_s: 120\n"
    )
    out = tmp_path / "out"
    proc = start_run([str(videos / CLIP), "--config", str(config), "--out", str(out), "--max-frames", "90"], env={})
    lines: queue.Queue[str] = queue.Queue()
    stderr_lines: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            stderr_lines.append(line)
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    endpoint = None
    try:
        while "webhook" not in (line := lines.get(timeout=300)) or "failing" not in line:
            assert line, "the run ended without reporting the failing webhook"
        # The run reported the refused endpoint: it comes up, answering 500 to its first two requests.
        endpoint = FlakyEndpoint(port, failures=2)
        proc.stdout.read()
        proc.wait(timeout=600)
        reader.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if endpoint is not None:
            endpoint.close()
    stderr = "".join(stderr_lines)
    assert proc.returncode == 0, stderr
    vehicles = [e for e in read_events(out / "events.jsonl") if e["event"] == "vehicle"]
    assert len(vehicles) >= 3
    assert sorted(r["event_id"] for r in endpoint.received) == sorted(v["event_id"] for v in vehicles)
    assert {r["event_id"]: r for r in endpoint.received} == {v["event_id"]: v for v in vehicles}
    assert endpoint.requests >= len(vehicles) + 2
    # One line when the outage starts, one when it ends; not one per record or per try.
    assert sum("webhook" in line and "failing" in line for line in stderr_lines) == 1, stderr
    assert sum("webhook" in line and "recovered" in line for line in stderr_lines) == 1, stderr
    assert token not in stderr  # the URL's query may hold a secret: never logged


def test_default_yaml_documents_the_publisher_defaults():
    """The commented mqtt:/webhook: examples in configs/default.yaml, uncommented, are the defaults."""
    import yaml

    from stream_pipeline.core.config import DEFAULT_CONFIG, MqttConfig, PipelineConfig, WebhookConfig

    text = DEFAULT_CONFIG.read_text()
    example = "\n".join(line[2:] for line in text[text.index("# mqtt:\n"):].splitlines()
                        if line.startswith(("#   ", "# mqtt:", "# webhook:")))
    config = PipelineConfig.model_validate(yaml.safe_load(example))
    assert config.mqtt == MqttConfig(host="broker.example.org")
    assert config.webhook == WebhookConfig(url="https://hooks.example.org/vehicles")


def test_tls_broker_with_a_private_ca(tmp_path: Path, videos: Path, password: str):
    broker = Broker(tmp_path / "broker", USER, password, tls=True)
    broker.start()
    subscriber = Subscriber(broker.port, USER, password, "traffic/#")  # on the plain listener
    try:
        out = tmp_path / "out"
        config = mqtt_config(tmp_path, broker.tls_port, extra=f"  tls: true\n  ca_file: {broker.ca_file}\n")
        result = run_cli("run", str(videos / CLIP), "--config", str(config), "--out", str(out), "--max-frames", "20",
                         env={"TEST_MQTT_USER": USER, "TEST_MQTT_PASSWORD": password})
        assert result.returncode == 0, result.stderr
        lines = (out / "events.jsonl").read_text().splitlines()
        status = f"{TOPICS}/availability"
        assert subscriber.wait_for(lambda got: sum(t != status for t, _, _ in got) >= len(lines))
        assert [p for t, p, _ in subscriber.snapshot() if t != status] == lines
        assert "unreachable" not in result.stderr
    finally:
        subscriber.close()
        broker.stop()


def test_source_names_make_one_safe_topic_level():
    from stream_pipeline.publishers.base import public_url, topic_source_name

    assert topic_source_name("/data/clips/highway_overpass_720p.mp4") == "highway_overpass_720p"
    assert topic_source_name("rtsp://user:***@10.0.0.5:554/stream1?x=#1") == "10.0.0.5_554_stream1"
    assert topic_source_name("0") == "0"
    assert topic_source_name("/dev/video0") == "video0"
    assert topic_source_name("cam #1+2.mp4") == "cam_1_2"
    assert topic_source_name("rtsp://127.0.0.1:99999/x") == "127.0.0.1_x"  # the source reports the bad port
    assert topic_source_name("rtsp://u:pw@[::1/x?token=1") == "1_x"  # malformed: no traceback, no secret
    assert public_url("http://[::1/x") == "http://<invalid URL>"
    assert public_url("https://u:secret@hooks.example.org:8443/v1/hook?token=abc#x") == "https://hooks.example.org:8443/v1/hook"


def test_no_line_is_lost_when_the_run_stops_at_once(tmp_path: Path):
    """Lines handed over just before the stop reach the spool (the broker is away, no drain time).

    The worker empties its inbox in batches; a stop arriving while it writes a batch must
    still see the lines put meanwhile. Repeated because that moment is a race.
    """
    from stream_pipeline.core.config import MqttConfig
    from stream_pipeline.publishers.mqtt import MqttPublisher

    config = MqttConfig(host="127.0.0.1", port=free_port(), drain_s=0)
    for round_ in range(8):
        out = tmp_path / str(round_)
        with MqttPublisher(config, out, "clip.mp4") as publisher:
            for i in range(1000):
                publisher.publish({"event": "vehicle"}, json.dumps({"i": i}))
        with sqlite3.connect(out / "mqtt_spool.sqlite3") as db:
            payloads = [json.loads(p)["i"] for (p,) in db.execute("SELECT payload FROM pending ORDER BY seq")]
        assert payloads == list(range(1000))


def test_webhook_user_and_password_in_the_url_are_basic_auth(tmp_path: Path, videos: Path):
    import base64

    port = free_port()
    endpoint = FlakyEndpoint(port, failures=0)
    password = "p@ss-" + secrets.token_hex(6)  # '@' percent-encoded in the URL, as a user would write it
    config = tmp_path / "webhook.yaml"
    config.write_text("brands:\n  enabled: false\noutput:\n  video: false\n"
                      f"webhook:\n  url: http://ops:{password.replace('@', '%40')}@127.0.0.1:{port}/hook\n")
    out = tmp_path / "out"
    try:
        result = run_cli("run", str(videos / CLIP), "--config", str(config), "--out", str(out), "--max-frames", "60",
                         "--no-progress")
    finally:
        endpoint.close()
    assert result.returncode == 0, result.stderr
    vehicles = [e for e in read_events(out / "events.jsonl") if e["event"] == "vehicle"]
    assert vehicles and sorted(r["event_id"] for r in endpoint.received) == sorted(v["event_id"] for v in vehicles)
    expected = "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
    assert set(endpoint.authorization) == {expected}
    assert password not in result.stderr + result.stdout and "not delivered" not in result.stderr


def test_webhook_drain_s_bounds_the_wait_for_an_endpoint_that_never_answers(tmp_path: Path, videos: Path):
    """drain_s is the user's limit on the wait at the end, even with a POST in flight (timeout_s far longer)."""
    import socket

    silent = socket.socket()  # takes connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        config = tmp_path / "webhook.yaml"
        config.write_text(
            "brands:\n  enabled: false\noutput:\n  video: false\n"
            f"webhook:\n  url: http://127.0.0.1:{silent.getsockname()[1]}/hook\n  timeout_s: 300\n  retries: 0\n"
            "  drain_s: 1\n"
        )
        out = tmp_path / "out"
        # 300 s per try would outlast this guard if the in-flight POST were waited for
        result = run_cli("run", str(videos / CLIP), "--config", str(config), "--out", str(out), "--max-frames", "90",
                         "--no-progress", timeout=200)
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    vehicles = sum(1 for e in read_events(out / "events.jsonl") if e["event"] == "vehicle")
    assert vehicles >= 3
    assert f"{vehicles} of {vehicles} vehicle records not delivered" in result.stderr, result.stderr
