"""The few ultralytics helpers the vendored ByteTrack needs, without importing ultralytics
(whose package import pulls in torch: ~0.5 GB of memory and seconds of start-up)."""

from __future__ import annotations

import logging

import numpy as np

LOGGER = logging.getLogger("stream_pipeline.tracking.bytetrack")


def xywh2ltwh(x: np.ndarray) -> np.ndarray:
    y = np.copy(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    return y


def bbox_ioa(box1: np.ndarray, box2: np.ndarray, iou: bool = False, eps: float = 1e-7) -> np.ndarray:
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.T
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.T
    inter_area = (np.minimum(b1_x2[:, None], b2_x2) - np.maximum(b1_x1[:, None], b2_x1)).clip(0) * (
        np.minimum(b1_y2[:, None], b2_y2) - np.maximum(b1_y1[:, None], b2_y1)
    ).clip(0)
    area = (b2_x2 - b2_x1) * (b2_y2 - b2_y1)
    if iou:
        box1_area = (b1_x2 - b1_x1) * (b1_y2 - b1_y1)
        area = area + box1_area[:, None] - inter_area
    return inter_area / (area + eps)


def batch_probiou(*args, **kwargs):
    raise NotImplementedError("oriented boxes are not tracked here")


def check_requirements(requirement: str) -> None:
    raise ImportError(f"{requirement} is needed for tracking (pip install '{requirement}')")


def linear_sum_assignment(cost_matrix: np.ndarray):
    from scipy.optimize import linear_sum_assignment as solve

    return solve(cost_matrix)
