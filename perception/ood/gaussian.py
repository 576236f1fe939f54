"""Gaussian feature models for Mahalanobis scoring: class means with one shared, shrunk covariance.

The covariance is the Ledoit-Wolf estimate: the pooled within-class sample covariance pulled towards a
scaled identity by the closed-form optimal intensity, so it stays well conditioned when features are
many and samples few (64-d query features, a few hundred detections per class).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.errors import DataError

#: Smallest eigenvalue floor, relative to the mean variance, added before inverting.
_EIG_FLOOR = 1e-6


def ledoit_wolf_shrinkage(centered: np.ndarray) -> float:
    """Ledoit-Wolf optimal shrinkage intensity in [0, 1] for zero-mean rows ``centered`` (N, D)."""
    x = np.asarray(centered, dtype=np.float64)
    n, _ = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / s.shape[0]
    d2 = np.sum((s - mu * np.eye(s.shape[0])) ** 2)
    if d2 <= 0.0:
        return 1.0
    sq = np.sum(x * x, axis=1)
    # sum_k ||x_k x_k^T - S||_F^2 = sum_k (|x_k|^4 - 2 x_k^T S x_k) + n ||S||_F^2
    b2 = (np.sum(sq ** 2) - 2.0 * np.sum((x @ s) * x) + n * np.sum(s * s)) / n ** 2
    return float(np.clip(min(b2, d2) / d2, 0.0, 1.0))


def shrunk_covariance(centered: np.ndarray, shrinkage: float | None = None) -> tuple[np.ndarray, float]:
    """``(covariance (D, D), shrinkage)``: ``(1 - a) S + a tr(S)/D I``; ``a`` is Ledoit-Wolf's when None."""
    x = np.asarray(centered, dtype=np.float64)
    s = x.T @ x / len(x)
    a = ledoit_wolf_shrinkage(x) if shrinkage is None else float(shrinkage)
    if not 0.0 <= a <= 1.0:
        raise DataError(f"shrinkage must be in [0, 1], got {a}", "shrunk_covariance.shrinkage")
    mu = np.trace(s) / s.shape[0]
    return (1.0 - a) * s + a * mu * np.eye(s.shape[0]), a


@dataclass(frozen=True)
class GaussianModel:
    """``C`` class means sharing one covariance, kept as its inverse (precision)."""

    means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D)
    shrinkage: float = 0.0

    @property
    def num_classes(self) -> int:
        """Number of class means ``C``."""
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.means.shape[1])

    def distances(self, x: np.ndarray, where: str = "features") -> np.ndarray:
        """Mahalanobis distances (not squared) of rows ``x`` (N, D) to every class mean, (N, C)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"expected (N, {self.dim}) features, got shape {x.shape}", where)
        diff = x[:, None, :] - self.means[None, :, :]  # (N, C, D)
        d2 = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return np.sqrt(np.clip(d2, 0.0, None))


def fit_gaussian_model(x: np.ndarray, labels: np.ndarray | None = None, num_classes: int = 1,
                       shrinkage: float | None = None, where: str = "fit") -> GaussianModel:
    """Fit class means and the shared (pooled within-class) shrunk covariance.

    ``labels`` (N,) are class indices in ``[0, num_classes)``; None puts every row in class 0. Every class
    needs at least two samples; raises :class:`DataError` naming ``where`` otherwise. Shrinkage acts on the
    per-dimension standardised residuals (towards the identity correlation), so dimensions with different
    units or scales are treated alike; the returned precision is in the original units.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise DataError(f"need a finite (N >= 2, D) feature matrix, got shape {x.shape}", where)
    labels = np.zeros(len(x), np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(x),):
        raise DataError(f"{len(labels)} labels for {len(x)} feature rows", where)
    means = np.zeros((num_classes, x.shape[1]))
    centered = np.empty_like(x)
    for c in range(num_classes):
        rows = labels == c
        if rows.sum() < 2:
            raise DataError(f"class {c} has {int(rows.sum())} samples; need at least 2 to fit", where)
        means[c] = x[rows].mean(axis=0)
        centered[rows] = x[rows] - means[c]
    if ((labels < 0) | (labels >= num_classes)).any():
        raise DataError(f"labels must lie in [0, {num_classes})", where)
    scale = centered.std(axis=0)
    scale = np.where(scale > 1e-9 * max(float(scale.max()), 1e-30), scale, max(float(scale.max()), 1.0))
    cov, a = shrunk_covariance(centered / scale, shrinkage)
    floor = _EIG_FLOOR * max(float(np.trace(cov)) / cov.shape[0], 1e-12)
    precision = np.linalg.inv(cov + floor * np.eye(cov.shape[0])) / np.outer(scale, scale)
    return GaussianModel(means=means, precision=(precision + precision.T) / 2.0, shrinkage=a)
