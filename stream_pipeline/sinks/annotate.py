"""Draws the overlay: vehicle boxes, track id, class, brand, badge box and stream time."""

from __future__ import annotations

import cv2
import numpy as np

from stream_pipeline.core.types import UNKNOWN_BRAND, Detections, Frame
from stream_pipeline.tracking.tracker import TrackState

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]


BADGE_BOX_FRAMES = 3


def _color(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[int(track_id) % len(_PALETTE)]


def _label(image: np.ndarray, text: str, x: int, y: int, color, scale: float, thickness: int) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y = max(y, th + base + 2)
    x = max(0, min(x, image.shape[1] - tw - 4))  # keep labels of edge boxes on screen
    cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 4, y), color, -1)
    cv2.putText(image, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


class Annotator:
    def __init__(self, class_names: dict[int, str], draw_clock: bool = True) -> None:
        self.class_names = class_names
        self.draw_clock = draw_clock

    def draw(
        self,
        frame: Frame,
        tracked: Detections,
        tracks: dict[int, TrackState],
        vehicles_so_far: int,
    ) -> np.ndarray:
        image = frame.image.copy()
        scale = max(0.4, min(1.0, frame.width / 1600))
        thickness = 1 if frame.width < 1000 else 2
        for xyxy, track_id, class_id in zip(tracked.xyxy, tracked.tracker_id, tracked.class_id):
            color = _color(track_id)
            x1, y1, x2, y2 = (int(round(v)) for v in xyxy)
            cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness + 1)
            track = tracks.get(int(track_id))
            # the track's majority class, as its record will say (one frame's box may say truck)
            shown_class = track.class_id if track is not None and track.class_votes else int(class_id)
            text = f"#{track_id} {self.class_names.get(int(shown_class), str(shown_class))}"
            brand_state = track.brand if track is not None else None
            if brand_state is not None:
                decision = brand_state.decision()
                if decision.brand != UNKNOWN_BRAND:
                    text += f" {decision.brand} {decision.confidence:.2f}"
            _label(image, text, x1, y1, color, scale, thickness)
            # The badge box only while fresh: the vehicle moves on between readings.
            fresh = brand_state is not None and frame.index - brand_state.last_badge_frame <= BADGE_BOX_FRAMES
            badge = brand_state.last_badge_xyxy if fresh else None
            if badge is not None:
                bx1, by1, bx2, by2 = (int(round(v)) for v in badge)
                cv2.rectangle(image, (bx1, by1), (bx2, by2), (0, 255, 255), thickness)
        if self.draw_clock:
            seconds = frame.timestamp_s
            clock = f"t={int(seconds // 60):02d}:{seconds % 60:06.3f}  frame {frame.index}  vehicles {vehicles_so_far}"
            _label(image, clock, 4, frame.height - 4, (40, 40, 40), scale, thickness)
        return image
