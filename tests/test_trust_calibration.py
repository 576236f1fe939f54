"""Score and variance calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.errors import ModelError
from perception.eval.calibration_metrics import detection_ece, interval_coverage
from perception.trust.calibration import Calibration, fit_temperature, fit_variance_scale


def test_temperature_fixes_overconfidence():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 20000)
    correct = rng.random(20000) < 1 / (1 + np.exp(-true_logit))
    overconfident = 3.0 * true_logit + 1.0
    t, b = fit_temperature(overconfident, correct)
    assert abs(t - 3.0) < 0.3 and abs(b + 1.0 / 3.0) < 0.15
    cal = Calibration(temperature={"Car": t}, bias={"Car": b})
    before = detection_ece(1 / (1 + np.exp(-overconfident)), correct)
    after = detection_ece(cal.probability(overconfident, "Car"), correct)
    assert before > 0.05 and after < 0.02


def test_temperature_degenerate_inputs_are_identity():
    assert fit_temperature(np.array([1.0, 2.0]), np.array([True, False])) == (1.0, 0.0)
    assert fit_temperature(np.ones(50), np.ones(50, bool)) == (1.0, 0.0)


def test_variance_scale_restores_coverage():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.1, 1.0, (5000, 7))
    err = rng.normal(0, 1, (5000, 7)) * sigma * 2.5  # predicted sigmas 2.5x too small
    scale = np.array(fit_variance_scale(err, sigma))
    assert np.allclose(scale, 6.25, rtol=0.15)
    fixed = sigma * np.sqrt(scale)
    assert np.allclose(interval_coverage(err, fixed, 1.0), 0.683, atol=0.03)
    assert np.allclose(interval_coverage(err, fixed, 2.0), 0.954, atol=0.02)


def test_calibration_file_roundtrip_and_errors(tmp_path):
    cal = Calibration(temperature={"Car": 1.5}, bias={"Car": -0.2}, variance_scale=[2.0] * 7, fitted_on="x")
    cal.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again == cal
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["variance_scale"] = [1.0, -1.0]
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="variance_scale"):
        Calibration.load(tmp_path / "c.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ModelError, match="c.json"):
        Calibration.load(tmp_path / "c.json")
