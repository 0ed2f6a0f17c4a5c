"""Each vehicle record POSTed as JSON to a webhook, with retries and backoff, off the pipeline thread.

`https://user:password@host/...` sends HTTP Basic auth. A failing endpoint is logged once when
the outage starts and once when it recovers, never per record: a camera on an endless stream
would otherwise flood the log.
"""

from __future__ import annotations

import base64
import http.client
import logging
import queue
import threading
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from stream_pipeline.core.config import WebhookConfig
from stream_pipeline.publishers.base import host_port, public_url

log = logging.getLogger(__name__)

# The pause between tries doubles from webhook.backoff_s up to this.
MAX_BACKOFF_S = 30.0


def _split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without user info, its Basic `Authorization` header value or None)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return urlunsplit((parts.scheme, host_port(parts), parts.path, parts.query, parts.fragment)), f"Basic {token}"


class WebhookPublisher:
    """POSTs each `vehicle` event line (the exact events.jsonl text) to `webhook.url`."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.target = public_url(config.url)
        # user:password in the URL is HTTP Basic auth (urllib would take it for part of the host)
        self._url, self._auth = _split_credentials(config.url)
        self.delivered = 0
        self.given_up = 0  # records whose every try failed
        self.overflowed = 0  # records dropped because the queue was full
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=config.max_queued)
        self._stop = threading.Event()  # the run is over: deliver what is queued, then end
        self._abort = threading.Event()  # the drain time is over: end now
        self._failed_tries = 0  # in the current outage; 0 = the endpoint is healthy
        self._overflow_logged = False
        self._failed = False
        self._taken = 0  # records taken off the queue; with delivered + given_up: one in flight or not
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- pipeline thread -------------------------------------------------------------------
    def __enter__(self) -> "WebhookPublisher":
        self._thread = threading.Thread(target=self._run, name="webhook-publisher", daemon=True)
        self._thread.start()
        return self

    def publish(self, event: dict, line: str) -> None:
        if event.get("event") != "vehicle" or self._failed:
            return
        try:
            self._queue.put_nowait((event["event_id"], line))
        except queue.Full:
            self.overflowed += 1
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning("webhook %s: queue full (webhook.max_queued = %d): dropping new records until it drains",
                            self.target, self.config.max_queued)

    def __exit__(self, *exc_info) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=self.config.drain_s)
        in_flight = 0
        if self._thread.is_alive():
            self._abort.set()
            # A POST in progress may hold on for timeout_s; drain_s is the limit the user set, so
            # it is not waited for (a daemon thread) and counts as not delivered.
            self._thread.join(timeout=0.5)
            with self._count_lock:
                in_flight = self._taken - self.delivered - self.given_up
        lost = self._queue.qsize() + self.given_up + self.overflowed + in_flight
        if lost:
            log.warning("webhook %s: %d of %d vehicle records not delivered", self.target, lost, lost + self.delivered)

    # -- worker thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._work()
        except Exception:  # noqa: BLE001 - a publisher failure must never reach the run
            self._failed = True
            log.exception("webhook publisher stopped; events.jsonl is still written")

    def _work(self) -> None:
        while not self._abort.is_set():
            try:
                event_id, line = self._queue.get(timeout=0.2)
            except queue.Empty:
                # The flag first: once it is set nothing more is queued, so empty means done.
                if self._stop.is_set() and self._queue.empty():
                    return
                continue
            with self._count_lock:
                self._taken += 1
            self._deliver(event_id, line)
            if self._queue.empty():
                self._overflow_logged = False

    def _deliver(self, event_id: str, line: str) -> None:
        pause = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            error = self._post(event_id, line)
            if error is None:
                if self._failed_tries:
                    log.info("webhook %s recovered after %d failed tries", self.target, self._failed_tries)
                    self._failed_tries = 0
                with self._count_lock:
                    self.delivered += 1
                return
            if not self._failed_tries:
                log.warning("webhook %s failing (%s); retrying with backoff, not logged again until it recovers",
                            self.target, error)
            self._failed_tries += 1
            if attempt == self.config.retries or self._abort.wait(pause):
                break
            pause = min(pause * 2, MAX_BACKOFF_S)
        with self._count_lock:
            self.given_up += 1

    def _post(self, event_id: str, line: str) -> str | None:
        """One try; None on a 2xx answer, else why it failed (never the URL: it may hold a token)."""
        headers = {"Content-Type": "application/json", "X-Event-Id": event_id, "User-Agent": "stream-pipeline"}
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self._url, data=line.encode("utf-8"), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                response.read()
                return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            return str(exc.reason)
        except (OSError, http.client.HTTPException) as exc:
            return str(exc) or type(exc).__name__
