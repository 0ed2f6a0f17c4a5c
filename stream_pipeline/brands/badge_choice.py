"""Which logo-detector box on a vehicle crop is its badge.

Two steps, both on the crop's own pixels:

* plausible: where a badge can sit and how big it can be. Round wheels on side views are the
  detector's typical mistake (a box ~40 % of the vehicle's height, low on it), so boxes centred
  too low or too big are dropped. On a close-up (the vehicle fills much of the frame, or is cut
  by it) the vehicle box is only the part of the car in view and the badge can be a large part
  of it: the size limits are relaxed there, for boxes in the upper part of the crop only (wheels
  stay low).
* choose: the box to read. A licence plate (plates.looks_like_plate) is never chosen over a box
  that is not plate-like, whatever their scores: on close-ups the plate can outscore the badge
  (0.69 against 0.59 on a Hyundai rear). A plate-like box is read only when it is the only
  candidate, since lettering badges (RAM, PORSCHE) can look like plates too.
"""

from __future__ import annotations

import numpy as np

from stream_pipeline.brands.plates import PLATE_MIN_ASPECT, looks_like_plate, plate_aspect
from stream_pipeline.core.config import BrandsConfig
from stream_pipeline.core.types import Detections


def is_close_up(vehicle_xyxy: np.ndarray, frame_width: int, frame_height: int, min_fraction: float) -> bool:
    """The vehicle is near the camera: its box spans >= min_fraction of the frame's width or height."""
    x1, y1, x2, y2 = (float(v) for v in vehicle_xyxy)
    return (x2 - x1) >= min_fraction * frame_width or (y2 - y1) >= min_fraction * frame_height


class BadgeChooser:
    """Filters a vehicle crop's logo boxes and picks the one to read."""

    def __init__(self, config: BrandsConfig) -> None:
        self.config = config

    def plausible(self, logos: Detections, width: int, height: int, close_up: bool = False) -> np.ndarray:
        """Per box: can a badge sit there (not too low on the vehicle, not too big: wheels)?"""
        if len(logos) == 0:
            return np.zeros(0, dtype=bool)
        c = self.config
        center_y = (logos.xyxy[:, 1] + logos.xyxy[:, 3]) / 2 / max(1, height)
        box_width = (logos.xyxy[:, 2] - logos.xyxy[:, 0]) / max(1, width)
        box_height = (logos.xyxy[:, 3] - logos.xyxy[:, 1]) / max(1, height)
        keep = (center_y <= c.badge_max_center_y) & (box_width <= c.badge_max_width) & (box_height <= c.badge_max_height)
        if close_up:
            big_badge = (
                (center_y <= c.badge_closeup_max_center_y)
                & (box_width <= c.badge_closeup_max_width)
                & (box_height <= c.badge_closeup_max_height)
            )
            keep |= big_badge
        return keep

    def plate_like(self, image: np.ndarray, logos: Detections) -> np.ndarray:
        """Per box: does it look like a licence plate (wide, light, a row of dark glyphs)?"""
        flags = np.zeros(len(logos), dtype=bool)
        h, w = image.shape[:2]
        for i in np.nonzero(plate_aspect(logos.xyxy) >= PLATE_MIN_ASPECT)[0]:
            x1, y1, x2, y2 = logos.xyxy[i]
            patch = image[max(0, int(y1)) : min(h, int(np.ceil(y2))), max(0, int(x1)) : min(w, int(np.ceil(x2)))]
            flags[i] = looks_like_plate(patch)
        return flags

    def choose(self, image: np.ndarray, logos: Detections) -> int | None:
        """Index (into `logos`) of the box to read, or None when there is none."""
        if len(logos) == 0:
            return None
        plate = self.plate_like(image, logos) if len(logos) > 1 else np.zeros(1, dtype=bool)
        # not plate-like first, then the detector's confidence
        order = np.lexsort((-logos.confidence, plate))
        return int(order[0])

    def __call__(self, image: np.ndarray, logos: Detections, close_up: bool = False) -> int | None:
        """The box of a vehicle crop to read (an index into `logos`), or None."""
        h, w = image.shape[:2]
        kept = np.nonzero(self.plausible(logos, w, h, close_up))[0]
        if len(kept) == 0:
            return None
        return int(kept[self.choose(image, logos[kept])])
