"""Exclusive advisory file locks (`<file>.lock`), for files one process at a time may change:
the MQTT spool (a running camera's), a brand gallery (enroll / gallery remove)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per file is the user's care
    fcntl = None


def acquire(lock: Path, on_wait: Callable[[], None] | None = None) -> int | None:
    """Lock the file `lock` (created if missing). Returns the descriptor holding the lock (closing
    it releases it), or None where there are no advisory locks. A lock held by another process
    raises BlockingIOError, or, with `on_wait`, is waited for after calling it."""
    if fcntl is None:
        return None
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is None:
                raise
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd
