"""Geometry-adaptive Gaussian density maps whose sum equals the number of heads inside the image."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def adaptive_sigmas(points: np.ndarray, knn: int = 3, beta: float = 0.3, sigma_min: float = 2.0,
                    sigma_max: float = 16.0, sigma_single: float = 6.0) -> np.ndarray:
    """Per-head sigma = ``beta`` x mean distance to the ``knn`` nearest other heads, clipped to [min, max]."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(points)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.full(1, float(np.clip(sigma_single, sigma_min, sigma_max)))
    k = min(knn, n - 1)
    dist, _ = cKDTree(points).query(points, k=k + 1)
    mean_d = np.asarray(dist, dtype=np.float64).reshape(n, k + 1)[:, 1:].mean(axis=1)
    return np.clip(beta * mean_d, sigma_min, sigma_max)


def render_density(points: np.ndarray, sigmas: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) float32 map: one unit-mass Gaussian per head inside the image, truncated at 3 sigma
    and at the image border and renormalised, so the map sums to the number of heads inside."""
    out = np.zeros((height, width), dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for (x, y), s in zip(points, np.asarray(sigmas, dtype=np.float64).reshape(-1)):
        if not (0.0 <= x < width and 0.0 <= y < height):
            continue
        r = max(1, int(np.ceil(3.0 * s)))
        cx, cy = int(x), int(y)
        x0, x1 = max(0, cx - r), min(width, cx + r + 1)
        y0, y1 = max(0, cy - r), min(height, cy + r + 1)
        gx = np.exp(-0.5 * ((np.arange(x0, x1) + 0.5 - x) / s) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) + 0.5 - y) / s) ** 2)
        g = np.outer(gy, gx)
        total = g.sum()
        if total <= 0:  # sigma far below a pixel: all mass in the pixel that holds the head
            out[cy, cx] += 1.0
        else:
            out[y0:y1, x0:x1] += g / total
    return out.astype(np.float32)


def sum_pool(density: np.ndarray, stride: int) -> np.ndarray:
    """Sum over ``stride`` x ``stride`` cells (height and width must be multiples of ``stride``)."""
    h, w = density.shape
    if h % stride or w % stride:
        raise ValueError(f"density map {h}x{w} is not a multiple of {stride}")
    return density.reshape(h // stride, stride, w // stride, stride).sum(axis=(1, 3))
