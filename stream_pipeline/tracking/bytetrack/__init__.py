"""ByteTrack, vendored from ultralytics 8.4.190 (`ultralytics/trackers/`: byte_tracker.py,
basetrack.py, utils/kalman_filter.py, utils/matching.py, utils/stracks.py; AGPL-3.0, as this
project), unchanged except the imports: importing it from ultralytics imports torch, which
the runtime path otherwise never needs (~0.5 GB resident and seconds of start-up on 2 cores).
tests/test_throughput.py checks it tracks exactly as the installed ultralytics does."""

from stream_pipeline.tracking.bytetrack.byte_tracker import BYTETracker

__all__ = ["BYTETracker"]
