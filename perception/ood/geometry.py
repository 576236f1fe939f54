"""Point-geometry descriptor of a detected box: does the LiDAR evidence inside it look like its class?

The detector's query features describe what the *network* saw; an animal that the network takes for a
pedestrian can sit among the pedestrians in that space (measured: the best feature score reached AUROC 0.86 on
animals). The points inside the box tell another story — a deer's points stop at 1.3 m and spread along its
body, a pedestrian's reach 1.7 m and stay in a narrow column. The descriptor is computed by the detector for
every detection (``Detection.geometry``) and scored by the OOD monitor against per-class Gaussians fitted on
training detections (:mod:`perception.ood.stats`).

Descriptor (``GEOMETRY_DIM`` = 11 values; points within the box grown by :data:`MARGIN_M` sideways and 0.3 m
upwards, ignoring the lowest :data:`GROUND_CLEARANCE_M` of the box, where the ground is):

0. ``log(1 + n) + 2 log(range)``: point count, range-normalised (a LiDAR's point density falls as 1/range²)
1-3. 10 / 50 / 90 % quantiles of the point heights above the box bottom, over the box height
4. highest point over the box height
5-6. standard deviation of the points along the box length / width, over the length / width
7-8. extent (max - min) of the points along the length / width, over the length / width
9-10. mean and standard deviation of the intensity

With fewer than 3 points only value 0 is set (the rest are 0).
"""

from __future__ import annotations

import numpy as np

from perception.errors import DataError

#: Length of a descriptor.
GEOMETRY_DIM = 11
#: Sideways growth of the box when collecting its points (m): boxes are a little tight on the evidence.
MARGIN_M = 0.2
#: Points this close to the box bottom are taken as ground, not object (m).
GROUND_CLEARANCE_M = 0.1
#: Cell size of the grid that finds candidate points quickly (m).
_CELL_M = 2.0


def _candidates(points: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Indices of the points in the grid cells each box's circumscribed square touches."""
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + MARGIN_M
    lo = (boxes[:, :2] - radius[:, None]).min(axis=0)
    hi = (boxes[:, :2] + radius[:, None]).max(axis=0)
    z_lo = float((boxes[:, 2] - boxes[:, 5] / 2).min()) + GROUND_CLEARANCE_M  # drops the ground, most points
    z_hi = float((boxes[:, 2] + boxes[:, 5] / 2).max()) + 0.3
    z = points[:, 2]
    near = np.flatnonzero((z > z_lo) & (z < z_hi))
    x, y = points[near, 0], points[near, 1]
    near = near[(x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])]
    shape = np.maximum(np.ceil((hi - lo) / _CELL_M).astype(np.int64), 1)
    cell = np.minimum(((points[near, :2] - lo) / _CELL_M).astype(np.int64), shape - 1)
    key = cell[:, 0] * shape[1] + cell[:, 1]
    order = np.argsort(key, kind="stable")
    starts = np.searchsorted(key[order], np.arange(shape[0] * shape[1] + 1))
    out = []
    for b, r in zip(boxes, radius):
        i0, j0 = np.maximum(((b[:2] - r - lo) / _CELL_M).astype(np.int64), 0)
        i1, j1 = np.minimum(((b[:2] + r - lo) / _CELL_M).astype(np.int64), shape - 1)
        rows = [order[starts[i * shape[1] + j0]:starts[i * shape[1] + j1 + 1]] for i in range(i0, i1 + 1)]
        out.append(near[np.concatenate(rows)] if rows else np.zeros(0, np.int64))
    return out


def box_point_descriptors(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, GEOMETRY_DIM) descriptors of (M, 7) boxes ``x y z l w h yaw`` (centre z) in (N, >=4) points
    ``x y z intensity``, both in the LiDAR frame."""
    pts = np.asarray(points)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise DataError(f"expected (N, >=4) points, got shape {pts.shape}", "box_point_descriptors.points")
    out = np.zeros((len(boxes), GEOMETRY_DIM), np.float32)
    if len(boxes) == 0:
        return out
    # NaN coordinates fail every comparison, so non-finite points never become candidates
    cands = _candidates(pts, boxes) if len(pts) else [np.zeros(0, np.int64)] * len(boxes)
    box_of = np.repeat(np.arange(len(boxes)), [len(c) for c in cands])
    sub = pts[np.concatenate(cands), :4].astype(np.float64)
    b = boxes[box_of]
    size = np.maximum(b[:, 3:6], 1e-3)
    cos, sin = np.cos(b[:, 6]), np.sin(b[:, 6])
    rel = sub[:, :3] - b[:, :3]
    x = cos * rel[:, 0] + sin * rel[:, 1]
    y = -sin * rel[:, 0] + cos * rel[:, 1]
    z = rel[:, 2] + size[:, 2] / 2
    inside = ((np.abs(x) < size[:, 0] / 2 + MARGIN_M) & (np.abs(y) < size[:, 1] / 2 + MARGIN_M)
              & (z > GROUND_CLEARANCE_M) & (z < size[:, 2] + 0.3) & np.isfinite(sub[:, 3]))
    box_of, x, y, z, it = box_of[inside], x[inside], y[inside], z[inside], sub[inside, 3]
    m = len(boxes)
    n = np.bincount(box_of, minlength=m)
    out[:, 0] = np.log1p(n) + 2.0 * np.log(np.maximum(np.hypot(boxes[:, 0], boxes[:, 1]), 1.0))
    ok = n >= 3
    if not ok.any():
        return out
    l, w, h = np.maximum(boxes[:, 3:6], 1e-3).T
    order = np.lexsort((z, box_of))  # by box, then height
    zs = z[order]
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    last = len(zs) - 1  # boxes without points index a clamped position; their rows are masked by `ok`
    for j, q in enumerate((0.1, 0.5, 0.9)):  # linear interpolation, as np.percentile
        pos = q * np.maximum(n - 1, 0)
        lo_i = np.floor(pos).astype(np.int64)
        lo_v = zs[np.minimum(start + lo_i, last)]
        hi_v = zs[np.minimum(start + np.minimum(lo_i + 1, np.maximum(n - 1, 0)), last)]
        out[ok, 1 + j] = ((lo_v + (pos - lo_i) * (hi_v - lo_v)) / h)[ok]
    out[ok, 4] = (zs[np.minimum(start + n - 1, last)] / h)[ok]

    def mean_std(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = np.maximum(n, 1)
        mean = np.bincount(box_of, v, m) / cnt
        return mean, np.sqrt(np.maximum(np.bincount(box_of, v * v, m) / cnt - mean**2, 0.0))

    def extent(v: np.ndarray) -> np.ndarray:
        hi_v = np.full(m, -np.inf)
        lo_v = np.full(m, np.inf)
        np.maximum.at(hi_v, box_of, v)
        np.minimum.at(lo_v, box_of, v)
        return hi_v - lo_v

    out[ok, 5] = (mean_std(x)[1] / l)[ok]
    out[ok, 6] = (mean_std(y)[1] / w)[ok]
    out[ok, 7] = (extent(x) / l)[ok]
    out[ok, 8] = (extent(y) / w)[ok]
    it_mean, it_std = mean_std(it)
    out[ok, 9], out[ok, 10] = it_mean[ok], it_std[ok]
    return out
