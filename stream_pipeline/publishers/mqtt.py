"""Every event line also published to an MQTT broker (paho-mqtt), without ever holding up the run.

The pipeline thread only puts lines into an in-memory inbox. One worker thread owns the
paho client and a bounded on-disk spool: each line goes into the spool first and leaves it
when the broker acknowledges it (QoS 1), so while the broker is away lines pile up on disk
(oldest dropped beyond `max_queued`) and go out in order when it returns. A lost connection
is replaced by a fresh one that resends, from the spool, everything not yet acknowledged;
consumers drop the rare duplicate (a broker that died before its acknowledgement reached us)
by `event_id`.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import threading
import time
import uuid
from pathlib import Path

from stream_pipeline.core.config import MqttConfig
from stream_pipeline.core.errors import ConfigError
from stream_pipeline.publishers.base import topic_level, topic_source_name
from stream_pipeline.publishers.spool import DiskSpool

log = logging.getLogger(__name__)

SPOOL_NAME = "mqtt_spool.sqlite3"
# Messages handed to the client but not yet acknowledged, at most (the rest wait on disk).
WINDOW = 100
# Pause before reconnecting: doubles from RETRY_MIN_S to RETRY_MAX_S while the broker stays away.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0
# A broker that accepted the TCP connection but did not answer CONNECT within this is dropped.
CONNACK_TIMEOUT_S = 10.0
# Each turn of the worker waits this long for network traffic: the latency of a new event.
POLL_S = 0.05


def read_credentials(config: MqttConfig) -> tuple[str | None, str | None]:
    """Username and password from the environment variables the config names."""
    values = []
    for key in ("username_env", "password_env"):
        name = getattr(config, key)
        if name is None:
            values.append(None)
            continue
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"mqtt.{key}: environment variable {name} is not set")
        values.append(value)
    username, password = values
    if password is not None and username is None:
        raise ConfigError("mqtt.password_env needs mqtt.username_env too (MQTT sends a password only with a username)")
    return username, password


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    if config.ca_file is not None and not Path(config.ca_file).expanduser().is_file():
        raise ConfigError(f"mqtt.ca_file: file not found: {config.ca_file}")
    try:
        return ssl.create_default_context(cafile=str(Path(config.ca_file).expanduser()) if config.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load {config.ca_file}: {exc}") from None


class _Connection:
    """One paho client for one TCP connection; its callbacks run on the worker thread."""

    def __init__(self, client) -> None:
        self.client = client
        self.started = time.monotonic()
        self.connected = False
        self.refused: str | None = None  # the broker's reason when it refused CONNECT
        self.handed: dict[int, int] = {}  # paho message id -> spool sequence number
        self.last_handed = 0  # highest spool sequence handed to this connection
        self.acked: list[int] = []  # message ids acknowledged since the last turn


class MqttPublisher:
    """Publishes each event to `<prefix>/<source>/<event type>` (QoS 1) and a retained
    `online`/`offline` flag to `<prefix>/<source>/availability`."""

    def __init__(self, config: MqttConfig, out_dir: str | Path, source: str, camera: str | None = None,
                 announce: bool = True) -> None:
        self.config = config
        # False: only the spool is sent (`send-spool`): no source is running, so no online/offline flag.
        self.announce = announce
        self.address = f"{config.host}:{config.effective_port}"
        # A serve camera's own name: two cameras of one NVR differ only in a query the topic omits.
        level = topic_level(camera) if camera else topic_source_name(source)
        self.base_topic = f"{config.topic_prefix}/{level}"
        # Not `status`: serve's status events are published under that event type.
        self.status_topic = f"{self.base_topic}/availability"
        self.spool = DiskSpool(Path(out_dir) / SPOOL_NAME, config.max_queued)
        self.delivered = 0
        self._inbox: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = False  # an outage is logged once, when it starts, and once when it ends
        self._overflow_logged = False
        self._announced = False  # set once connected (the broker took the CONNECT)
        self._failed = False
        self._more = True  # the spool may hold rows not yet handed to the connection

    @property
    def reached_broker(self) -> bool:
        return self._announced

    # -- pipeline thread -------------------------------------------------------------------
    def __enter__(self) -> "MqttPublisher":
        self._credentials = read_credentials(self.config)
        self._tls = tls_context(self.config)
        self.spool.open()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def publish(self, event: dict, line: str) -> None:
        if self._failed:
            return  # the worker died (logged): do not pile lines up in memory
        self._inbox.put((f"{self.base_topic}/{event['event']}", line))
        self._wake.set()

    def __exit__(self, *exc_info) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        # The worker bounds its own drain; the margin covers a connect attempt in progress.
        self._thread.join(timeout=self.config.drain_s + 15)
        if self._thread.is_alive():
            log.warning("MQTT publisher did not stop in time; undelivered events stay in %s", self.spool.path)
            return
        left = self.spool.close()
        if left:
            log.warning(
                "MQTT broker %s: %d events not delivered; kept in %s: `stream-pipeline send-spool %s` sends them "
                "(and so does the next run into this folder)",
                self.address, left, self.spool.path, self.spool.path.parent,
            )
        if self.spool.dropped:
            log.warning("MQTT: %d oldest events dropped while the broker was away (mqtt.max_queued = %d)",
                        self.spool.dropped, self.config.max_queued)

    # -- worker thread ---------------------------------------------------------------------
    def _absorb(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if batch:
            if self.spool.append(batch) and not self._overflow_logged:
                self._overflow_logged = True
                log.warning("MQTT: queue full (mqtt.max_queued = %d): dropping the oldest events", self.config.max_queued)
            self._more = True

    def _run(self) -> None:
        try:
            self._work()
        except Exception:  # noqa: BLE001 - a publisher failure must never reach the run
            self._failed = True
            log.exception("MQTT publisher stopped; events.jsonl is still written")

    def _work(self) -> None:
        conn: _Connection | None = None
        next_attempt = 0.0
        retry_s = RETRY_MIN_S
        deadline = None
        while True:
            # Read the flag before emptying the inbox: once it is set nothing more arrives, so
            # every line put before it is in the spool when the loop decides to end.
            stopping = self._stop.is_set()
            self._absorb()
            if stopping:
                deadline = deadline or time.monotonic() + self.config.drain_s
                idle = len(self.spool) == 0
                if idle or time.monotonic() >= deadline:
                    break
            if conn is None:
                now = time.monotonic()
                if now < next_attempt:
                    self._wake.wait(timeout=min(next_attempt - now, 1.0))
                    self._wake.clear()
                    continue
                conn = self._connect()
                if conn is None:
                    next_attempt = time.monotonic() + retry_s
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
            if not self._turn(conn):
                conn = None
                next_attempt = time.monotonic() + retry_s
                retry_s = min(retry_s * 2, RETRY_MAX_S)
            elif conn.connected:
                retry_s = RETRY_MIN_S
        if conn is not None:
            self._close(conn)

    def _connect(self) -> _Connection | None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"stream-pipeline-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        username, password = self._credentials
        if username is not None:
            client.username_pw_set(username, password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self.announce:
            # The broker itself marks us offline if we vanish without saying goodbye.
            client.will_set(self.status_topic, "offline", qos=1, retain=True)
        conn = _Connection(client)

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            if reason_code.is_failure:
                conn.refused = str(reason_code)
                return
            conn.connected = True
            if self.announce:
                client.publish(self.status_topic, "online", qos=1, retain=True)

        def on_publish(client, userdata, mid, reason_code, properties) -> None:
            conn.acked.append(mid)

        client.on_connect = on_connect
        client.on_publish = on_publish
        try:
            client.connect(self.config.host, self.config.effective_port, keepalive=self.config.keepalive_s)
        except (OSError, ValueError) as exc:
            self._lost(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
            return None
        return conn

    def _turn(self, conn: _Connection) -> bool:
        """One round of network I/O and publishing; False when the connection is gone."""
        import paho.mqtt.client as mqtt

        rc = conn.client.loop(timeout=POLL_S)
        if conn.refused is not None:
            self._lost(f"{conn.refused}; check mqtt.username_env / mqtt.password_env", verb="refused the connection")
            self._drop(conn)
            return False
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost(f"connection lost ({mqtt.error_string(rc)})")
            self._drop(conn)
            return False
        if not conn.connected:
            if time.monotonic() - conn.started > CONNACK_TIMEOUT_S:
                self._lost("no answer to CONNECT")
                conn.client.disconnect()  # closes the socket (the will does not matter: never online)
                self._drop(conn)
                return False
            return True
        if self._outage:
            self._outage = self._overflow_logged = False
            log.info("MQTT broker %s reachable again; sending %d queued events", self.address, len(self.spool))
        elif not self._announced:
            log.info("MQTT: publishing events to %s under %s/", self.address,
                     self.base_topic if self.announce else self.config.topic_prefix)
        self._announced = True
        for mid in conn.acked:
            seq = conn.handed.pop(mid, None)
            if seq is not None:
                self.spool.remove(seq)
                self.delivered += 1
        conn.acked.clear()
        room = WINDOW - len(conn.handed)
        if room > 0 and self._more:
            rows = self.spool.after(conn.last_handed, room)
            self._more = len(rows) == room
            for seq, topic, payload in rows:
                info = conn.client.publish(topic, payload, qos=1)
                conn.handed[info.mid] = seq
                conn.last_handed = seq
        return True

    def _drop(self, conn: _Connection) -> None:
        # What the lost connection had not acknowledged is sent again by the next one, in order.
        self._more = True

    def _lost(self, reason: str, verb: str = "unreachable") -> None:
        if not self._outage:
            self._outage = True
            log.warning(
                "MQTT broker %s %s (%s); events are kept in %s and sent when it returns",
                self.address, verb, reason, self.spool.path,
            )

    def _close(self, conn: _Connection) -> None:
        """Clean stop: a retained 'offline', then DISCONNECT (so the broker skips the will)."""
        import paho.mqtt.client as mqtt

        if not conn.connected or not self.announce:
            if conn.client.is_connected() or conn.client.socket() is not None:
                conn.client.disconnect()
            return
        info = conn.client.publish(self.status_topic, "offline", qos=1, retain=True)
        until = time.monotonic() + 5.0
        while not info.is_published() and time.monotonic() < until:
            if conn.client.loop(timeout=POLL_S) != mqtt.MQTT_ERR_SUCCESS:
                return
        conn.client.disconnect()
