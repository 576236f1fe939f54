"""Count interval: ``count +- z sqrt(phi) max(count, 1)^power`` (power 0.5: over-dispersed Poisson; 1: relative).

``phi`` is fitted on validation images by split conformal prediction on the normalised residuals
``|pred - truth| / max(pred, 1)^power``: their ``ceil((n + 1) level)``-th smallest value ``q`` gives
``phi = (q / z)^2``, so the interval holds the truth with probability >= ``level`` for images exchangeable with the
validation ones. ``power`` is chosen among :data:`POWERS` so that the per-dataset coverages (cross-fitted: fitted
on one half of the validation images, measured on the other) stay closest to the level. The empirical coverage on
other held-out images is reported by ``perception eval-crowd``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

from perception.errors import ModelError

log = logging.getLogger(__name__)
POWERS = (0.5, 0.75, 1.0)


@dataclass
class CountInterval:
    """Symmetric interval for a predicted count at a given nominal level."""

    phi: float = 1.0
    level: float = 0.9
    fitted_on: int = 0
    power: float = 0.5

    @property
    def z(self) -> float:
        """Two-sided normal quantile for :attr:`level`."""
        return NormalDist().inv_cdf(0.5 + self.level / 2.0)

    def bounds(self, count: float) -> tuple[float, float]:
        """(low, high) for a predicted count; the low end is clipped at zero."""
        half = self.z * math.sqrt(self.phi) * max(count, 1.0) ** self.power
        return max(0.0, count - half), count + half

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CountInterval:
        """Read JSON; ModelError naming the file when malformed."""
        try:
            doc = json.loads(Path(path).read_text())
            out = cls(phi=float(doc["phi"]), level=float(doc["level"]), fitted_on=int(doc.get("fitted_on", 0)),
                      power=float(doc.get("power", 0.5)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"malformed interval file: {exc}", str(path)) from exc
        if out.phi <= 0 or not 0 < out.level < 1 or not 0 <= out.power <= 1:
            raise ModelError("phi must be > 0, level in (0, 1) and power in [0, 1]", str(path))
        return out


def fit_interval(preds: list[float], truths: list[float], level: float, power: float = 0.5) -> CountInterval:
    """Split-conformal fit of the dispersion on (prediction, truth) pairs of held-out (validation) images."""
    if not preds or len(preds) != len(truths):
        raise ValueError("need matching, non-empty predictions and truths")
    scores = sorted(abs(p - t) / max(p, 1.0) ** power for p, t in zip(preds, truths))
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    if rank > n:
        log.warning("%d calibration images are too few for a %.0f%% conformal interval; using the largest "
                    "residual (coverage %.0f%%)", n, 100 * level, 100 * n / (n + 1))
        rank = n
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    q = scores[rank - 1] * (1 + 1e-9)  # closed interval: the calibration residual itself stays inside
    return CountInterval(phi=max((q / z) ** 2, 1e-6), level=level, fitted_on=n, power=power)


def coverage(interval: CountInterval, preds: list[float], truths: list[float]) -> float:
    """Share of truths inside the interval around their predictions."""
    inside = [lo <= t <= hi for (lo, hi), t in ((interval.bounds(p), t) for p, t in zip(preds, truths))]
    return sum(inside) / max(len(inside), 1)


def cross_fitted_coverage(preds: list[float], truths: list[float], groups: list[str], level: float,
                          power: float) -> dict[str, float]:
    """Per-group coverage of intervals fitted on the other half of the images (alternate images within each group
    form the two halves) -- an out-of-sample estimate of what the interval fitted on all of them covers."""
    idx = {g: [i for i, x in enumerate(groups) if x == g] for g in dict.fromkeys(groups)}
    half = [set(), set()]
    for members in idx.values():
        for j, i in enumerate(members):
            half[j % 2].add(i)
    inside = [False] * len(preds)
    for a, b in ((0, 1), (1, 0)):
        fit = fit_interval([preds[i] for i in half[a]], [truths[i] for i in half[a]], level, power)
        for i in half[b]:
            lo, hi = fit.bounds(preds[i])
            inside[i] = lo <= truths[i] <= hi
    return {g: sum(inside[i] for i in m) / len(m) for g, m in idx.items()}


def fit_balanced_interval(preds: list[float], truths: list[float], groups: list[str],
                          level: float) -> tuple[CountInterval, dict[float, dict[str, float]]]:
    """The interval over every image, with the :data:`POWERS` entry whose cross-fitted per-group coverages are
    closest to ``level`` (largest deviation). Returns (interval, {power: per-group coverage})."""
    table = {p: cross_fitted_coverage(preds, truths, groups, level, p) for p in POWERS}
    best = min(POWERS, key=lambda p: max(abs(c - level) for c in table[p].values()))
    return fit_interval(preds, truths, level, best), table
