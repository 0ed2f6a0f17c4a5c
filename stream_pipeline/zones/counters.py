"""Per-track side keeping for one line or one polygon, with hysteresis.

A track's first position sets its starting side, wherever it is; after that its side only
changes once its anchor is `hysteresis` pixels past the edge: inside that band the last
settled side holds, so a box wobbling on the line is not a crossing per wobble. A line
crossing also needs the anchor's path (from one frame's anchor to the next) to have passed
through the segment itself, so a fast vehicle is counted near the line's ends and one
driving round an end is not. A line counts each track once (its first crossing): a box that
jumps by more than the band, as when a passing vehicle hides part of it, would otherwise be
counted again on every jump. Polygons count every entry and exit (a vehicle may leave and
come back).
"""

from __future__ import annotations

import cv2
import numpy as np

IN, OUT = "in", "out"


class LineCounter:
    """Crossings of the segment a -> b. Right of the direction a -> b (as seen on screen,
    y pointing down) is the `in` side: crossing from left to right is `in`, back is `out`."""

    def __init__(self, a: tuple[float, float], b: tuple[float, float], hysteresis: float) -> None:
        self.a = np.asarray(a, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        self.direction = self.b - self.a
        self.length = float(np.hypot(*self.direction))
        self.hysteresis = hysteresis
        self._side: dict[int, int] = {}  # track id -> settled side: +1 (right / in side) or -1 (left)
        self._last: dict[int, tuple[float, float]] = {}  # track id -> its anchor in the previous update
        self._through: set[int] = set()  # tracks whose path met the segment since their side settled
        self._counted: set[int] = set()  # tracks already counted on this line

    def signed_distance(self, point: tuple[float, float]) -> float:
        """Pixels from the line; positive on the `in` (right-hand) side."""
        dx, dy = self.direction
        px, py = point[0] - self.a[0], point[1] - self.a[1]
        return float(dx * py - dy * px) / self.length

    def _along(self, point: tuple[float, float]) -> float:
        """Position of the point's projection along the segment: 0 at a, 1 at b."""
        return float(np.dot(np.asarray(point) - self.a, self.direction)) / (self.length**2)

    def _path_meets_segment(self, p: tuple[float, float], q: tuple[float, float]) -> bool:
        """Whether the straight path p -> q passes through the segment a-b (touching counts)."""
        dp, dq = self.signed_distance(p), self.signed_distance(q)
        if dp * dq > 0 or dp == dq:
            return False  # one side of the line, or moving along it
        t = dp / (dp - dq)
        meet = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
        return 0.0 <= self._along(meet) <= 1.0

    def update(self, track_id: int, point: tuple[float, float]) -> str | None:
        """Feed the track's anchor this frame; returns "in"/"out" when it has just crossed."""
        point = (float(point[0]), float(point[1]))
        last = self._last.get(track_id)
        self._last[track_id] = point
        if last is not None and self._path_meets_segment(last, point):
            self._through.add(track_id)
        distance = self.signed_distance(point)
        side = self._side.get(track_id)
        if side is None:
            # The first position is the starting side, even inside the band: the band only keeps
            # a settled side from flipping (a vehicle first seen 5 px before the line still crosses it).
            if distance != 0:
                self._side[track_id] = 1 if distance > 0 else -1
            return None
        if abs(distance) < self.hysteresis or distance == 0:
            return None  # inside the band: the settled side holds
        new_side = 1 if distance > 0 else -1
        if new_side == side:
            self._through.discard(track_id)  # back clear on its side: touching the segment was no crossing
            return None
        self._side[track_id] = new_side
        crossed = track_id in self._through
        self._through.discard(track_id)
        if not crossed or track_id in self._counted:
            return None  # went round the segment's end, or already counted
        self._counted.add(track_id)
        return IN if new_side > 0 else OUT

    def forget(self, track_id: int) -> None:
        self._side.pop(track_id, None)
        self._last.pop(track_id, None)
        self._through.discard(track_id)
        self._counted.discard(track_id)


class PolygonCounter:
    """Entries into and exits from a polygon. A track seen first inside (by any distance) is not
    an entry: it must be seen outside first (draw polygons away from the frame edges)."""

    def __init__(self, points: list[tuple[float, float]], hysteresis: float) -> None:
        self.contour = np.asarray(points, dtype=np.float32).reshape(-1, 1, 2)
        self.hysteresis = hysteresis
        self._inside: dict[int, bool] = {}

    def update(self, track_id: int, point: tuple[float, float]) -> str | None:
        """Returns "in" on entry, "out" on exit, None otherwise."""
        distance = cv2.pointPolygonTest(self.contour, (float(point[0]), float(point[1])), True)
        previous = self._inside.get(track_id)
        if previous is None:
            # The first position is the starting side, even inside the band (as for lines).
            if distance != 0:
                self._inside[track_id] = distance > 0
            return None
        if abs(distance) < self.hysteresis or distance == 0:
            return None
        inside = distance > 0
        self._inside[track_id] = inside
        if previous == inside:
            return None
        return IN if inside else OUT

    def forget(self, track_id: int) -> None:
        self._inside.pop(track_id, None)

    @property
    def occupancy(self) -> int:
        return sum(self._inside.values())


def anchor_points(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """(N, 2) anchor of each box: bottom_center (where the wheels meet the road) or center."""
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = xyxy[:, 3] if anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.stack([x, y], axis=1) if len(xyxy) else np.zeros((0, 2), dtype=np.float32)
