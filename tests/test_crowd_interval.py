"""Conformal count interval: nominal coverage on exchangeable data, small-sample fallback, file errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from perception.crowd.interval import (
    CountInterval,
    coverage,
    cross_fitted_coverage,
    fit_balanced_interval,
    fit_interval,
)
from perception.errors import ModelError


def _draw(rng: np.random.Generator, n: int, dispersion: float) -> tuple[list[float], list[float]]:
    truth = rng.integers(3, 120, size=n).astype(float)
    pred = np.maximum(truth + rng.normal(0, np.sqrt(dispersion * truth)), 0.0)
    return pred.tolist(), truth.tolist()


def test_conformal_interval_reaches_its_nominal_coverage() -> None:
    rng = np.random.default_rng(0)
    cal_p, cal_t = _draw(rng, 199, dispersion=4.0)
    interval = fit_interval(cal_p, cal_t, level=0.9)
    test_p, test_t = _draw(rng, 4000, dispersion=4.0)
    assert coverage(interval, test_p, test_t) == pytest.approx(0.9, abs=0.03)
    assert 2.0 < interval.phi < 8.0  # near the dispersion it was drawn with
    wider = fit_interval(cal_p, cal_t, level=0.97)
    lo, hi = wider.bounds(50.0)
    lo9, hi9 = interval.bounds(50.0)
    assert hi - lo > hi9 - lo9


def test_few_calibration_images_fall_back_to_the_largest_residual() -> None:
    preds, truths = [10.0, 20.0, 4.0], [12.0, 11.0, 4.0]  # normalised residuals 0.63, 2.01, 0
    interval = fit_interval(preds, truths, level=0.9)
    assert interval.fitted_on == 3
    assert interval.z * math.sqrt(interval.phi) == pytest.approx(9.0 / math.sqrt(20.0), rel=1e-6)
    assert coverage(interval, preds, truths) == 1.0


def test_bounds_are_clipped_at_zero_and_grow_with_the_count() -> None:
    interval = CountInterval(phi=2.0, level=0.9)
    lo, hi = interval.bounds(0.5)
    assert lo == 0.0 and hi > 0.5
    assert np.diff([interval.bounds(c)[1] - interval.bounds(c)[0] for c in (5, 20, 80)]).min() > 0


def test_interval_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "interval.json"
    CountInterval(phi=3.5, level=0.8, fitted_on=7).save(path)
    assert CountInterval.load(path) == CountInterval(phi=3.5, level=0.8, fitted_on=7)
    path.write_text('{"phi": -1, "level": 0.9}')
    with pytest.raises(ModelError, match="interval.json"):
        CountInterval.load(path)
    path.write_text("[")
    with pytest.raises(ModelError, match="interval.json"):
        CountInterval.load(path)
    with pytest.raises(ValueError):
        fit_interval([], [], 0.9)


def test_relative_errors_choose_a_proportional_interval_that_covers_each_group() -> None:
    """Errors proportional to the count (10 %): power 1 covers small and large crowds alike, power 0.5 does not."""
    rng = np.random.default_rng(1)
    small = rng.integers(5, 15, size=300).astype(float)
    large = rng.integers(100, 300, size=300).astype(float)
    truth = np.concatenate([small, large])
    pred = truth * (1 + rng.normal(0, 0.1, size=truth.size))
    groups = ["small"] * 300 + ["large"] * 300
    interval, table = fit_balanced_interval(pred.tolist(), truth.tolist(), groups, 0.9)
    assert interval.power == 1.0 and interval.fitted_on == 600
    assert all(abs(c - 0.9) < 0.05 for c in table[1.0].values())
    sqrt_cov = cross_fitted_coverage(pred.tolist(), truth.tolist(), groups, 0.9, 0.5)
    assert sqrt_cov["small"] > 0.97 and sqrt_cov["large"] < 0.85
    lo, hi = interval.bounds(40.0)
    assert lo > 25.0 and hi < 55.0  # informative for a crowd of 40
