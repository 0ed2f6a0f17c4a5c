"""The interface through which runtime parts beside the main path (zones, ...) watch a run.

The pipeline calls every observer at the same points and knows nothing of what they do:
new analytics plug in here instead of adding branches to `pipeline.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from stream_pipeline.core.records import VehicleRecord
from stream_pipeline.core.types import Detections, Frame

if TYPE_CHECKING:
    from stream_pipeline.tracking.tracker import TrackState


class RunObserver:
    """Watches one run. Every method has a do-nothing default."""

    def on_frame(self, frame: Frame, tracked: Detections, tracks: dict[int, "TrackState"]) -> Iterable[dict]:
        """Called once per frame with the confirmed tracked vehicles; returns events to log."""
        return ()

    def on_vehicle(self, track: "TrackState", record: VehicleRecord) -> VehicleRecord:
        """Called when a vehicle's track ends, before its record is written; may add to the record."""
        return record

    def draw(self, image: np.ndarray, frame: Frame) -> None:
        """Draw on the annotated frame (video and live window), in place."""

    def summary(self) -> dict:
        """Fields added to the `ended` stream event."""
        return {}
