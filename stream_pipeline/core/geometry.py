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
    kept: list[int] = []
    for i in range(len(xyxy)):
        if kept:
            k = np.array(kept)
            iw = np.clip(np.minimum(xyxy[i, 2], xyxy[k, 2]) - np.maximum(xyxy[i, 0], xyxy[k, 0]), 0, None)
            ih = np.clip(np.minimum(xyxy[i, 3], xyxy[k, 3]) - np.maximum(xyxy[i, 1], xyxy[k, 1]), 0, None)
            small, big = np.minimum(area[i], area[k]), np.maximum(area[i], area[k])
            nested = (small > 0) & (iw * ih >= cover * small) & (small >= min_area_ratio * big)
            if nested.any():
                continue
        kept.append(i)
    return xyxy[kept], scores[kept]
