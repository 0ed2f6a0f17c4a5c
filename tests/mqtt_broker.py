"""A real Mosquitto broker on 127.0.0.1 and a real paho subscriber, for the publisher tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

SBIN = "/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_debian_tools(package: str, *tools: str) -> list[str]:
    """Paths of `tools`; installs Debian's `package` where one is missing (a fresh CI machine)."""
    found = [shutil.which(tool, path=SBIN) for tool in tools]
    if all(found):
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.fail(f"these tests need Debian's {package} package (apt-get install {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, capture_output=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], check=True, capture_output=True, env=env)
    found = [shutil.which(tool, path=SBIN) for tool in tools]
    assert all(found), f"{package} installed but {tools} not found"
    return found


def ensure_mosquitto() -> list[str]:
    """Paths of `mosquitto` and `mosquitto_passwd`."""
    return ensure_debian_tools("mosquitto", "mosquitto", "mosquitto_passwd")


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    (openssl,) = ensure_debian_tools("openssl", "openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert, ext = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "san.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=stream-pipeline test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext],
    ):
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


class Broker:
    """Mosquitto with a password file and persistence (sessions survive a restart on the same port)."""

    def __init__(self, workdir: Path, username: str, password: str, tls: bool = False) -> None:
        mosquitto, passwd_tool = ensure_mosquitto()
        self.binary = mosquitto
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        passwd = workdir / "passwd"
        subprocess.run([passwd_tool, "-b", "-c", str(passwd), username, password], check=True, capture_output=True)
        passwd.chmod(0o600)
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
            "persistence true",
            f"persistence_location {workdir}/",
            f"log_dest file {self.log}",
        ]
        # tls: a second listener, TLS only, with a certificate from a throw-away CA (self.ca_file).
        self.tls_port = self.ca_file = None
        if tls:
            self.ca_file, cert, key = make_certificates(workdir / "certs")
            self.tls_port = free_port()
            lines += [f"listener {self.tls_port} 127.0.0.1", f"certfile {cert}", f"keyfile {key}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user 'mosquitto', who cannot read pytest's tmp dirs
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                for port in (self.port, self.tls_port):
                    if port is not None:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"mosquitto did not start: {self.proc.stderr.read().decode(errors='replace')}")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


class Subscriber:
    """A paho client subscribed (QoS 1) to a topic filter, recording every message received."""

    def __init__(self, port: int, username: str, password: str, topic: str, client_id: str | None = None,
                 durable: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []  # (topic, payload, retained)
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        # durable: the broker keeps the subscription and queues messages while we are cut off.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
                                  clean_session=not durable, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(topic, qos=1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self._subscribed.set()

        def on_message(client, userdata, message):
            with self._cond:
                self.messages.append((message.topic, message.payload.decode("utf-8"), bool(message.retain)))
                self._cond.notify_all()

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(30), "test subscriber could not subscribe"

    def wait_for(self, predicate, timeout: float = 120) -> bool:
        """Wait until predicate(messages) holds (the timeout only guards against a hang)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def snapshot(self) -> list[tuple[str, str, bool]]:
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
