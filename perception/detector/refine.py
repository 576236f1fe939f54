"""Geometric box refinement: fit each Car detection's heading, footprint and height to its own LiDAR points.

The network places a box near every car it finds but, trained on simulated cars, does not read a real car's
heading or ground height from its points (README, "why real cars miss IoU 0.7"). This step does what a classical
LiDAR pipeline does with a cluster: the ground height from the points around the box, the heading by L-shape
fitting of the points above it (Zhang et al., "Efficient L-Shape Fitting for Vehicle Detection Using Laser
Scanners", IV 2017: the search-based closeness criterion), and the box of the network's size slid so that its
faces toward the sensor lie on the visible faces. A box with too few points keeps the network's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.detector.config import ModelConfig
from perception.detector.voxelize import Pillars
from perception.frame import Box3D, Detection


@dataclass(frozen=True)
class RefineConfig:
    """Parameters of :func:`refine_detections` (chosen on ``sim:val``)."""

    classes: tuple[str, ...] = ("Car",)
    min_score: float = 0.1  # boxes the network scores lower are left as they are (background, mostly; saves time)
    margin_m: float = 0.4  # the footprint searched for the object's points, beyond the network's box
    ring_m: float = 1.5  # ground: points within this distance outside the footprint
    above_ground_m: float = 0.2  # object points: higher than this above the ground
    min_points: int = 15  # fewer object points: the box is left as the network made it
    max_turn_deg: float = 30.0  # heading searched within this of the network's (the criterion repeats every 90°)
    step_deg: float = 1.0
    min_distance_m: float = 0.01  # d0 of the closeness criterion
    max_fit_points: int = 300  # the heading search uses at most this many of the object's points


def _ground_height(z: np.ndarray, ring: np.ndarray, box: Box3D) -> float | None:
    """Median height of the lowest returns in the ring around the box's footprint, None when there are none."""
    bottom = box.center[2] - box.size[2] / 2
    zr = z[ring]
    zr = zr[np.abs(zr - bottom) < 0.6]
    if len(zr) < 5:
        return None
    return float(np.median(zr[zr <= np.quantile(zr, 0.3)]))


def _closeness(xy: np.ndarray, angles: np.ndarray, d0: float) -> np.ndarray:
    """Zhang et al.'s closeness criterion of the rectangle at each heading (higher: the points hug its edges)."""
    c1 = np.cos(angles)[:, None] * xy[:, 0] + np.sin(angles)[:, None] * xy[:, 1]  # (T, N)
    c2 = -np.sin(angles)[:, None] * xy[:, 0] + np.cos(angles)[:, None] * xy[:, 1]
    d1 = np.minimum(c1.max(axis=1, keepdims=True) - c1, c1 - c1.min(axis=1, keepdims=True))
    d2 = np.minimum(c2.max(axis=1, keepdims=True) - c2, c2 - c2.min(axis=1, keepdims=True))
    return (1.0 / np.maximum(np.minimum(d1, d2), d0)).sum(axis=1)


def _closeness_heading(xy: np.ndarray, yaw0: float, cfg: RefineConfig) -> float:
    """The heading within ``max_turn_deg`` of ``yaw0`` whose rectangle hugs the points best: a coarse search in
    4 ``step_deg`` steps, then ``step_deg`` around its best (on at most ``max_fit_points`` points)."""
    if len(xy) > cfg.max_fit_points:
        xy = xy[:: int(np.ceil(len(xy) / cfg.max_fit_points))]
    xy = xy - xy.mean(axis=0)  # the criterion is translation invariant; centred values keep float error small
    coarse = yaw0 + np.deg2rad(np.arange(-cfg.max_turn_deg, cfg.max_turn_deg + 1e-9, 4 * cfg.step_deg))
    best = coarse[int(np.argmax(_closeness(xy, coarse, cfg.min_distance_m)))]
    fine = best + np.deg2rad(np.arange(-3, 4) * cfg.step_deg)
    return float(fine[int(np.argmax(_closeness(xy, fine, cfg.min_distance_m)))])


def _slide(lo: float, hi: float, size: float) -> float:
    """Centre along one axis (through the sensor at 0) of a box ``size`` long whose face toward the sensor lies on
    the visible extent ``[lo, hi]``."""
    if hi - lo >= size:
        return (lo + hi) / 2
    return lo + size / 2 if (lo + hi) / 2 > 0 else hi - size / 2


def refine_box(points: np.ndarray, box: Box3D, cfg: RefineConfig | None = None) -> Box3D | None:
    """``box`` fitted to ``points`` (N, 3+, LiDAR frame, sensor at the origin); None when too few points."""
    cfg = cfg or RefineConfig()
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    dx, dy = points[:, 0] - box.center[0], points[:, 1] - box.center[1]
    u, v = np.abs(c * dx + s * dy), np.abs(-s * dx + c * dy)  # |coordinates| in the box's frame
    half_l, half_w = box.size[0] / 2 + cfg.margin_m, box.size[1] / 2 + cfg.margin_m
    inside = (u <= half_l) & (v <= half_w)
    ring = ~inside & (u <= half_l + cfg.ring_m) & (v <= half_w + cfg.ring_m)
    z = points[:, 2]
    ground = _ground_height(z, ring, box)
    if ground is None:
        return None
    top = box.center[2] + box.size[2] / 2 + 0.3
    obj = points[inside & (z > ground + cfg.above_ground_m) & (z < top), :2]
    if len(obj) < cfg.min_points:
        return None
    yaw = _closeness_heading(obj.astype(np.float64), box.yaw, cfg)
    e1, e2 = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    p1, p2 = obj @ e1, obj @ e2
    a = _slide(p1.min(), p1.max(), box.size[0])
    b = _slide(p2.min(), p2.max(), box.size[1])
    xy = a * e1 + b * e2
    centre = np.array([xy[0], xy[1], ground + box.size[2] / 2])
    return Box3D(box.label, centre, box.size.copy(), yaw, num_points=len(obj), bbox2d=box.bbox2d)


class PillarIndex:
    """The network's pillars as a spatial index of the points they hold (at most ``max_points_per_pillar`` each):
    the points near a box without another pass over the whole cloud."""

    def __init__(self, pillars: Pillars, cfg: ModelConfig) -> None:
        nx, ny = cfg.grid_size
        self.x0, self.y0 = cfg.point_range[0], cfg.point_range[1]
        self.vx, self.vy = cfg.pillar_size
        self.grid = np.full((ny, nx), -1, dtype=np.int64)
        self.grid[pillars.coords[:, 0], pillars.coords[:, 1]] = np.arange(len(pillars.coords))
        self.xyz = pillars.features[:, :, :3]
        self.valid = np.arange(pillars.features.shape[1])[None, :] < pillars.num_points[:, None]

    def near(self, x: float, y: float, radius: float) -> np.ndarray:
        """(N, 3) float64 points of the pillars within the square of half-side ``radius`` around ``(x, y)``."""
        ix0, ix1 = (int(np.floor((v - self.x0) / self.vx)) for v in (x - radius, x + radius))
        iy0, iy1 = (int(np.floor((v - self.y0) / self.vy)) for v in (y - radius, y + radius))
        ny, nx = self.grid.shape
        ix0, iy0, ix1, iy1 = max(ix0, 0), max(iy0, 0), min(ix1, nx - 1), min(iy1, ny - 1)
        if ix0 > ix1 or iy0 > iy1:
            return np.zeros((0, 3))
        idx = self.grid[iy0:iy1 + 1, ix0:ix1 + 1].ravel()
        idx = idx[idx >= 0]
        return self.xyz[idx][self.valid[idx]].astype(np.float64)


def refine_detections(detections: list[Detection], index: PillarIndex, cfg: RefineConfig | None = None) -> int:
    """Refine the boxes of ``detections`` of ``cfg.classes`` in place from the points of ``index``; returns how
    many were changed."""
    cfg = cfg or RefineConfig()
    changed = 0
    for det in detections:
        if det.box.label not in cfg.classes or det.score < cfg.min_score:
            continue
        box = det.box
        reach = float(np.hypot(box.size[0], box.size[1])) / 2 + cfg.margin_m + cfg.ring_m
        refined = refine_box(index.near(box.center[0], box.center[1], reach), box, cfg)
        if refined is not None:
            det.box = refined
            changed += 1
    return changed
