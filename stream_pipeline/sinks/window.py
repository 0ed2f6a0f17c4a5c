"""`--show`: a live OpenCV window; `q` or Esc quits. Headless machines continue without it."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys

import cv2
import numpy as np

log = logging.getLogger(__name__)


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
    def __init__(self, title: str = "stream-pipeline", max_px: int = 1280) -> None:
        self.title = title
        self.max_px = max_px
        self.enabled = False

    def __enter__(self) -> "LiveWindow":
        if not display_available():
            log.warning("no display available (DISPLAY=%s): --show ignored, continuing headless",
                        os.environ.get("DISPLAY") or "unset")
            return self
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            self.enabled = True
        except cv2.error as exc:
            log.warning("cannot open a window (%s): continuing headless", str(exc).strip().splitlines()[-1])
        return self

    def __exit__(self, *exc_info) -> None:
        if self.enabled:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
            self.enabled = False

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; returns False when the user asked to quit."""
        if not self.enabled:
            return True
        scale = self.max_px / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            return False
        try:  # the window's close button
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                return False
        except cv2.error:
            return False
        return True
