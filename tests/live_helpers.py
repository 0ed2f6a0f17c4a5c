"""Helpers for tests that drive a running program: a local RTSP server and a CLI run that is
watched through what it reports (stderr log lines, events.jsonl), never through sleeps."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stream_pipeline.core.paths import PROJECT_ROOT

# Generous: CI has 2 cores and may share them with a training job.
DEADLINE_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """aio-rtsp-toolkit's `rtsp-server` on loopback, serving a copy of a real clip in a loop."""

    def __init__(self, media: Path, videos: Path, clip: str = "dashcam_vw_close.mp4", port: int | None = None) -> None:
        media.mkdir(parents=True, exist_ok=True)
        # The server refuses files outside its root, so the clip is copied (not linked) there.
        shutil.copyfile(videos / clip, media / "dashcam.mp4")
        # A given port: the same camera address again after a restart.
        self.port, control = port or free_port(), free_port()
        server_bin = Path(sys.executable).with_name("rtsp-server")
        self.proc = subprocess.Popen(
            [str(server_bin), "--dir", str(media), "--host", "127.0.0.1", "--port", str(self.port),
             "--control-port", str(control)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # Polls the server's own readiness (its port accepting), within a deadline.
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    pytest.fail("local RTSP server did not start")
                time.sleep(0.2)

    def url(self, userinfo: str = "", query: str = "") -> str:
        """Stream URL; play_count=0 loops the clip, like a camera that never stops."""
        auth = f"{userinfo}@" if userinfo else ""
        extra = f"&{query}" if query else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/dashcam.mp4?play_count=0{extra}"

    def freeze(self) -> None:
        """The camera hangs: connections stay open, nothing is sent."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=30)


def default_sigint() -> None:
    """In the child: Ctrl-C's default action. A suite started in the background (`make test &`,
    nohup) passes SIGINT on as ignored, and the Ctrl-C tests would wait for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CliRun:
    """`python -m stream_pipeline ARGS` in the background, headless; stderr is read line by line."""

    PROGRESS = re.compile(r"progress: (\d+) frames")

    def __init__(self, *args: str, display: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        if display is not None:  # a test's own X server (Xvfb)
            env["DISPLAY"] = display
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_pipeline", *args],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=default_sigint,
        )
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._lines), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._stdout), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        sink.extend(stream)

    def wait_for_line(self, pattern: str | re.Pattern, timeout: float = DEADLINE_S) -> re.Match:
        """Block until the program writes a stderr line matching `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(f"no stderr line matching {regex.pattern!r} within {timeout:.0f} s:\n{self.stderr}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)
                pytest.fail(f"program exited ({self.proc.wait()}) before a line matching {regex.pattern!r}:\n{self.stderr}")
            self.stderr_lines.append(line)
            match = regex.search(line)
            if match:
                return match

    def wait_for_frames(self, frames: int, timeout: float = DEADLINE_S) -> int:
        """Block until a progress log line reports at least `frames` processed frames."""
        while True:
            seen = int(self.wait_for_line(self.PROGRESS, timeout).group(1))
            if seen >= frames:
                return seen

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = DEADLINE_S) -> tuple[int, str, str]:
        """Wait for the exit; returns (exit code, stdout, whole stderr)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for reader in self._readers:
            reader.join(timeout=30)
        while True:
            line = self._lines.get()
            if line is None:
                break
            self.stderr_lines.append(line)
        return code, "".join(self._stdout), self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def read_events_so_far(path: Path) -> list[dict]:
    """Complete lines of an event log that is still being written."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def wait_for_event(path: Path, predicate, what: str, run: CliRun | None = None, timeout: float = DEADLINE_S) -> dict:
    """Poll an event log (bounded) until an event satisfies `predicate`; the program's own report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = run is not None and run.proc.poll() is not None
        for event in read_events_so_far(path):
            if predicate(event):
                return event
        if exited:
            break
        time.sleep(0.2)
    if run is not None:
        run.kill()
    pytest.fail(f"no {what} event in {path} within {timeout:.0f} s")
