"""Licence-plate shape test for logo-detector boxes.

The badge detector sometimes scores a licence plate as a "logo" (a bright rectangle with
dark glyphs just under the badge), on close-ups even above the badge itself. A plate read by
the brand classifier is at best a wasted reading and at worst a vote for a wrong brand, so the
brand stage never reads a box that looks like a plate (see BadgeChooser).

What makes a plate, measured on the box's pixels: a wide rectangle (about 2:1 to 6:1), mostly
one light background (white or yellow) and a row of 3 or more separate dark glyphs of about
the same height, each a good part of the plate's height. Badges do not have that: emblems are
one connected shape (Hyundai, VW, Toyota), wide badges (Ford's oval, Kia's lettering, the Mini
wings) are chrome on the body colour or white on a dark field.
"""

from __future__ import annotations

import numpy as np

PLATE_MIN_ASPECT = 1.8
PLATE_MAX_ASPECT = 6.5
_NORM_HEIGHT = 40  # the box is resized to this height before looking at glyphs


def plate_aspect(xyxy: np.ndarray) -> np.ndarray:
    """Width / height of each (N, 4) box."""
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    return (xyxy[:, 2] - xyxy[:, 0]) / np.maximum(xyxy[:, 3] - xyxy[:, 1], 1e-6)


def looks_like_plate(patch: np.ndarray) -> bool:
    """True if a BGR box patch is a plate-like wide light rectangle with a row of dark glyphs."""
    import cv2

    if patch is None or patch.ndim != 3 or min(patch.shape[:2]) < 6:
        return False
    h, w = patch.shape[:2]
    aspect = w / h
    if not (PLATE_MIN_ASPECT <= aspect <= PLATE_MAX_ASPECT):
        return False
    gray = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    gray = cv2.resize(gray, (max(8, int(round(_NORM_HEIGHT * aspect))), _NORM_HEIGHT), interpolation=cv2.INTER_AREA)
    _, light = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = light > 0
    if light.mean() < 0.45:  # a plate is mostly its light background
        return False
    if float(gray[light].mean()) - float(gray[~light].mean()) < 40:  # glyphs contrast with it
        return False
    dark = (~light).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    H, W = gray.shape
    glyphs = []
    for i in range(1, n):
        x, y, cw, ch, area = stats[i]
        if 0.3 * H <= ch <= 0.95 * H and cw <= 0.3 * W and area >= 0.02 * H * H and x > 0 and x + cw < W:
            glyphs.append((x, y, cw, ch))
    if len(glyphs) < 3:
        return False
    heights = np.array([g[3] for g in glyphs], dtype=np.float32)
    centres = np.array([g[1] + g[3] / 2 for g in glyphs], dtype=np.float32)
    # a row of glyphs of one size: heights and vertical centres agree
    same = (np.abs(heights - np.median(heights)) <= 0.25 * np.median(heights)) & (
        np.abs(centres - np.median(centres)) <= 0.2 * H
    )
    return int(same.sum()) >= 3
