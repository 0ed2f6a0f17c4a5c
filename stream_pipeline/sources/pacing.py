"""Jitter buffer for live streams: frames that arrive in bursts are handed out at their stream pace.

Some cameras and servers send a stream in bursts (a whole GOP at once, or after a network
hiccup): nine frames within 5 ms, then nothing for 300 ms. A newest-frame-wins reader then
hands the pipeline one frame per burst and waits idle for the next one, so the pipeline runs
at a fraction of its speed, and tracks break over the long gaps (a vehicle then gives several
records). Like an RTP jitter buffer, `StreamPacer` gives each frame a release time from its
presentation timestamp: release = pts + offset, where offset is the largest (arrival - pts)
seen over the last few seconds, i.e. the pace of the most delayed recent frame. A steadily
paced stream is released on arrival (plus its arrival jitter); a bursty one is spread out
again. No frame is held longer than `max_hold_s`.
"""

from __future__ import annotations

from collections import deque

# The offset follows the most delayed frame of this many seconds back: long enough to span a
# burst cycle (~0.3 s seen), short enough that one late frame does not add its delay for long.
WINDOW_S = 2.0


class StreamPacer:
    """`due(arrival, pts_s)` -> the monotonic time at which a frame should be handed out."""

    def __init__(self, max_hold_s: float, window_s: float = WINDOW_S) -> None:
        self.max_hold_s = max_hold_s
        self.window_s = window_s
        self._offsets: deque[tuple[float, float]] = deque()  # (arrival, arrival - pts), arrival ascending
        self._last_pts: float | None = None

    def reset(self) -> None:
        """Forget the pace (after a reconnect the stream's clock starts again)."""
        self._offsets.clear()
        self._last_pts = None

    def due(self, arrival: float, pts_s: float | None) -> float:
        if self.max_hold_s <= 0 or pts_s is None or pts_s < 0:
            return arrival
        if self._last_pts is not None and pts_s < self._last_pts:
            self.reset()  # the stream's clock went back (a loop or a new session): a new pace
        self._last_pts = pts_s
        offsets = self._offsets
        while offsets and offsets[0][0] < arrival - self.window_s:
            offsets.popleft()
        # Keep only entries that can still be the maximum (a monotonic queue).
        offset = arrival - pts_s
        while offsets and offsets[-1][1] <= offset:
            offsets.pop()
        offsets.append((arrival, offset))
        # Ahead of the pace by more than the buffer allows (a long burst, or the server sent its
        # first second at once): held the longest the buffer allows, and the real offset is kept,
        # so once the early frames leave the window the pace follows the stream again.
        return min(pts_s + offsets[0][1], arrival + self.max_hold_s)
