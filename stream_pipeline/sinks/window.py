"""`--show`: a live OpenCV window; `q` or Esc quits. Headless machines continue without it."""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import sys
import time

import cv2
import numpy as np

log = logging.getLogger(__name__)
OPEN_TIMEOUT_S = 15.0  # for the window to appear


def _x_server_answers(display: str, timeout_s: float = 0.5) -> bool:
    """Can a client connect to X display `display` (":0", "unix:1.0", "host:10.0")? Qt aborts
    the whole process when it cannot, so this is asked before any window is made."""
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<num>\d+)(?:\.\d+)?", display.strip())
    if not m:
        return False
    host, num = m["host"], int(m["num"])
    try:
        if host in ("", "unix"):
            for address in (f"/tmp/.X11-unix/X{num}", f"\0/tmp/.X11-unix/X{num}"):  # file, then abstract socket
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout_s)
                    try:
                        s.connect(address)
                        return True
                    except OSError:
                        continue
            return False
        with socket.create_connection((host, 6000 + num), timeout=timeout_s):
            return True
    except OSError:
        return False


def display_available() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland and os.path.exists(os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), wayland)):
        return True
    display = os.environ.get("DISPLAY")
    return bool(display) and _x_server_answers(display)


class LiveWindow:
    """The window lives in a process of its own: when the X connection breaks (an SSH session
    or remote desktop dropping), Qt ends the process that holds the window at once, with no
    clean-up. That must be the window's process, not the run's: the run carries on headless
    and finalises its outputs. Frames go over a one-slot queue; a busy window skips frames
    rather than slowing the run."""

    def __init__(self, title: str = "stream-pipeline", max_px: int = 1280) -> None:
        self.title = title
        self.max_px = max_px
        self.enabled = False
        self._process = None
        self._frames = None
        self._quit = None

    def __enter__(self) -> "LiveWindow":
        if not display_available():
            log.warning("no display available (DISPLAY=%s): --show ignored, continuing headless",
                        os.environ.get("DISPLAY") or "unset")
            return self
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of the run's threads and models
        self._frames = context.Queue(maxsize=1)
        self._quit = context.Event()
        opened = context.Event()
        self._process = context.Process(target=_window_process, name="stream-pipeline-window", daemon=True,
                                        args=(self.title, self._frames, self._quit, opened))
        self._process.start()
        # Wait for the window, or the process's end (it could not open one); a display that takes
        # connections but never answers (a stalled X11 forward) must not hold the run.
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while not opened.wait(0.05):
            if not self._process.is_alive() or time.monotonic() > deadline:
                why = f"exit {self._process.exitcode}" if not self._process.is_alive() else \
                    f"no window after {OPEN_TIMEOUT_S:.0f} s"
                log.warning("cannot open a window (%s): continuing headless", why)
                self._shutdown()
                return self
        self.enabled = True
        return self

    def __exit__(self, *exc_info) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self.enabled = False
        process, frames = self._process, self._frames
        self._process = self._frames = None
        if process is None:
            return
        if process.is_alive():
            try:
                frames.put(None, timeout=1.0)  # close the window
            except Exception:  # noqa: BLE001 - queue.Full, or the pipe is gone: it is stopped below
                pass
            process.join(timeout=3.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=2.0)
        frames.cancel_join_thread()  # a dead window process must not hold up our exit
        frames.close()

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; returns False when the user asked to quit (q, Esc, the close button)."""
        if not self.enabled:
            return True
        if self._quit.is_set():
            return False
        if not self._process.is_alive():
            log.warning("the window closed unexpectedly (display lost?; exit %s): continuing headless",
                        self._process.exitcode)
            self._shutdown()
            return True
        if self._frames.full():
            return True  # the window is still drawing the previous frame
        scale = self.max_px / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        try:
            self._frames.put_nowait(image)
        except queue.Full:
            pass  # the window is still drawing the previous frame
        return True


def _window_process(title: str, frames, quit_event, opened) -> None:
    """The window's own process: shows what arrives until told to stop, the user quits, or the
    run's process is gone (killed: nobody would close the window otherwise)."""
    import multiprocessing
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it closes the window
    parent = multiprocessing.parent_process()
    # OpenCV's wheels ship Qt without fonts (it complains five times per window): the system's.
    if not os.path.isdir(os.environ.get("QT_QPA_FONTDIR", "")):  # cv2 points it at its own, missing folder
        for fonts in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
            if os.path.isdir(fonts):
                os.environ["QT_QPA_FONTDIR"] = fonts
                break
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        return
    opened.set()
    sized = False
    try:
        while True:
            try:
                image = frames.get(timeout=0.03)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    break
                image = ...
            if image is None:
                break
            if image is not ...:
                if not sized:  # a normal window opens small; give it the frame's size once
                    cv2.resizeWindow(title, image.shape[1], image.shape[0])
                    sized = True
                cv2.imshow(title, image)
            key = cv2.waitKey(1) & 0xFF  # also keeps the window responsive between frames
            if key in (ord("q"), ord("Q"), 27):
                quit_event.set()
            elif sized and cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:  # its close button
                quit_event.set()
            if quit_event.is_set():
                break
    except cv2.error:
        quit_event.set()
    finally:
        try:
            cv2.destroyWindow(title)
            cv2.waitKey(1)
        except cv2.error:
            pass
