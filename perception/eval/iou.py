"""Rotated box overlap: exact BEV / 3D IoU of ``[x, y, z, l, w, h, yaw]`` boxes, vectorised over pairs.

The BEV intersection of two rectangles is the convex polygon whose vertices are the corners of
each rectangle lying inside the other plus the crossings of their edges; its area is the shoelace
sum over those points sorted by angle about their mean. This is exact (the same polygon
Sutherland-Hodgman clipping produces) and needs no per-pair Python loop. Pairs whose
circumscribed circles do not touch are skipped.
"""

from __future__ import annotations

import numpy as np

from perception.errors import DataError

#: Slack (metres) when testing whether a corner lies on or inside the other box.
_INSIDE_TOL = 1e-9


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    """Validate an (N, 7) box array (an empty sequence is zero boxes)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 7), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise DataError(f"expected an (N, 7) [x, y, z, l, w, h, yaw] array, got shape {arr.shape}", where=name)
    return arr


def _paired_bev_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BEV intersection area of aligned pairs: (P, 7) and (P, 7) boxes -> (P,).

    Works in each pair's ``b`` frame, where ``b`` is the axis-aligned rectangle ``|x| <= bl, |y| <= bw``.
    """
    p = len(a)
    if p == 0:
        return np.zeros(0, dtype=np.float64)
    bl, bw = b[:, 3:4] / 2, b[:, 4:5] / 2  # (P, 1) half sizes of b
    al, aw = a[:, 3:4] / 2, a[:, 4:5] / 2
    cb, sb = np.cos(b[:, 6:7]), np.sin(b[:, 6:7])
    dx, dy = a[:, 0:1] - b[:, 0:1], a[:, 1:2] - b[:, 1:2]
    ox, oy = cb * dx + sb * dy, -sb * dx + cb * dy  # centre of a in b's frame
    rel = a[:, 6:7] - b[:, 6:7]
    cr, sr = np.cos(rel), np.sin(rel)

    # Corners of a (counter-clockwise) in b's frame, and corners of b in a's frame.
    ux = np.concatenate([al, -al, -al, al], axis=1)
    uy = np.concatenate([aw, aw, -aw, -aw], axis=1)
    ax, ay = cr * ux - sr * uy + ox, sr * ux + cr * uy + oy  # (P, 4)
    vx = np.concatenate([bl, -bl, -bl, bl], axis=1)
    vy = np.concatenate([bw, bw, -bw, -bw], axis=1)
    bx_in_a = cr * (vx - ox) + sr * (vy - oy)
    by_in_a = -sr * (vx - ox) + cr * (vy - oy)
    a_in_b = (np.abs(ax) <= bl + _INSIDE_TOL) & (np.abs(ay) <= bw + _INSIDE_TOL)
    b_in_a = (np.abs(bx_in_a) <= al + _INSIDE_TOL) & (np.abs(by_in_a) <= aw + _INSIDE_TOL)

    # Crossings of each edge of a (p + t e, 0 <= t <= 1) with the lines x = +-bl and y = +-bw: (P, 4, 2).
    # An edge parallel to a line gets a huge or infinite t; t is clamped so the arrays stay finite.
    ex, ey = np.roll(ax, -1, axis=1) - ax, np.roll(ay, -1, axis=1) - ay  # (P, 4)
    sign = np.array([1.0, -1.0])
    tx = (sign * bl[..., None] - ax[..., None]) / (ex + (ex == 0.0))[..., None]
    ty = (sign * bw[..., None] - ay[..., None]) / (ey + (ey == 0.0))[..., None]
    ok_x = (ex != 0.0)[..., None] & (tx >= 0.0) & (tx <= 1.0)
    ok_y = (ey != 0.0)[..., None] & (ty >= 0.0) & (ty <= 1.0)
    tx, ty = np.minimum(np.maximum(tx, -1.0), 2.0), np.minimum(np.maximum(ty, -1.0), 2.0)
    yx = ay[..., None] + tx * ey[..., None]
    xy = ax[..., None] + ty * ex[..., None]
    ok_x &= np.abs(yx) <= bw[..., None] + _INSIDE_TOL
    ok_y &= np.abs(xy) <= bl[..., None] + _INSIDE_TOL

    # Candidate vertices (P, 24) in b's frame: corners inside the other box, then edge crossings.
    px = np.concatenate([ax, vx, np.tile(sign * bl, 4), xy.reshape(p, 8)], axis=1)
    py = np.concatenate([ay, vy, yx.reshape(p, 8), np.tile(sign * bw, 4)], axis=1)
    valid = np.concatenate([a_in_b, b_in_a, ok_x.reshape(p, 8), ok_y.reshape(p, 8)], axis=1)
    count = valid.sum(axis=1)

    # Sort the valid vertices by angle about their mean (invalid ones last), then sum the shoelace
    # terms over the first ``count`` vertices, closing the polygon back to the first one.
    n = np.maximum(count, 1)[:, None]
    px = px - (px * valid).sum(axis=1, keepdims=True) / n
    py = py - (py * valid).sum(axis=1, keepdims=True) / n
    order = np.argsort(np.arctan2(py, px) + 10.0 * ~valid, axis=1)
    flat = (order + 24 * np.arange(p)[:, None]).ravel()
    px, py = px.ravel()[flat].reshape(p, 24), py.ravel()[flat].reshape(p, 24)
    terms = px[:, :-1] * py[:, 1:] - py[:, :-1] * px[:, 1:]  # (P, 23): vertex i to i + 1
    inner = (terms * (np.arange(23) < (count - 1)[:, None])).sum(axis=1)
    last = np.maximum(count - 1, 0)
    lx, ly = px[np.arange(p), last], py[np.arange(p), last]
    area = 0.5 * np.abs(inner + lx * py[:, 0] - ly * px[:, 0])
    return np.where(count >= 3, area, 0.0)


def _bev_intersection(a: np.ndarray, b: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(N, M) BEV intersection areas, computed only where ``candidates`` (N, M) is true."""
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    ia, ib = np.nonzero(candidates)
    out[ia, ib] = _paired_bev_intersection(a[ia], b[ib])
    return out


def _circles_touch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) mask of pairs whose BEV circumscribed circles overlap (a necessary condition for overlap)."""
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    return bev_distance(a, b) <= ra[:, None] + rb[None, :] + _INSIDE_TOL


def bev_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centre distance in the x-y plane between (N, 7) and (M, 7) boxes, (N, M) metres."""
    a, b = _as_boxes(a, "bev_distance: a"), _as_boxes(b, "bev_distance: b")
    return np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])


def bev_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bird's-eye-view IoU of rotated (N, 7) and (M, 7) ``[x, y, z, l, w, h, yaw]`` boxes, (N, M) in [0, 1]."""
    a, b = _as_boxes(a, "bev_iou: a"), _as_boxes(b, "bev_iou: b")
    inter = _bev_intersection(a, b, _circles_touch(a, b))
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def iou_3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3D IoU of rotated (N, 7) and (M, 7) boxes, (N, M): BEV intersection x z-overlap / union volume."""
    a, b = _as_boxes(a, "iou_3d: a"), _as_boxes(b, "iou_3d: b")
    top = np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    bottom = np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    z_overlap = np.clip(top - bottom, 0.0, None)
    inter = _bev_intersection(a, b, _circles_touch(a, b) & (z_overlap > 0.0)) * z_overlap
    union = np.prod(a[:, 3:6], axis=1)[:, None] + np.prod(b[:, 3:6], axis=1)[None, :] - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)
