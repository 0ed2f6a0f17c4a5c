"""stream-pipeline: real-time vehicle-brand recognition on traffic video."""

__version__ = "0.1.0"
