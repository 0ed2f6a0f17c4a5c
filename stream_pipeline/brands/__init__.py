"""Brand recognition: badge detection, brand classification, per-track voting."""
