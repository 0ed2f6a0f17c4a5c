"""Event publishers: sinks that forward every events.jsonl line to a broker or a webhook.

Each is a context manager like the sinks in `stream_pipeline.sinks`, handed to the
`EventLog`, which gives it every line it writes.
"""

from __future__ import annotations

from pathlib import Path

from stream_pipeline.core.config import PipelineConfig
from stream_pipeline.publishers.base import EventPublisher


def event_publishers(config: PipelineConfig, out_dir: str | Path, source: str,
                     camera: str | None = None) -> list[EventPublisher]:
    """The publishers the config turns on (none by default), for one source's run (`camera`: the
    name serve gives it, which names its MQTT topics)."""
    publishers: list[EventPublisher] = []
    if config.mqtt is not None:
        from stream_pipeline.publishers.mqtt import MqttPublisher

        publishers.append(MqttPublisher(config.mqtt, out_dir, source, camera))
    if config.webhook is not None:
        from stream_pipeline.publishers.webhook import WebhookPublisher

        publishers.append(WebhookPublisher(config.webhook))
    return publishers


__all__ = ["EventPublisher", "event_publishers"]
