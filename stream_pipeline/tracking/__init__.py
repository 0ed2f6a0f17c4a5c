"""Multi-object tracking of vehicles across frames."""

from stream_pipeline.tracking.tracker import TrackState, VehicleTracker

__all__ = ["TrackState", "VehicleTracker"]
