"""Typed records passed between pipeline stages.

`Detections` follows supervision's design: one dataclass of parallel numpy arrays,
validated on construction, so every stage (detector, tracker, brand stage, sinks)
reads and writes the same record instead of tuples or dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNKNOWN_BRAND = "unknown"


@dataclass(frozen=True)
class Frame:
    """One decoded frame and where it sits in the stream."""

    image: np.ndarray  # BGR uint8, HxWx3
    index: int  # 0-based position in the stream (frames read, not frames processed)
    timestamp_s: float  # stream position in seconds
    source: str = ""
    # Live sources: time.monotonic() when the reader received the picture (latency measurements).
    captured_at: float | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"frame must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Detections:
    """Boxes found in one image, as parallel arrays of length N.

    xyxy: (N, 4) float32 pixel corners; confidence: (N,) float32; class_id: (N,) int32;
    tracker_id: (N,) int64, -1 where no track is assigned.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        if self.tracker_id is None:
            self.tracker_id = np.full(n, -1, dtype=np.int64)
        else:
            self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
        for name in ("confidence", "class_id", "tracker_id"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Detections.{name} has {len(getattr(self, name))} rows, xyxy has {n}")
        if n and not np.all(self.xyxy[:, 2:] >= self.xyxy[:, :2]):
            raise ValueError("Detections.xyxy must have x2 >= x1 and y2 >= y1")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """Select rows with a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index], self.confidence[index], self.class_id[index], self.tracker_id[index]
        )

    @property
    def area(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])


@dataclass(frozen=True)
class BrandScore:
    brand: str  # catalogue slug
    probability: float


@dataclass(frozen=True)
class BrandPrediction:
    """The classifier's answer for one badge crop."""

    brand: str  # catalogue slug, or UNKNOWN_BRAND when rejected
    confidence: float  # probability of the top class, 0-1
    top: tuple[BrandScore, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0 + 1e-6:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
