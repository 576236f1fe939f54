"""Calibration metrics on hand-computed values and large synthetic samples with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError, DataError
from perception.eval.calibration_metrics import (
    box_residuals,
    detection_ece,
    interval_coverage,
    match_correct,
    reliability_table,
)
from perception.frame import Box3D


def box(label: str, x: float, dx: float = 0.0) -> Box3D:
    """A 4 x 2 x 1.5 box at ``x + dx``; a shift dx gives 3D IoU (4 - dx) / (4 + dx) against ``box(label, x)``."""
    return Box3D(label, [x + dx, 0.0, -1.0], [4.0, 2.0, 1.5], 0.0)


def test_match_correct_greedy_by_score_same_class_each_gt_once():
    gts = [box("Car", 0), box("Pedestrian", 10), box("Van", 20)]
    dets = [
        box("Car", 0, dx=0.2),  # IoU 0.90, lower score: the GT is taken already -> wrong
        box("Car", 0, dx=1.0),  # IoU 0.60 >= 0.5, highest score -> correct, GT 0
        box("Cyclist", 10),  # right place, wrong class -> wrong
        box("Car", 20),  # on a Van: no Car GT there -> wrong
        box("Car", 40),  # nothing -> wrong
    ]
    correct, matched = match_correct(gts, dets, np.array([0.5, 0.9, 0.8, 0.7, 0.6]))
    np.testing.assert_array_equal(correct, [False, True, False, False, False])
    np.testing.assert_array_equal(matched, [-1, 0, -1, -1, -1])


def test_match_correct_per_class_threshold():
    dx = 4.0 * (1 - 0.4) / (1 + 0.4)  # IoU 0.4: enough for a pedestrian (0.25), not a car (0.5)
    gts = [box("Car", 0), box("Pedestrian", 10)]
    dets = [box("Car", 0, dx), box("Pedestrian", 10, dx)]
    correct, matched = match_correct(gts, dets, np.array([0.9, 0.8]))
    np.testing.assert_array_equal(correct, [False, True])
    np.testing.assert_array_equal(matched, [-1, 1])
    correct, _ = match_correct(gts, dets, np.array([0.9, 0.8]), iou_thresholds={"Car": 0.35, "Pedestrian": 0.5})
    np.testing.assert_array_equal(correct, [True, False])


def test_match_correct_bev_ignores_height():
    high = Box3D("Car", [0.0, 0.0, 1.0], [4.0, 2.0, 1.5], 0.0)  # 2 m above the GT: no 3D overlap
    assert not match_correct([box("Car", 0)], [high], np.array([0.9]))[0][0]
    assert match_correct([box("Car", 0)], [high], np.array([0.9]), metric="bev")[0][0]


def test_match_correct_edge_cases():
    correct, matched = match_correct([], [box("Car", 0)], np.array([0.9]))
    assert correct.tolist() == [False] and matched.tolist() == [-1]
    correct, matched = match_correct([box("Car", 0)], [], np.zeros(0))
    assert correct.shape == (0,) and matched.shape == (0,)
    with pytest.raises(ConfigError):
        match_correct([box("Car", 0)], [box("Tram", 0)], np.array([0.9]))
    with pytest.raises(DataError):
        match_correct([box("Car", 0)], [box("Car", 0)], np.array([0.9, 0.1]))


def test_ece_two_bins_by_hand():
    # bin [0.2, 0.3): 1 detection, conf 0.25, wrong -> gap 0.25, weight 1/4
    # bin [0.7, 0.8) and [0.8, 0.9): conf 0.72, 0.74, 0.76 all in [0.7, 0.8), acc 2/3 -> gap |0.74 - 2/3|, weight 3/4
    conf = np.array([0.25, 0.72, 0.74, 0.76])
    correct = np.array([False, True, True, False])
    expected = 0.25 * 0.25 + 0.75 * abs(0.74 - 2 / 3)
    assert detection_ece(conf, correct) == pytest.approx(expected, abs=1e-12)


def test_ece_single_bin_and_edges():
    # one bin: |mean conf - accuracy| = |0.5 - 0.75|
    assert detection_ece([0.0, 1.0, 0.5, 0.5], [1, 1, 1, 0], n_bins=1) == pytest.approx(0.25)
    assert detection_ece([1.0, 1.0], [True, True]) == pytest.approx(0.0)  # 1.0 falls in the last bin
    assert np.isnan(detection_ece(np.zeros(0), np.zeros(0)))


def test_ece_of_calibrated_and_overconfident_samples():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.0, 1.0, 100_000)
    calibrated = rng.random(conf.size) < conf
    assert detection_ece(conf, calibrated) < 0.02
    overconfident = rng.random(conf.size) < conf**2  # gap c - c^2 averages 1/6
    assert detection_ece(conf, overconfident) == pytest.approx(1 / 6, abs=0.02)


def test_reliability_table_bins():
    table = reliability_table([0.05, 0.15, 0.15, 1.0], [1, 0, 1, 1], n_bins=4)
    assert [(r["lo"], r["hi"]) for r in table] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    assert [r["count"] for r in table] == [3, 0, 0, 1]
    assert table[0]["conf"] == pytest.approx(0.35 / 3) and table[0]["acc"] == pytest.approx(2 / 3)
    assert np.isnan(table[1]["conf"]) and np.isnan(table[1]["acc"])
    assert table[3]["conf"] == 1.0 and table[3]["acc"] == 1.0


def test_calibration_inputs_are_validated():
    with pytest.raises(DataError):
        detection_ece([0.5, 1.2], [1, 0])
    with pytest.raises(DataError):
        detection_ece([0.5, 0.2], [1])
    with pytest.raises(ConfigError):
        reliability_table([0.5], [1], n_bins=0)


def test_interval_coverage_by_hand():
    errors = np.array([[0.5, 0.0], [1.5, 2.0], [-1.0, -2.5], [3.0, 0.1]])
    sigmas = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 0.05]])
    # k = 1: column 0 holds 0.5 and -1 (the boundary counts); column 1 holds only 0 (2 > 1, 2.5 > 2, 0.1 > 0.05)
    np.testing.assert_allclose(interval_coverage(errors, sigmas, k=1.0), [0.5, 0.25])
    # k = 2: column 0 misses only 3; column 1 holds all (2 <= 2, 2.5 <= 4, 0.1 <= 0.1)
    np.testing.assert_allclose(interval_coverage(errors, sigmas, k=2.0), [0.75, 1.0])
    assert interval_coverage(np.array([0.5, 2.0]), np.array(1.0), k=1.0) == pytest.approx(0.5)


def test_interval_coverage_of_gaussian_samples():
    rng = np.random.default_rng(1)
    sigma = np.array([0.1, 0.5, 2.0])
    errors = rng.normal(0.0, 1.0, (200_000, 3)) * sigma
    np.testing.assert_allclose(interval_coverage(errors, np.broadcast_to(sigma, errors.shape), 1.0), 0.6827, atol=0.005)
    np.testing.assert_allclose(interval_coverage(errors, sigma, 2.0), 0.9545, atol=0.003)
    # overconfident sigmas (half the truth) cover less
    assert (interval_coverage(errors, sigma / 2, 1.0) < 0.40).all()


def test_box_residuals_wrap_yaw_and_keep_direction():
    gt = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 3.0], [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
                   [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]])
    pred = np.array([[0.5, 2.5, 3.0, 3.5, 2.0, 1.0, -3.0], [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, np.pi],
                     [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, -0.25]])
    res = box_residuals(gt, pred)
    np.testing.assert_allclose(res[0], [0.5, -0.5, 0.0, 0.5, 0.0, 0.5, 6.0 - 2 * np.pi])
    assert res[1, 6] == pytest.approx(-np.pi)  # facing backwards: error pi, wrapped to -pi, not folded to 0
    assert res[2, 6] == pytest.approx(np.pi / 2 + 0.25)
    assert ((res[:, 6] >= -np.pi) & (res[:, 6] < np.pi)).all()
    with pytest.raises(DataError):
        box_residuals(gt, pred[:2])
