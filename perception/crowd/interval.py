"""Count interval: over-dispersed Poisson shape, ``count +- z sqrt(phi max(count, 1))``.

``phi`` is fitted on validation images by split conformal prediction on the normalised residuals
``|pred - truth| / sqrt(max(pred, 1))``: their ``ceil((n + 1) level)``-th smallest value ``q`` gives
``phi = (q / z)^2``, so the interval holds the truth with probability >= ``level`` for images exchangeable with the
validation ones. With fewer than ``level / (1 - level)`` validation images the largest residual is used (coverage
``n / (n + 1)`` only). Training keeps the wider of the validation and the training-image fits (:func:`wider`):
the 7 validation images are the ones the weights were selected on, so their residuals are optimistic. The
empirical coverage on held-out test images is reported by ``perception eval-crowd``.
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
    """Split-conformal fit of the dispersion on (prediction, truth) pairs of held-out (validation) images."""
    if not preds or len(preds) != len(truths):
        raise ValueError("need matching, non-empty predictions and truths")
    scores = sorted(abs(p - t) / math.sqrt(max(p, 1.0)) for p, t in zip(preds, truths))
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    if rank > n:
        log.warning("%d calibration images are too few for a %.0f%% conformal interval; using the largest "
                    "residual (coverage %.0f%%)", n, 100 * level, 100 * n / (n + 1))
        rank = n
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    q = scores[rank - 1] * (1 + 1e-9)  # closed interval: the calibration residual itself stays inside
    return CountInterval(phi=max((q / z) ** 2, 1e-3), level=level, fitted_on=n)


def coverage(interval: CountInterval, preds: list[float], truths: list[float]) -> float:
    """Share of truths inside the interval around their predictions."""
    inside = [lo <= t <= hi for (lo, hi), t in ((interval.bounds(p), t) for p, t in zip(preds, truths))]
    return sum(inside) / max(len(inside), 1)


def wider(a: CountInterval, b: CountInterval) -> CountInterval:
    """The interval with the larger dispersion (same level), counting the images of both fits."""
    if a.level != b.level:
        raise ValueError(f"levels differ: {a.level} vs {b.level}")
    return CountInterval(phi=max(a.phi, b.phi), level=a.level, fitted_on=a.fitted_on + b.fitted_on)
