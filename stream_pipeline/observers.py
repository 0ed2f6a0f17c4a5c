"""Which observers (`core.observer.RunObserver`) a run gets, from its config."""

from __future__ import annotations

from stream_pipeline.core.config import PipelineConfig
from stream_pipeline.core.observer import RunObserver


def build_observers(config: PipelineConfig, class_names: dict[int, str]) -> list[RunObserver]:
    """Fresh observers for one run (they hold per-run state)."""
    observers: list[RunObserver] = []
    if config.zones:
        from stream_pipeline.zones.monitor import ZoneMonitor

        observers.append(ZoneMonitor(config.zones, class_names))
    return observers
