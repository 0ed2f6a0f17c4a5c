"""Per-vehicle snapshots: the best view of the vehicle and of its badge."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stream_pipeline.sinks.outdir import output_error


class SnapshotWriter:
    def __init__(self, out_dir: str | Path, subdir: str = "snapshots") -> None:
        self.root = Path(out_dir)
        self.subdir = subdir
        self.written = 0
        self.failed = False

    def save(self, name: str, image: np.ndarray | None) -> str | None:
        """Write `image` as JPEG; returns its path relative to the run folder.

        A failed write (disk full...) removes the partial file and raises OutputError; the
        writer then stays silent, as the run is stopping.
        """
        if image is None or image.size == 0 or self.failed:
            return None
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        relative = f"{self.subdir}/{name}.jpg"
        path = self.root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                handle.write(encoded.tobytes())
        except OSError as exc:
            self.failed = True
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            raise output_error(path, exc) from None
        self.written += 1
        return relative
