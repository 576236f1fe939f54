"""Object-level augmentation against simulator priors: each ground-truth object is rotated about its own
centre with its points (so the heading must be read from the points, not from the road), and some of its points
are dropped (real cars at range return far fewer points than simulated ones: dark paint, glass, ray drop).
"""

from __future__ import annotations

import math

import numpy as np

from perception.frame import points_in_boxes

#: Margin (m) around a box whose points move with it (mirrors, ground-touching returns).
_MARGIN = 0.15


def _bev_radius(box: np.ndarray) -> float:
    return 0.5 * math.hypot(float(box[3]), float(box[4])) + _MARGIN


def object_augment(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, rotation: float,
                   point_drop: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate each box and its points by U(-rotation, rotation) about its centre when that keeps it clear of the
    other boxes, and drop a share U(0, point_drop) of its points on half of the objects. Returns new arrays."""
    if len(boxes) == 0 or (rotation <= 0 and point_drop <= 0):
        return points, boxes
    pts, boxes = points.copy(), boxes.copy()
    grown = boxes.astype(np.float64)
    grown[:, 3:6] += 2 * _MARGIN
    inside = points_in_boxes(pts, grown)
    keep = np.ones(len(pts), bool)
    owned = np.zeros(len(pts), bool)
    for i in rng.permutation(len(boxes)):
        mask = inside[i] & ~owned
        owned |= inside[i]
        if rotation > 0:
            theta = float(rng.uniform(-rotation, rotation))
            if _clear_after_rotation(boxes, i):
                c, s = math.cos(theta), math.sin(theta)
                d = pts[mask, :2] - boxes[i, :2]
                pts[mask, 0] = boxes[i, 0] + c * d[:, 0] - s * d[:, 1]
                pts[mask, 1] = boxes[i, 1] + s * d[:, 0] + c * d[:, 1]
                boxes[i, 6] = (boxes[i, 6] + theta + math.pi) % (2 * math.pi) - math.pi
        if point_drop > 0 and rng.random() < 0.5:
            idx = np.flatnonzero(mask)
            n_drop = int(len(idx) * rng.uniform(0.0, point_drop))
            if n_drop:
                keep[rng.choice(idx, n_drop, replace=False)] = False
    return pts[keep], boxes


def _clear_after_rotation(boxes: np.ndarray, i: int) -> bool:
    """True when box ``i`` can turn freely: its BEV circle meets no other box's circle."""
    r = _bev_radius(boxes[i])
    for j in range(len(boxes)):
        if j != i and math.hypot(*(boxes[j, :2] - boxes[i, :2])) < r + _bev_radius(boxes[j]):
            return False
    return True
