"""LiDAR-camera extrinsic consistency: does the calibration still put LiDAR edges on image edges?

An online check in the spirit of Levinson & Thrun, "Automatic Online Calibration of Cameras and Lasers"
(RSS 2013): points on the near side of a LiDAR depth discontinuity (an object's silhouette) project onto
image edges when the extrinsic is right. The check scores that alignment for the calibrated
``lidar_to_camera`` and for small rotations of it; when a rotated extrinsic explains the image markedly better
than the calibrated one, the calibration has drifted (a knocked camera, a loose mount, a wrong file).

Pure numpy + scipy, no ROS: :func:`extrinsic_consistency` grades one (cloud, image, rig) triple; the
``sensor_health`` node runs it on synchronised pairs and publishes it as the ``calibration`` status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from scipy import ndimage

from perception.rig import Rig, rpy_to_matrix
from perception.robustness.lidar import beam_index

#: Rotation offsets tried around the calibrated extrinsic (degrees, about the camera's x, y and z axes).
DEFAULT_OFFSETS_DEG: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
ZERO = (0.0, 0.0, 0.0)  # the calibrated extrinsic


@dataclass(frozen=True)
class ExtrinsicCheck:
    """How well the calibrated extrinsic aligns LiDAR depth edges with image edges."""

    score: float  # alignment of the calibrated extrinsic, 0..1 (mean edge proximity of the edge points)
    best_score: float  # the best alignment among the rotated extrinsics tried
    best_offset_deg: tuple[float, float, float]  # rotation (about camera x, y, z) that scored best
    gain: float  # best_score / score - 1: how much better the best rotation explains the image (0: calibrated best)
    edge_points: int  # LiDAR edge points in the image used
    reason: str = ""  # why the check could not be made (empty when it was)
    scores: dict[tuple[float, float, float], float] = field(default_factory=dict, repr=False)  # per offset

    @property
    def valid(self) -> bool:
        """Whether the frame had enough edges to judge the extrinsic."""
        return not self.reason

    @classmethod
    def not_judged(cls, reason: str) -> ExtrinsicCheck:
        """A check that could not be made (no rig, a mismatched image, nothing checked yet), saying why."""
        return cls(float("nan"), float("nan"), ZERO, float("nan"), 0, reason)


def _luma(image: np.ndarray, stride: int) -> np.ndarray:
    rgb = image[::stride, ::stride].astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def edge_proximity(image: np.ndarray, stride: int = 1, edge_share: float = 0.1, decay_px: float = 3.0,
                   vertical_only: bool = True) -> np.ndarray:
    """(H/stride, W/stride) map in 0..1: 1 on the image's strongest edges (top ``edge_share`` of gradient
    magnitude), falling off as ``exp(-distance / decay_px)`` away from them (pixels of the strided image).

    ``vertical_only``: only the horizontal gradient counts (vertical edges: the left and right silhouettes that a
    spinning LiDAR's depth jumps along a beam mark); road markings and the horizon do not."""
    y = _luma(image, stride)
    gx = ndimage.sobel(y, axis=1)
    mag = np.abs(gx) if vertical_only else np.hypot(gx, ndimage.sobel(y, axis=0))
    threshold = np.quantile(mag, 1.0 - edge_share)
    edges = mag >= max(threshold, 1e-3)
    if not edges.any():
        return np.zeros_like(y)
    dist = ndimage.distance_transform_edt(~edges)
    return np.exp(-dist / decay_px).astype(np.float32)


def depth_edge_points(points: np.ndarray, lidar_model: dict[str, Any] | None = None, min_jump_m: float = 0.5,
                      max_gap_deg: float = 0.6, solid: int = 2, solid_tol: float = 0.05,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR points on the near side of a depth discontinuity along their beam, and their weights.

    Points are assigned to beams by elevation (:func:`perception.robustness.lidar.beam_index`) and ordered by
    azimuth; a point whose azimuthal neighbour (within ``max_gap_deg``) is at least ``min_jump_m`` farther sits on
    an object's silhouette, if the surface continues on its own side: its ``solid`` next points away from the jump
    lie within ``solid_tol`` (relative) of its range. That drops the jumps inside foliage and other porous
    clutter, which match image texture at random. Weight: the jump in metres, square-rooted and capped at 10 m
    (Levinson & Thrun). Returns ``(xyz (M, 3), weight (M,))``.
    """
    p = np.asarray(points, dtype=np.float64)
    p = p[np.isfinite(p[:, :3]).all(axis=1)]
    n = len(p)
    if n < solid + 2:
        return np.zeros((0, 3)), np.zeros(0)
    beam = beam_index(p, lidar_model)
    az = np.arctan2(p[:, 1], p[:, 0])
    rng = np.linalg.norm(p[:, :3], axis=1)
    order = np.argsort(beam * 8.0 + az, kind="stable")  # by beam, then azimuth (|az| <= pi < 4)
    b, a, r = beam[order], az[order], rng[order]
    # link[i]: point i and i + 1 are azimuthal neighbours on one beam
    link = np.zeros(n, dtype=bool)
    link[:-1] = (b[1:] == b[:-1]) & (np.abs(a[1:] - a[:-1]) <= math.radians(max_gap_deg))
    nxt = np.append(r[1:], np.inf)
    prev = np.insert(r[:-1], 0, np.inf)
    prev_link = np.insert(link[:-1], 0, False)

    i = np.arange(n)

    def continues(step: int) -> np.ndarray:
        """The surface continues over ``solid`` linked points from each point in direction ``step`` (+1 or -1)."""
        ok = np.ones(n, dtype=bool)
        for k in range(1, solid + 1):
            j = i + step * k
            jc = np.clip(j, 0, n - 1)
            hop = np.clip(i + k - 1 if step > 0 else i - k, 0, n - 1)  # the link into point j
            ok &= (j >= 0) & (j < n) & link[hop] & (np.abs(r[jc] - r) <= solid_tol * r)
        return ok

    jump_next = np.where(link, nxt - r, 0.0)  # the next point is farther: a near edge if the surface goes back
    jump_prev = np.where(prev_link, prev - r, 0.0)  # the previous point is farther
    jump = np.maximum(np.where(continues(-1), jump_next, 0.0), np.where(continues(+1), jump_prev, 0.0))
    keep = jump >= min_jump_m
    return p[order][keep, :3], np.sqrt(np.minimum(jump[keep], 10.0))


def alignment_scores(points: np.ndarray, image: np.ndarray, rig: Rig, offsets: list[tuple[float, float, float]],
                     stride: int = 1, max_range_m: float = 40.0, decay_px: float = 3.0, vertical_only: bool = True,
                     ) -> tuple[dict[tuple[float, float, float], float], int]:
    """Alignment of the extrinsic rotated by each offset (degrees about camera x, y, z): the weighted mean edge
    proximity (:func:`edge_proximity`) at the projections of the LiDAR depth-edge points (:func:`depth_edge_points`,
    up to ``max_range_m``). Returns ``({offset: score}, edge points in the image at the calibrated extrinsic)``."""
    p = np.asarray(points, dtype=np.float64)[:, :3]
    p = p[np.isfinite(p).all(axis=1) & (np.linalg.norm(p, axis=1) <= max_range_m + 1.0)]
    uv, depth, _ = rig.project(p)
    margin = 0.2  # keep what a few degrees of rotation can bring into the image
    front = (depth > 0.5) & (uv[:, 0] > -margin * rig.width) & (uv[:, 0] < (1 + margin) * rig.width) & \
        (uv[:, 1] > -margin * rig.height) & (uv[:, 1] < (1 + margin) * rig.height)
    xyz, weight = depth_edge_points(p[front], rig.lidar_model)
    near = np.linalg.norm(xyz, axis=1) <= max_range_m
    xyz, weight = xyz[near], weight[near]
    prox = edge_proximity(image, stride, decay_px=decay_px, vertical_only=vertical_only)
    h, w = prox.shape
    cam = xyz @ rig.lidar_to_camera[:3, :3].T + rig.lidar_to_camera[:3, 3]
    rots = np.stack([rpy_to_matrix(*np.deg2rad(o)) for o in offsets])  # (O, 3, 3)
    c = (rots.reshape(-1, 3) @ cam.T).reshape(len(offsets), 3, -1)  # (O, 3, M): one matrix product
    z = np.maximum(c[:, 2], 1e-6)
    k = rig.K
    u = (k[0, 0] * c[:, 0] / z + k[0, 1] * c[:, 1] / z + k[0, 2]) / stride
    v = (k[1, 1] * c[:, 1] / z + k[1, 2]) / stride
    inside = (c[:, 2] > 0.5) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    iu = np.clip(u.astype(np.int64), 0, w - 1)
    iv = np.clip(v.astype(np.int64), 0, h - 1)
    wt = np.where(inside, weight[None, :], 0.0)
    total = wt.sum(axis=1)
    mean = (prox[iv, iu] * wt).sum(axis=1) / np.maximum(total, 1e-12)
    scores = {o: float(m) if t > 0 else 0.0 for o, m, t in zip(offsets, mean, total)}
    zero = [i for i, o in enumerate(offsets) if o == ZERO]
    n_calibrated = int(inside[zero[0]].sum()) if zero else 0
    return scores, n_calibrated


def grid_offsets(offsets_deg: tuple[float, ...] = DEFAULT_OFFSETS_DEG) -> list[tuple[float, float, float]]:
    """Every combination of ``offsets_deg`` about the three camera axes."""
    return [(float(x), float(y), float(z)) for x, y, z in product(offsets_deg, repeat=3)]


def extrinsic_consistency(points: np.ndarray, image: np.ndarray, rig: Rig,
                          offsets_deg: tuple[float, ...] = DEFAULT_OFFSETS_DEG, min_edge_points: int = 50,
                          ) -> ExtrinsicCheck:
    """Grade ``rig.lidar_to_camera`` on one synchronised (cloud, image) pair: :func:`alignment_scores` for the
    calibrated extrinsic and for every rotation of it by a combination of ``offsets_deg`` about the camera's axes
    (5³ = 125 by default). A frame with fewer than ``min_edge_points`` edge points in the image is not judged
    (``reason`` says so; ``gain`` is NaN)."""
    scores, n = alignment_scores(points, image, rig, grid_offsets(offsets_deg))
    return _grade(scores, n, min_edge_points)


def combine(checks: list[ExtrinsicCheck], min_edge_points: int = 50) -> ExtrinsicCheck:
    """One check from several frames' (same offsets): their scores averaged per offset, weighted by edge points,
    as Levinson & Thrun accumulate frames: a drifted extrinsic shows in every frame, while clutter that favours a
    random rotation in one frame does not."""
    usable = [c for c in checks if c.scores and c.edge_points > 0]
    if not usable:
        return ExtrinsicCheck.not_judged("no frame checked yet")
    total = sum(c.edge_points for c in usable)
    mean = {o: sum(c.scores.get(o, 0.0) * c.edge_points for c in usable) / total for o in usable[0].scores}
    return _grade(mean, total, min_edge_points)


def _grade(scores: dict[tuple[float, float, float], float], n: int, min_edge_points: int) -> ExtrinsicCheck:
    best = max(scores, key=scores.get)
    score = scores[ZERO]
    if n < min_edge_points:
        return ExtrinsicCheck(score, scores[best], best, float("nan"), n,
                              f"{n} LiDAR edge points in the image (< {min_edge_points})", scores)
    gain = scores[best] / score - 1.0 if score > 0 else 0.0
    return ExtrinsicCheck(score, scores[best], best, gain, n, "", scores)
