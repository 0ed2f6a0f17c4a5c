"""Outputs: annotated video, event log, CSV, snapshots, live window."""
