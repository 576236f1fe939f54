"""Pre-processing: clean a point cloud and group it into pillars (vectorised numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.detector.config import ModelConfig

#: Per-point pillar features: x y z intensity, offsets to the pillar's point mean (3), offsets to its centre (2).
PILLAR_FEATURES = 9


@dataclass
class Pillars:
    """Pillar tensor inputs of the network."""

    features: np.ndarray  # (P, M, 9) float32, zero-padded
    coords: np.ndarray  # (P, 2) int64: (iy, ix) on the pillar grid
    num_points: np.ndarray  # (P,) int64 points kept per pillar
    dropped_nonfinite: int = 0  # NaN/inf points removed
    dropped_out_of_range: int = 0  # points outside point_range
    dropped_overflow: int = 0  # points beyond max_points_per_pillar / max_pillars


def clean_points(points: np.ndarray, point_range: list[float]) -> tuple[np.ndarray, int, int]:
    """Drop non-finite points and points outside ``point_range``; returns (points, n_nonfinite, n_out)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 4)
    # One reduction finds every row holding a NaN or inf (their sum is not finite); comparisons with NaN
    # are False, so the range test below drops those rows too.
    with np.errstate(invalid="ignore", over="ignore"):
        n_nonfinite = len(points) - int(np.isfinite(points.sum(axis=1)).sum())
        r = point_range
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        inside = (x >= r[0]) & (x < r[3]) & (y >= r[1]) & (y < r[4]) & (z >= r[2]) & (z < r[5])
        if n_nonfinite:
            inside &= np.isfinite(points[:, 3])
    kept = points[inside]
    return kept, n_nonfinite, len(points) - n_nonfinite - len(kept)


def voxelize(points: np.ndarray, cfg: ModelConfig) -> Pillars:
    """Group a cloud into pillars of ``cfg.pillar_size`` with at most ``max_points_per_pillar`` points each."""
    pts, n_bad, n_out = clean_points(points, cfg.point_range)
    nx, ny = cfg.grid_size
    m = cfg.max_points_per_pillar
    if len(pts) == 0:
        return Pillars(np.zeros((0, m, PILLAR_FEATURES), np.float32), np.zeros((0, 2), np.int64),
                       np.zeros((0,), np.int64), n_bad, n_out, 0)
    x0, y0 = cfg.point_range[0], cfg.point_range[1]
    vx, vy = cfg.pillar_size
    ix = np.clip(((pts[:, 0] - x0) / vx).astype(np.int64), 0, nx - 1)
    iy = np.clip(((pts[:, 1] - y0) / vy).astype(np.int64), 0, ny - 1)
    pid = iy * nx + ix
    order = np.argsort(pid, kind="stable")
    pid, pts = pid[order], pts[order]
    # Pillars of the sorted ids (np.unique would sort them again).
    first = np.flatnonzero(np.concatenate([[True], pid[1:] != pid[:-1]]))
    uniq, start = pid[first], first
    counts = np.diff(np.append(first, len(pid)))
    group = np.repeat(np.arange(len(uniq)), counts)
    slot = np.arange(len(pid)) - start[group]
    keep = slot < m
    overflow = int((~keep).sum())
    if len(uniq) > cfg.max_pillars:  # keep the densest pillars
        chosen = np.sort(np.argsort(-counts, kind="stable")[: cfg.max_pillars])
        remap = np.full(len(uniq), -1)
        remap[chosen] = np.arange(len(chosen))
        overflow += int(counts[remap < 0].clip(max=m).sum())
        keep &= remap[group] >= 0
        uniq, counts, group = uniq[chosen], counts[chosen], remap[group]
    pts, group, slot = pts[keep], group[keep], slot[keep]
    n_kept = np.bincount(group, minlength=len(uniq))
    mean = np.stack([np.bincount(group, weights=pts[:, k], minlength=len(uniq)) for k in range(3)], axis=1)
    mean /= np.maximum(n_kept, 1)[:, None]
    cy, cx = np.divmod(uniq, nx)
    centre_x = x0 + (cx + 0.5) * vx
    centre_y = y0 + (cy + 0.5) * vy
    f = np.empty((len(pts), PILLAR_FEATURES), np.float32)
    f[:, :4] = pts
    f[:, 4:7] = pts[:, :3] - mean[group]
    f[:, 7] = pts[:, 0] - centre_x[group]
    f[:, 8] = pts[:, 1] - centre_y[group]
    feats = np.zeros((len(uniq), m, PILLAR_FEATURES), np.float32)
    feats[group, slot] = f
    coords = np.stack([cy, cx], axis=1).astype(np.int64)
    return Pillars(feats, coords, n_kept.astype(np.int64), n_bad, n_out, overflow)
