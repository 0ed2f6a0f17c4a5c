"""Per-vehicle snapshots: the best view of the vehicle and of its badge."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class SnapshotWriter:
    def __init__(self, out_dir: str | Path, subdir: str = "snapshots") -> None:
        self.root = Path(out_dir)
        self.subdir = subdir
        self.written = 0

    def save(self, name: str, image: np.ndarray | None) -> str | None:
        """Write `image` as JPEG; returns its path relative to the run folder."""
        if image is None or image.size == 0:
            return None
        folder = self.root / self.subdir
        folder.mkdir(parents=True, exist_ok=True)
        relative = f"{self.subdir}/{name}.jpg"
        if not cv2.imwrite(str(self.root / relative), image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            return None
        self.written += 1
        return relative
