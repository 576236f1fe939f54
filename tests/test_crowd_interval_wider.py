"""The shipped count interval keeps the wider of two dispersion fits."""

import pytest

from perception.crowd.interval import CountInterval, fit_interval, wider


def test_wider_keeps_the_larger_dispersion_and_counts_both_fits():
    val = fit_interval([20.0, 21.0], [21.0, 20.0], 0.9)  # a near-constant predictor that fits 2 images
    train = fit_interval([20.0, 18.0, 22.0], [6.0, 40.0, 35.0], 0.9)
    out = wider(val, train)
    assert out.phi == train.phi > val.phi and out.fitted_on == 5 and out.level == 0.9
    lo, hi = out.bounds(20.0)
    assert lo < 6.0 and hi > 35.0  # the wide fit covers what the narrow one misses
    with pytest.raises(ValueError, match="levels"):
        wider(val, CountInterval(phi=1.0, level=0.8))
