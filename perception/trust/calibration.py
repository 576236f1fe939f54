"""Uncertainty calibration: per-class logistic (temperature + bias) scaling of class scores and
per-parameter scaling of predicted variances, fitted on a calibration split (never the test split)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from perception.errors import ModelError

#: Box parameters with a variance, in the order of ``Detection.covariance``.
BOX_PARAMS = ("x", "y", "z", "l", "w", "h", "yaw")
#: Gaussian coverage of the 1-sigma and 2-sigma intervals.
GAUSS_1SIGMA, GAUSS_2SIGMA = 0.6827, 0.9545


@dataclass
class Calibration:
    """Fitted calibration. Identity (T = 1, bias 0, scale 1) until :func:`fit_calibration` runs."""

    temperature: dict[str, float] = field(default_factory=dict)  # per class: p = sigmoid(logit / T + bias)
    bias: dict[str, float] = field(default_factory=dict)
    variance_scale: list[float] = field(default_factory=lambda: [1.0] * len(BOX_PARAMS))  # multiplies variances
    fitted_on: str = ""  # which split/frames
    num_detections: int = 0

    def probability(self, logit: np.ndarray, label: str) -> np.ndarray:
        """Calibrated existence probability from the raw class logit."""
        t = self.temperature.get(label, 1.0)
        b = self.bias.get(label, 0.0)
        return 1.0 / (1.0 + np.exp(-(np.asarray(logit, dtype=np.float64) / t + b)))

    def scale_variance(self, variances: np.ndarray) -> np.ndarray:
        """Apply the per-parameter variance scale to (..., 7) variances."""
        return np.asarray(variances) * np.asarray(self.variance_scale)

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read from JSON; a malformed file is a ModelError naming it."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
            cal = cls(**doc)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"unreadable calibration file: {exc}", str(path)) from exc
        if len(cal.variance_scale) != len(BOX_PARAMS) or not all(v > 0 for v in cal.variance_scale):
            raise ModelError("variance_scale must be 7 positive numbers", f"{path}:variance_scale")
        if any(t <= 0 for t in cal.temperature.values()):
            raise ModelError("temperatures must be positive", f"{path}:temperature")
        return cal


def fit_temperature(logits: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Fit ``sigmoid(logit / T + b)`` to binary outcomes by minimum negative log-likelihood."""
    logits = np.asarray(logits, np.float64)
    y = np.asarray(correct, np.float64)
    if len(y) < 10 or y.min() == y.max():
        return 1.0, 0.0

    def nll(params: np.ndarray) -> float:
        log_t, b = params
        z = logits / math.exp(log_t) + b
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    res = minimize(nll, np.zeros(2), method="L-BFGS-B", bounds=[(-3.0, 3.0), (-10.0, 10.0)])
    return float(math.exp(res.x[0])), float(res.x[1])


def fit_variance_scale(residuals: np.ndarray, sigmas: np.ndarray) -> list[float]:
    """Per-parameter factor on the variance so that the 1σ and 2σ intervals cover ~68 % / ~95 %.

    For each parameter the scale on σ minimises the squared miss of both coverages (robust to
    heavy tails, unlike matching the mean squared z-score).
    """
    z = np.abs(np.asarray(residuals) / np.maximum(np.asarray(sigmas), 1e-9))
    scales = []
    for k in range(z.shape[1]):
        zk = np.sort(z[:, k])
        if len(zk) < 10:
            scales.append(1.0)
            continue
        candidates = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
        cov1 = np.searchsorted(zk, candidates, side="right") / len(zk)
        cov2 = np.searchsorted(zk, 2 * candidates, side="right") / len(zk)
        err = (cov1 - GAUSS_1SIGMA) ** 2 + (cov2 - GAUSS_2SIGMA) ** 2
        s = candidates[int(np.argmin(err))]
        scales.append(float(s ** 2))
    return scales
