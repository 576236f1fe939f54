"""Count interval: over-dispersed Poisson with a Gaussian approximation, ``count +- z sqrt(phi max(count, 1))``.

``phi`` (the dispersion) is fitted on residuals: ``phi = mean(r^2 / max(pred, 1))``; training keeps the wider
of the validation and the training-image fits (:func:`wider`). Its empirical coverage on held-out images is
reported by ``perception eval-crowd``; with few images it is rough.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

from perception.errors import ModelError


@dataclass
class CountInterval:
    """Symmetric interval for a predicted count at a given nominal level."""

    phi: float = 1.0
    level: float = 0.9
    fitted_on: int = 0

    @property
    def z(self) -> float:
        """Two-sided normal quantile for :attr:`level`."""
        return NormalDist().inv_cdf(0.5 + self.level / 2.0)

    def bounds(self, count: float) -> tuple[float, float]:
        """(low, high) for a predicted count; the low end is clipped at zero."""
        half = self.z * math.sqrt(self.phi * max(count, 1.0))
        return max(0.0, count - half), count + half

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CountInterval:
        """Read JSON; ModelError naming the file when malformed."""
        try:
            doc = json.loads(Path(path).read_text())
            out = cls(phi=float(doc["phi"]), level=float(doc["level"]), fitted_on=int(doc.get("fitted_on", 0)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"malformed interval file: {exc}", str(path)) from exc
        if out.phi <= 0 or not 0 < out.level < 1:
            raise ModelError("phi must be > 0 and level in (0, 1)", str(path))
        return out


def fit_interval(preds: list[float], truths: list[float], level: float) -> CountInterval:
    """Fit the dispersion on (prediction, truth) pairs of held-out (validation) images."""
    if not preds or len(preds) != len(truths):
        raise ValueError("need matching, non-empty predictions and truths")
    ratios = [(p - t) ** 2 / max(p, 1.0) for p, t in zip(preds, truths)]
    return CountInterval(phi=max(sum(ratios) / len(ratios), 1e-3), level=level, fitted_on=len(preds))


def coverage(interval: CountInterval, preds: list[float], truths: list[float]) -> float:
    """Share of truths inside the interval around their predictions."""
    inside = [lo <= t <= hi for (lo, hi), t in ((interval.bounds(p), t) for p, t in zip(preds, truths))]
    return sum(inside) / max(len(inside), 1)


def wider(a: CountInterval, b: CountInterval) -> CountInterval:
    """The interval with the larger dispersion (same level), counting the images of both fits."""
    if a.level != b.level:
        raise ValueError(f"levels differ: {a.level} vs {b.level}")
    return CountInterval(phi=max(a.phi, b.phi), level=a.level, fitted_on=a.fitted_on + b.fitted_on)
