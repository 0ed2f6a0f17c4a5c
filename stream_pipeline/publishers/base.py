"""What every event publisher offers, and the names publishers show to the outside."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit


class EventPublisher(Protocol):
    """A sink that forwards event lines elsewhere; a context manager like every sink.

    `publish` is called on the pipeline thread for every line written to events.jsonl and
    must return at once: delivery happens on the publisher's own thread.
    """

    def __enter__(self) -> "EventPublisher": ...

    def __exit__(self, *exc_info) -> None: ...

    def publish(self, event: dict, line: str) -> None:
        """`event` as written (with its `event_id`); `line` is its exact events.jsonl text."""


def topic_source_name(source: str) -> str:
    """One MQTT topic level naming the input: a file's stem, a stream's host and path.

    Characters that are not letters, digits, '.', '_' or '-' become '_', so a source never
    adds topic levels or wildcards.
    """
    if "://" in source:
        try:
            parts = urlsplit(source)
        except ValueError:  # e.g. an unclosed IPv6 bracket: the source reports it when it opens
            return topic_level(source.split("://", 1)[1].rsplit("@", 1)[-1].split("?", 1)[0])
        host = parts.hostname or ""
        port = _port(parts)
        if port:
            host += f"_{port}"
        name = host + parts.path
    else:
        name = Path(source).stem or source
    return topic_level(name)


def topic_level(name: str) -> str:
    """`name` as one MQTT topic level: other characters than letters, digits, '.', '_', '-' become '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return name or "source"


def _port(parts) -> int | None:
    """The URL's port, or None also when it is malformed (the source reports that when it opens)."""
    try:
        return parts.port
    except ValueError:
        return None


def host_port(parts) -> str:
    """The network location of a `urlsplit` result without its user info: host[:port]."""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = _port(parts)
    return f"{host}:{port}" if port else host


def public_url(url: str) -> str:
    """A URL as safe to log: no user, password, query or fragment (tokens often live there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://<invalid URL>"
    return f"{parts.scheme}://{host_port(parts)}{parts.path}"
