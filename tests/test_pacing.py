"""The live jitter buffer's schedule (`StreamPacer`), on arrival times and timestamps as numbers."""

from __future__ import annotations

import random

import pytest

from stream_pipeline.sources.pacing import StreamPacer

FPS = 30.0


def test_a_paced_stream_is_released_on_arrival():
    rng = random.Random(0)
    pacer = StreamPacer(max_hold_s=0.4)
    holds = []
    for i in range(300):
        pts = i / FPS
        arrival = 100.0 + pts + 0.05 + rng.uniform(0.0, 0.004)  # 50 ms network delay, 4 ms jitter
        holds.append(pacer.due(arrival, pts) - arrival)
    assert min(holds) >= 0.0 and max(holds) <= 0.0041


def test_bursts_are_spread_back_to_the_stream_pace():
    """Nine frames land within 16 ms every 0.3 s (a server sending a GOP at once)."""
    pacer = StreamPacer(max_hold_s=0.4)
    due = []
    for i in range(9 * 20):
        burst, k = divmod(i, 9)
        arrival = 100.0 + 0.3 * (burst + 1) + 0.002 * k
        due.append(pacer.due(arrival, i / FPS))
    steady = due[9 * 2:]  # after the first bursts
    gaps = [b - a for a, b in zip(steady, steady[1:])]
    assert gaps == pytest.approx([1 / FPS] * len(gaps), abs=1e-6)


def test_no_frame_is_held_longer_than_the_buffer():
    """A server that sends its first second at once: the early frames wait at most max_hold_s,
    and once they leave the window the stream is released on arrival again."""
    pacer = StreamPacer(max_hold_s=0.4)
    holds = []
    for i in range(300):
        pts = i / FPS
        arrival = 100.0 + (0.001 * i if i < 30 else pts - 1.0)  # 1 s of stream in 30 ms, then paced
        holds.append(pacer.due(arrival, pts) - arrival)
    assert max(holds) == pytest.approx(0.4)
    assert max(holds[-150:]) <= 1e-9  # past the 2-s window: on arrival


def test_unknown_timestamps_and_a_clock_that_goes_back():
    pacer = StreamPacer(max_hold_s=0.4)
    assert pacer.due(5.0, None) == 5.0 and pacer.due(5.1, -1.0) == 5.1
    for i in range(10):
        pacer.due(10.0 + i / FPS, 50.0 + i / FPS)
    # A loop or a new session restarts the stream's clock: a new pace, not a 50-s hold.
    assert pacer.due(11.0, 0.0) == 11.0
    assert StreamPacer(max_hold_s=0.0).due(7.0, 0.5) == 7.0  # buffer off


def test_frames_of_a_burst_carry_their_stream_pace_not_their_arrival(monkeypatch):
    """Nine frames landing within 16 ms: stamped with their arrival they were a few ms apart, then a
    0.3 s jump, and tracking and the video's clock followed the network, not the stream."""
    from stream_pipeline.sources import live
    from stream_pipeline.sources.live import LiveSource

    clock = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    source = LiveSource("rtsp://127.0.0.1:9/none")  # never opened: frames are handed in directly
    source._t0 = 100.0
    image = __import__("numpy").zeros((4, 4, 3), "uint8")
    for i in range(9 * 20):
        burst, k = divmod(i, 9)
        clock[0] = 100.0 + 0.3 * (burst + 1) + 0.002 * k
        source._deliver(image, i / FPS)
    stamps = [frame.timestamp_s for _, frame in source._pending][9 * 2:]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert gaps == pytest.approx([1 / FPS] * len(gaps), abs=1e-6)
