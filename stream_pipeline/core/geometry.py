"""Box geometry shared by the runtime and the evaluators."""

from __future__ import annotations

import numpy as np


def box_iou(a, b) -> np.ndarray:
    """IoU matrix between (N,4) and (M,4) xyxy arrays."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def suppress_nested(xyxy: np.ndarray, scores: np.ndarray, cover: float,
                    min_area_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes sorted best first, without the ones nested in a better box: of a pair, when the
    smaller lies `cover` (share of its area) inside the other and is at least `min_area_ratio`
    of its area, the lower-scored box is the same object boxed twice."""
    order = np.argsort(-scores, kind="stable")
    xyxy, scores = xyxy[order], scores[order]
    area = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    wh = np.clip(np.minimum(xyxy[:, None, 2:], xyxy[None, :, 2:]) - np.maximum(xyxy[:, None, :2], xyxy[None, :, :2]),
                 0, None)
    small, big = np.minimum(area[:, None], area[None, :]), np.maximum(area[:, None], area[None, :])
    nested = (small > 0) & (wh[..., 0] * wh[..., 1] >= cover * small) & (small >= min_area_ratio * big)
    keep = np.ones(len(xyxy), dtype=bool)
    for i in range(len(xyxy)):  # best first: a kept box removes the worse boxes nested with it
        if keep[i]:
            keep[i + 1:] &= ~nested[i, i + 1:]
    return xyxy[keep], scores[keep]
