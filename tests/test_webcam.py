"""The webcam path without a camera: argument parsing, open/read errors, and the live reader
(watchdog, newest-frame-wins, stale-frame rules) fed by capture objects that play real clips."""

from __future__ import annotations

import glob
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_pipeline.core.config import SourceConfig
from stream_pipeline.core.errors import SourceError
from stream_pipeline.sources import LiveSource, VideoFileSource, is_live, open_source
from stream_pipeline.sources.live import parse_webcam

CLIP = "dashcam_vw_close.mp4"  # 138 frames


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0), ("3", 3), ("12", 12), (" 1 ", 1),
        ("/dev/video0", "/dev/video0"), ("/dev/video12", "/dev/video12"),
        ("/dev/v4l/by-id/usb-Logitech_C920-video-index0", "/dev/v4l/by-id/usb-Logitech_C920-video-index0"),
        ("/dev/video", None), ("/dev/videos/clip.mp4", None), ("-1", None), ("1.5", None), ("٣", None),
        ("clip.mp4", None), ("0.mp4", None), ("rtsp://127.0.0.1/0", None), ("", None),
    ],
)
def test_webcam_arguments(text: str, expected):
    assert parse_webcam(text) == expected
    assert is_live(text) == (expected is not None or text.startswith("rtsp://"))


def test_webcam_arguments_open_a_live_source():
    assert isinstance(open_source("0"), LiveSource) and open_source("/dev/video2").name == "/dev/video2"
    assert isinstance(open_source("0.mp4"), VideoFileSource)


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a video device exists on this machine")
@pytest.mark.parametrize("device", ["7", "/dev/video9"])
def test_missing_webcam_is_one_clear_error(device: str):
    with pytest.raises(SourceError, match=rf"^cannot open webcam {device} \(unreachable, refused or not a video stream\)$"):
        LiveSource(device, SourceConfig()).open()


# -- the live reader on capture objects that stand in for a camera ---------------------------


class LoopingFileCapture:
    """A webcam stand-in: a real clip through cv2.VideoCapture's interface, rewound at its end."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self._capture = cv2.VideoCapture(str(path))
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        self.loops = 0
        self.reads = 0

    def isOpened(self) -> bool:
        return self._capture.isOpened()

    def get(self, prop: int) -> float:
        return self._capture.get(prop)

    def read(self):
        self.reads += 1
        ok, image = self._capture.read()
        if not ok:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.loops += 1
            ok, image = self._capture.read()
        return ok, image

    def release(self) -> None:
        self._capture.release()


class ScriptedCapture(LoopingFileCapture):
    """Plays the clip, but `script[n]` replaces the n-th read: "fail", or (delay_s, image)."""

    def __init__(self, path: Path, script: dict, start: int = 0) -> None:
        super().__init__(path, start)
        self.script = script

    def read(self):
        step = self.script.get(self.reads)
        if step is None:
            return super().read()
        self.reads += 1
        if step == "fail":
            return False, None
        delay, image = step
        time.sleep(delay)  # the device blocks (a frozen camera), then hands over `image`
        return True, image.copy()


class FakeWebcam(LiveSource):
    """The real LiveSource; only the device behind it is replaced."""

    def __init__(self, captures, config: SourceConfig) -> None:
        super().__init__("0", config)
        self._captures = iter(captures)
        self.opened: list = []

    def _create_capture(self):
        capture = next(self._captures)
        if isinstance(capture, Exception):
            raise capture
        self.opened.append(capture)
        return capture


class BurstyCapture(LoopingFileCapture):
    """A camera that sends its 30-fps stream in bursts: `burst` frames at once, then nothing for
    as long as they last; timestamps (CAP_PROP_POS_MSEC) at the stream's pace."""

    def __init__(self, path: Path, burst: int = 9) -> None:
        super().__init__(path)
        self.burst = burst

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_POS_MSEC:
            return (self.reads - 1) * 1000.0 / 30.0
        return super().get(prop)

    def read(self):
        if self.reads and self.reads % self.burst == 0:
            time.sleep(self.burst / 30.0)
        return super().read()


def _frames(path: Path, first: int, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, first)
    images = [capture.read()[1] for _ in range(count)]
    capture.release()
    return images


# jitter_buffer_ms 0: these tests are about the watchdog and newest-frame-wins; the stand-in
# captures decode a file far faster than its timestamps, which the jitter buffer would pace.
FAST = SourceConfig(read_timeout_s=1.0, reconnect_delay_s=0.0, open_timeout_s=1.0, max_reconnects=2, jitter_buffer_ms=0)


def test_live_reader_plays_a_looping_capture(videos: Path):
    clip = videos / CLIP
    camera = LoopingFileCapture(clip)
    source = FakeWebcam([camera], FAST)
    notices: list[dict] = []
    source.on_status = notices.append
    indices = []
    with source:
        for frame in source.frames():
            indices.append(frame.index)
            assert frame.image.shape == (530, 552, 3)
            if frame.index > 300:  # past two plays of the 138-frame clip
                break
    assert camera.loops >= 2 and not notices  # a rewind is not a gap
    assert indices == sorted(set(indices))
    assert source.fps == pytest.approx(29.97, abs=0.01)


@pytest.mark.parametrize("jitter_buffer_ms", [0, 400])
def test_bursty_camera_is_played_at_its_pace(videos: Path, jitter_buffer_ms: int):
    """Nine frames at once every 0.3 s. With the jitter buffer the consumer gets them spread
    over the burst's 0.3 s (in order, never ahead of the stream's own clock); without it, only
    what it can grab as the burst lands."""
    config = FAST.model_copy(update={"jitter_buffer_ms": jitter_buffer_ms})
    source = FakeWebcam([BurstyCapture(videos / CLIP)], config)
    seen: list[tuple[int, float]] = []
    with source:
        for frame in source.frames():
            seen.append((frame.index, time.monotonic()))
            if frame.index >= 9 * 8:  # eight bursts
                break
    indices = [index for index, _ in seen]
    assert indices == sorted(set(indices))
    if jitter_buffer_ms:
        # Handed out no faster than the stream's clock (30 fps) from the first frame: a frame is
        # never early, however late a busy machine makes it.
        (first, t0), *rest = seen
        assert all(t - t0 >= (index - first) / 30.0 - 0.005 for index, t in rest)
        # A consumer that does nothing gets most frames (bursts of 9 spread over 0.3 s); a loose
        # bound, so a busy machine that wakes the consumer late still passes.
        assert len(seen) >= 3 * 8, indices


def test_camera_that_cannot_open_is_a_source_error():
    source = FakeWebcam([cv2.error("V4L2: can't open camera by index")], FAST)
    with pytest.raises(SourceError, match=r"^cannot open webcam 0: .*can't open camera"):
        source.open()


def test_read_errors_reconnect_then_give_up(videos: Path):
    clip = videos / CLIP
    always_failing = {n: "fail" for n in range(0, 10_000)}
    captures = [ScriptedCapture(clip, {n: "fail" for n in range(5, 10_000)})] + [
        ScriptedCapture(clip, always_failing) for _ in range(FAST.max_reconnects)
    ]
    source = FakeWebcam(captures, FAST)
    notices: list[dict] = []
    source.on_status = notices.append
    frames = []
    with source, pytest.raises(SourceError, match=r"lost 0: no frames after 2 reconnect attempts"):
        for frame in source.frames():
            frames.append(frame)
    assert len(source.opened) == 1 + FAST.max_reconnects
    assert 1 <= len(frames) <= 5
    assert [n["status"] for n in notices] == ["stalled"]
    assert notices[0]["reason"].startswith("read failed")


def test_repeated_picture_after_reconnect_is_dropped(videos: Path):
    """A server that re-sends its last picture after a reconnect: the repeat is not a new frame."""
    clip = videos / CLIP
    first = _frames(clip, 0, 10)
    # Plays 10 frames, then fails; the next connection starts by repeating picture 9 twice.
    before = ScriptedCapture(clip, {10: "fail"})
    after = ScriptedCapture(clip, {0: (0.0, first[9]), 1: (0.0, first[9])}, start=60)
    source = FakeWebcam([before, after], FAST)
    notices: list[dict] = []
    source.on_status = notices.append
    seen = []
    with source:
        for frame in source.frames():
            seen.append(frame)
            if any(n["status"] == "resumed" for n in notices) and len(seen) >= 3 and frame.index >= 12:
                break
    resumed = [n for n in notices if n["status"] == "resumed"]
    assert [n["status"] for n in notices] == ["stalled", "resumed"]
    assert resumed[0]["stale_frames_dropped"] == 2 and resumed[0]["reconnects"] == 1
    fresh = [f for f in seen if f.index >= resumed[0]["frame"]]
    assert fresh and all(not np.array_equal(f.image, first[9]) for f in fresh)
    assert source.frames_stale == 2


def test_decoder_leftover_after_read_timeout_is_dropped(videos: Path):
    """FFmpeg's read timeout hands over a picture left in the decoder: late, so stale."""
    clip = videos / CLIP
    leftover = _frames(clip, 100, 1)[0]  # a picture this run would otherwise never show
    before = ScriptedCapture(clip, {8: (FAST.read_timeout_s + 0.2, leftover)})
    after = LoopingFileCapture(clip, start=20)
    source = FakeWebcam([before, after], FAST)
    notices: list[dict] = []
    source.on_status = notices.append
    seen = []
    with source:
        for frame in source.frames():
            seen.append(frame)
            if any(n["status"] == "resumed" for n in notices) and frame.index >= 20:
                break
    assert [n["status"] for n in notices] == ["stalled", "resumed"]
    assert notices[0]["reason"] == f"no new frame for {FAST.read_timeout_s:g} s"
    assert notices[1]["stale_frames_dropped"] == 1
    assert notices[1]["seconds_lost"] >= FAST.read_timeout_s
    assert all(not np.array_equal(f.image, leftover) for f in seen)
