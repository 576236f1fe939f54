"""KITTI AP on hand-computed cases: exact AP|R40 (perfect, empty, FP placement, ignore rules, thresholds, difficulty)
and the devkit convention (its recall thresholds; small detections play no part)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError, DataError
from perception.eval.ap import ap_devkit, ap_r40, devkit_thresholds, evaluate_ap, greedy_match
from perception.frame import Box3D


def car(x: float, y: float = 0.0, label: str = "Car", **kw) -> Box3D:
    """A 4 x 2 x 1.5 box; ``x`` spaced by >= 10 keeps boxes apart."""
    kw.setdefault("num_points", 50)
    kw.setdefault("bbox2d", np.array([0.0, 0.0, 50.0, 60.0]))  # 60 px tall: every difficulty
    return Box3D(label, [x, y, -1.0], [4.0, 2.0, 1.5], 0.0, **kw)


def shifted(box: Box3D, dx: float, label: str | None = None) -> Box3D:
    """A detection: ``box`` moved ``dx`` along its length (3D IoU = (4 - dx) / (4 + dx))."""
    return Box3D(label or box.label, box.center + [dx, 0.0, 0.0], box.size, box.yaw)


def run(gts, dets, scores, **kw):
    return evaluate_ap(gts, dets, [np.asarray(s, dtype=float) for s in scores], **kw)


def test_perfect_detections_give_100_for_every_class():
    gts = [[car(0), car(10, label="Pedestrian")], [car(20, label="Cyclist"), car(30)]]
    dets = [[shifted(g, 0.0) for g in frame] for frame in gts]
    res = run(gts, dets, [[0.9, 0.8], [0.7, 0.6]])
    for cls in ("Car", "Pedestrian", "Cyclist"):
        assert res[cls].ap_r40 == pytest.approx(100.0)
    assert res["Car"].num_gt == 2 and res["Car"].num_det == 2


def test_no_detections_give_0():
    res = run([[car(0), car(10)]], [[]], [[]], classes=("Car",))
    assert res["Car"].ap_r40 == 0.0
    assert res["Car"].num_gt == 2 and res["Car"].num_det == 0


def test_no_ground_truth_gives_nan():
    res = run([[]], [[car(0)]], [[0.5]], classes=("Car",))
    assert np.isnan(res["Car"].ap_r40) and res["Car"].num_det == 1


def test_single_fp_above_every_tp():
    # order FP, TP, TP with 2 GT: precision 1/2 at recall 1/2, 2/3 at recall 1.
    # Interpolated precision is max over recall >= r: 2/3 at every r in 1/40..40/40.
    gts = [[car(0), car(10)]]
    dets = [[car(50), car(0), car(10)]]
    res = run(gts, dets, [[0.9, 0.8, 0.7]], classes=("Car",))
    assert res["Car"].ap_r40 == pytest.approx(100 * 2 / 3)
    np.testing.assert_allclose(res["Car"].precision, [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(res["Car"].recall, [0.0, 0.5, 1.0])


def test_fp_between_two_tps():
    # TP, FP, TP: precision 1 up to recall 1/2 (20 points), then 2/3 (20 points): (20 + 40/3) / 40
    res = run([[car(0), car(10)]], [[car(0), car(50), car(10)]], [[0.9, 0.8, 0.7]], classes=("Car",))
    assert res["Car"].ap_r40 == pytest.approx(100 * (20 + 20 * 2 / 3) / 40)


def test_half_the_gt_found_is_exactly_50():
    res = run([[car(0), car(10)]], [[car(0)]], [[0.9]], classes=("Car",))
    assert res["Car"].ap_r40 == 50.0


def test_r40_uses_exact_recall_points():
    # 3 GT, one TP: recall 1/3 reaches r = k/40 for k <= 13 (13/40 < 1/3 < 14/40)
    assert ap_r40(np.array([1]), 3) == pytest.approx(100 * 13 / 40)
    # 40 GT, TPs only: every recall point reached with precision 1
    assert ap_r40(np.ones(40), 40) == pytest.approx(100.0)
    assert ap_r40(np.ones(39), 40) == pytest.approx(100 * 39 / 40)


def test_detections_are_pooled_across_frames_by_score():
    # frame 0: TP at 0.9, frame 1: FP at 0.95 (no GT there for it), TP at 0.5
    gts = [[car(0)], [car(0)]]
    dets = [[car(0)], [car(40), car(0)]]
    res = run(gts, dets, [[0.9], [0.95, 0.5]], classes=("Car",))
    np.testing.assert_allclose(res["Car"].scores, [0.95, 0.9, 0.5])
    assert res["Car"].ap_r40 == pytest.approx(100 * 2 / 3)


def test_a_detection_cannot_match_gt_of_another_frame():
    res = run([[car(0)], []], [[], [car(0)]], [[], [0.9]], classes=("Car",))
    assert res["Car"].ap_r40 == 0.0 and res["Car"].num_det == 1


def test_duplicate_detection_is_a_false_positive():
    res = run([[car(0)]], [[car(0), shifted(car(0), 0.1)]], [[0.6, 0.9]], classes=("Car",))
    # the higher-scored near-duplicate takes the GT; the exact copy comes second and is an FP
    np.testing.assert_allclose(res["Car"].precision, [1.0, 0.5])
    assert res["Car"].ap_r40 == pytest.approx(100.0)


@pytest.mark.parametrize(
    "ignored_gt",
    [
        car(0, label="Van"),  # neighbouring class
        car(0, occlusion=2),  # too occluded for moderate
        car(0, truncation=0.4),  # too truncated for moderate
        car(0, bbox2d=np.array([0.0, 0.0, 30.0, 20.0])),  # 20 px: too small
        car(0, num_points=0),  # no LiDAR points
    ],
)
def test_detection_on_ignored_gt_is_neither_tp_nor_fp(ignored_gt):
    gts = [[ignored_gt, car(10)]]
    dets = [[car(0), car(10)]]
    res = run(gts, dets, [[0.9, 0.8]], classes=("Car",))
    assert res["Car"].ap_r40 == pytest.approx(100.0)
    assert res["Car"].num_gt == 1 and res["Car"].num_det == 1


def test_missed_ignored_gt_is_not_a_false_negative():
    res = run([[car(0, occlusion=2), car(10)]], [[car(10)]], [[0.8]], classes=("Car",))
    assert res["Car"].ap_r40 == pytest.approx(100.0)


def test_dontcare_and_other_classes_do_not_absorb_detections():
    gts = [[car(0, label="DontCare"), car(10, label="Truck"), car(20)]]
    dets = [[car(0), car(10), car(20)]]
    res = run(gts, dets, [[0.9, 0.8, 0.7]], classes=("Car",))
    assert res["Car"].num_det == 3
    assert res["Car"].ap_r40 == pytest.approx(100 / 3)  # interpolated precision 1/3 everywhere


def test_van_is_not_ignored_for_pedestrians_and_person_sitting_is_for_pedestrians():
    gts = [[car(0, label="Person_sitting"), car(10, label="Pedestrian")]]
    dets = [[car(0, label="Pedestrian"), car(10, label="Pedestrian")]]
    res = run(gts, dets, [[0.9, 0.8]], classes=("Pedestrian",))
    assert res["Pedestrian"].ap_r40 == pytest.approx(100.0) and res["Pedestrian"].num_det == 1
    gts = [[car(0, label="Van"), car(10, label="Pedestrian")]]
    res = run(gts, dets, [[0.9, 0.8]], classes=("Pedestrian",))
    assert res["Pedestrian"].num_det == 2 and res["Pedestrian"].ap_r40 == pytest.approx(50.0)


def test_matching_prefers_counted_gt_over_ignored_gt():
    # the detection overlaps an ignored Van more than the Car, but both pass 0.5
    gt_car, gt_van = car(0), car(0.5, label="Van")
    det = shifted(car(0), 0.4)
    res = run([[gt_car, gt_van]], [[det]], [[0.9]], classes=("Car",), iou_thresholds={"Car": 0.5})
    assert res["Car"].ap_r40 == pytest.approx(100.0)


def test_detections_of_other_classes_are_ignored_per_class():
    gts = [[car(0), car(10, label="Cyclist")]]
    dets = [[car(0), car(10, label="Pedestrian")]]
    res = run(gts, dets, [[0.9, 0.95]])
    assert res["Car"].ap_r40 == pytest.approx(100.0)
    assert res["Cyclist"].ap_r40 == 0.0 and res["Cyclist"].num_det == 0
    assert np.isnan(res["Pedestrian"].ap_r40) and res["Pedestrian"].num_det == 1


@pytest.mark.parametrize("iou,expected", [(0.69, 0.0), (0.71, 100.0)])
def test_iou_just_below_and_above_the_threshold(iou, expected):
    dx = 4.0 * (1 - iou) / (1 + iou)  # 3D IoU of a 4 m box shifted dx along its length
    res = run([[car(0)]], [[shifted(car(0), dx)]], [[0.9]], classes=("Car",))
    assert res["Car"].ap_r40 == pytest.approx(expected)
    assert res["Car"].num_det == 1


def test_bev_metric_ignores_height_error():
    det = Box3D("Car", [0.0, 0.0, 0.0], [4.0, 2.0, 1.5], 0.0)  # 1 m too high: 3D IoU 0.5 / 2.5
    gts = [[car(0)]]
    assert run(gts, [[det]], [[0.9]], classes=("Car",), metric="bev")["Car"].ap_r40 == pytest.approx(100.0)
    assert run(gts, [[det]], [[0.9]], classes=("Car",), metric="3d")["Car"].ap_r40 == 0.0


def test_difficulty_levels():
    medium = car(0, bbox2d=np.array([0.0, 100.0, 40.0, 130.0]))  # 30 px tall: moderate, not easy
    gts = [[medium, car(10)]]
    dets = [[car(0), car(10)]]
    easy = run(gts, dets, [[0.9, 0.8]], classes=("Car",), difficulty="easy")["Car"]
    assert easy.num_gt == 1 and easy.ap_r40 == pytest.approx(100.0)
    moderate = run(gts, dets, [[0.9, 0.8]], classes=("Car",), difficulty="moderate")["Car"]
    assert moderate.num_gt == 2
    hard_only = car(0, occlusion=2, truncation=0.45)
    assert run([[hard_only]], [[]], [[]], classes=("Car",), difficulty="hard")["Car"].num_gt == 1
    assert run([[hard_only]], [[]], [[]], classes=("Car",), difficulty="moderate")["Car"].num_gt == 0


def test_difficulty_none_uses_every_gt_with_points():
    gts = [[car(0, occlusion=3, truncation=0.9, bbox2d=None), car(10, num_points=0), car(20, num_points=-1)]]
    res = run(gts, [[]], [[]], classes=("Car",), difficulty="none")
    assert res["Car"].num_gt == 2


def test_gt_without_bbox2d_passes_the_height_rule():
    res = run([[car(0, bbox2d=None)]], [[car(0)]], [[0.9]], classes=("Car",), difficulty="easy")
    assert res["Car"].num_gt == 1 and res["Car"].ap_r40 == pytest.approx(100.0)


def test_small_unmatched_detection_is_not_a_false_positive_under_kitti_difficulty():
    tiny = Box3D("Car", [60.0, 0.0, -1.0], [4.0, 2.0, 1.5], 0.0, bbox2d=np.array([0.0, 0.0, 20.0, 15.0]))
    gts = [[car(0)]]
    dets = [[tiny, car(0)]]
    assert run(gts, dets, [[0.9, 0.8]], classes=("Car",))["Car"].num_det == 1
    assert run(gts, dets, [[0.9, 0.8]], classes=("Car",), difficulty="none")["Car"].num_det == 2


def test_greedy_match_takes_highest_iou_free_gt_in_score_order():
    iou = np.array([[0.8, 0.9], [0.0, 0.95], [0.6, 0.0]])
    # det 1 (score 0.9) takes GT 1; det 0 (0.8) falls back to GT 0; det 2 finds nothing free
    np.testing.assert_array_equal(greedy_match(iou, np.array([0.8, 0.9, 0.7]), 0.5), [0, 1, -1])
    np.testing.assert_array_equal(greedy_match(iou, np.array([0.8, 0.9, 0.7]), 0.85), [-1, 1, -1])
    # an ignored GT is only taken when no counted GT qualifies
    np.testing.assert_array_equal(greedy_match(iou[:1], np.array([1.0]), 0.5, np.array([False, True])), [0])
    assert greedy_match(np.zeros((2, 0)), np.ones(2), 0.5).tolist() == [-1, -1]


def test_input_validation():
    with pytest.raises(DataError):
        run([[car(0)]], [[car(0)], []], [[0.9], []])
    with pytest.raises(DataError):
        run([[car(0)]], [[car(0)]], [[0.9, 0.8]])
    with pytest.raises(ConfigError):
        run([[car(0)]], [[car(0)]], [[0.9]], metric="2d")
    with pytest.raises(ConfigError):
        run([[car(0)]], [[car(0)]], [[0.9]], difficulty="medium")
    with pytest.raises(ConfigError):
        run([[car(0)]], [[car(0)]], [[0.9]], classes=("Tram",))


def test_devkit_thresholds_follow_get_thresholds():
    # fewer GT than recall levels: every true positive's score is a threshold
    np.testing.assert_allclose(devkit_thresholds(np.array([0.2, 0.9, 0.5]), 4), [0.9, 0.5, 0.2])
    # 100 GT, 100 TPs: thresholds at recall 1/100 (the extra one) and then about every 1/40, 41 at most
    t = devkit_thresholds(np.linspace(1.0, 0.01, 100), 100)
    assert len(t) == 41 and t[0] == 1.0 and t[-1] == pytest.approx(0.01)
    recall_of = np.round((1.0 - t) / 0.01).astype(int) + 1  # TP rank of each threshold
    assert recall_of[:4].tolist() == [1, 3, 5, 8]  # 1/100, then the TP nearest to k/40 (ties go up)


def test_devkit_ap_drops_the_first_recall_sample():
    # 4 of 4 found at precision 1: the devkit samples 4 points and drops the first -> 3/40
    assert ap_devkit(np.ones(4, bool), np.array([0.9, 0.8, 0.7, 0.6]), 4) == pytest.approx(7.5)
    assert ap_r40(np.ones(4), 4) == pytest.approx(100.0)
    # 100 of 100 found: 41 samples, entries 1..40 all precision 1
    assert ap_devkit(np.ones(100, bool), np.linspace(1.0, 0.01, 100), 100) == pytest.approx(100.0)
    assert np.isnan(ap_devkit(np.zeros(0, bool), np.zeros(0), 0))
    assert ap_devkit(np.zeros(3, bool), np.array([0.9, 0.8, 0.7]), 5) == 0.0


def test_devkit_ap_counts_every_detection_above_each_threshold():
    # 80 GT, 60 found; an FP (far from every GT) scores between the 30th and 31st TP
    tp_scores = np.linspace(0.99, 0.2, 60)
    scores = np.r_[tp_scores[:30], 0.5 * (tp_scores[29] + tp_scores[30]), tp_scores[30:]]
    tp = np.r_[np.ones(30, bool), False, np.ones(30, bool)]
    expected_devkit = ap_devkit(tp, scores, 80)
    dets = [car(10.0 * i) for i in range(30)] + [car(-50.0)] + [car(10.0 * i) for i in range(30, 60)]
    res = evaluate_ap([[car(10.0 * i) for i in range(80)]], [dets], [scores], classes=("Car",))
    assert res["Car"].ap == pytest.approx(expected_devkit)
    assert res["Car"].ap_r40 == pytest.approx(ap_r40(tp.astype(int), 80))


def test_small_detection_on_a_counted_gt_is_neither_tp_nor_fp():
    # a detection under 25 px plays no part: the GT it overlaps stays missed, a larger later detection takes it
    small = Box3D("Car", [0.0, 0.0, -1.0], [4.0, 2.0, 1.5], 0.0, bbox2d=np.array([0.0, 0.0, 20.0, 20.0]))
    res = run([[car(0), car(10)]], [[small, car(10)]], [[0.9, 0.8]], classes=("Car",))
    assert res["Car"].num_det == 1 and res["Car"].ap_r40 == pytest.approx(50.0)
    res = run([[car(0)]], [[small, car(0)]], [[0.9, 0.8]], classes=("Car",))
    assert res["Car"].num_det == 1 and res["Car"].ap_r40 == pytest.approx(100.0)
    # outside the image (KITTI -1 -1 -1 -1): height 0
    outside = Box3D("Car", [0.0, 0.0, -1.0], [4.0, 2.0, 1.5], 0.0, bbox2d=np.full(4, -1.0))
    assert run([[car(0)]], [[outside]], [[0.9]], classes=("Car",))["Car"].num_det == 0


def test_range_bins_split_gt_and_false_positives():
    near, far = car(10), car(50)
    fp_near = car(-15)  # 15 m away, no GT
    gts = [[near, far]]
    dets = [[near, fp_near, shifted(far, 0.0)]]
    scores = [[0.9, 0.8, 0.7]]
    res = run(gts, dets, scores, classes=("Car",), range_bin=(0.0, 20.0))["Car"]
    assert res.num_gt == 1 and res.num_det == 2  # the near TP and the near FP; the far TP is dropped
    assert res.ap_r40 == pytest.approx(100.0)
    res = run(gts, dets, scores, classes=("Car",), range_bin=(40.0, np.inf))["Car"]
    assert res.num_gt == 1 and res.num_det == 1 and res.ap_r40 == pytest.approx(100.0)
    assert run(gts, dets, scores, classes=("Car",), range_bin=(20.0, 40.0))["Car"].num_gt == 0
