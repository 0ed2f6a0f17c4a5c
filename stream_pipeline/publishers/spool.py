"""A bounded first-in first-out queue of messages on disk (SQLite), for a broker that is away.

Rows survive the process: a run that ends while the broker is unreachable leaves them in
the output folder, and the next run into that folder (or `send-spool`) sends them first.
One process at a time: an open spool holds an exclusive lock (`<spool>.lock`), so `send-spool`
never drains (and deletes) the spool of a camera that is still running.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from stream_pipeline.core.errors import OutputError
from stream_pipeline.core.locks import acquire


class SpoolInUse(OutputError):
    """Another process has this spool open."""


class DiskSpool:
    """Messages (topic, payload) in arrival order; holds at most `max_rows` (oldest dropped).

    Used from one thread at a time (the publisher's worker).
    """

    def __init__(self, path: str | Path, max_rows: int) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.dropped = 0
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return Path(f"{self.path}.lock")

    def _lock(self) -> None:
        try:
            self._lock_fd = acquire(self.lock_path)
        except BlockingIOError:
            raise SpoolInUse(f"{self.path} is in use by another process") from None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def open(self) -> "DiskSpool":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        # check_same_thread=False: opened on the pipeline thread, then used by the worker only.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # WAL + NORMAL: each append is durable against a process crash without an fsync per event.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        return self

    def close(self, delete_if_empty: bool = True) -> int:
        """Close; returns the rows left. An empty spool leaves no file behind."""
        if self._db is None:
            return 0
        left = len(self)
        self._db.close()
        self._db = None
        if delete_if_empty and left == 0:
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self._unlock()
        return left

    def append(self, messages: list[tuple[str, str]]) -> int:
        """Add messages at the end; returns how many old ones were dropped to stay bounded."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO pending (topic, payload) VALUES (?, ?)", messages)
            over = len(self) - self.max_rows
            if over > 0:
                self._db.execute("DELETE FROM pending WHERE seq IN (SELECT seq FROM pending ORDER BY seq LIMIT ?)", (over,))
                self.dropped += over
        return max(0, over)

    def after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        """Up to `limit` messages with a sequence number above `seq`, oldest first."""
        return self._db.execute(
            "SELECT seq, topic, payload FROM pending WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()

    def remove(self, seq: int) -> None:
        self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
