"""KITTI-style average precision of 3D / BEV detections, with KITTI's difficulty and ignore rules.

Two AP figures per class: ``ap`` follows the official devkit (OpenPCDet's ``kitti_object_eval_python``):
the precision is sampled at up to 41 score thresholds picked from the true positives' scores by
``get_thresholds`` (the first true positive's score is one of them) and AP|R40 is the mean of the
interpolated precision at thresholds 1..40 -- this is the figure published results use. ``ap_r40``
is the exact AP|R40: interpolated precision at recall exactly k/40, k = 1..40. With few ground-truth
objects (< 40) the devkit figure is coarse: with N objects it samples at most N recall points, the
first of which is dropped, so it reads low (4 of 4 found at precision 1 gives 7.5).

Matching is per frame and greedy: detections in descending score order each take the
highest-IoU unmatched ground truth with IoU >= the class threshold, preferring a counted GT over
an ignored one. A detection that takes an ignored GT (outside the difficulty, no LiDAR points, or
a neighbouring class: Van for Car, Person_sitting for Pedestrian) is neither TP nor FP. Because
higher-scored detections are matched first, TP/FP labels do not depend on the score threshold and
the precision/recall curve is a cumulative sum over all detections sorted by score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from perception.errors import ConfigError, DataError
from perception.eval.iou import bev_iou, iou_3d
from perception.frame import Box3D, boxes_to_array

#: KITTI's official IoU thresholds for AP.
KITTI_IOU_THRESHOLDS: Mapping[str, float] = MappingProxyType({"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5})

#: Ground-truth classes whose boxes are ignored (not missed, not false positives) for a detected class.
NEIGHBOUR_CLASSES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"Car": ("Van",), "Pedestrian": ("Person_sitting",)}
)


@dataclass(frozen=True)
class Difficulty:
    """KITTI difficulty: a GT box counts when its 2D height, occlusion and truncation are all within limits."""

    min_height: float  # pixels of bbox2d height
    max_occlusion: int
    max_truncation: float


#: KITTI's difficulty levels; ``"none"`` (every GT with LiDAR points) is handled separately.
DIFFICULTIES: Mapping[str, Difficulty] = MappingProxyType({
    "easy": Difficulty(40.0, 0, 0.15),
    "moderate": Difficulty(25.0, 1, 0.30),
    "hard": Difficulty(25.0, 2, 0.50),
})

#: Number of recall sample points of AP|R40.
NUM_RECALL_POINTS = 40


@dataclass
class ClassAP:
    """AP of one class with the curve it came from.

    ``precision`` and ``recall`` are the raw curve after each counted detection (TP or FP) in
    descending score order, ``scores`` the matching score thresholds. ``ap`` is NaN when there is
    no counted ground truth.
    """

    ap: float  # percent, 0..100, devkit convention (``ap_devkit``)
    precision: np.ndarray
    recall: np.ndarray
    num_gt: int  # counted (not ignored) ground truth boxes
    num_det: int  # counted detections: TP + FP
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ap_r40: float = float("nan")  # percent, exact AP|R40 (``ap_r40``)


def _box_height_px(box: Box3D) -> float:
    """Height of the box's 2D image box in pixels; +inf when it has none (passes any height rule)."""
    if box.bbox2d is None:
        return float("inf")
    return float(box.bbox2d[3] - box.bbox2d[1])


def gt_counts(box: Box3D, difficulty: str) -> bool:
    """Whether a GT box of the evaluated class counts at ``difficulty`` (else it is ignored).

    A box with ``num_points == 0`` never counts; ``-1`` (unknown) does not disqualify it. As in the
    devkit, a box exactly at the minimum height is too small.
    """
    if box.num_points == 0:
        return False
    if difficulty == "none":
        return True
    rule = DIFFICULTIES[difficulty]
    return (
        _box_height_px(box) > rule.min_height
        and box.occlusion <= rule.max_occlusion
        and box.truncation <= rule.max_truncation
    )


def greedy_match(
    iou: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray, gt_ignored: np.ndarray | None = None
) -> np.ndarray:
    """Greedy score-ordered matching of D detections to G ground truths; index of the GT per detection, -1 if none.

    ``iou`` is (D, G); ``threshold`` a scalar or a (D,) per-detection minimum IoU (inclusive). Each GT
    is taken at most once; a detection takes its highest-IoU free GT, preferring GT with
    ``gt_ignored`` false. Equal scores keep the input order.
    """
    iou = np.asarray(iou, dtype=np.float64)
    num_det, num_gt = iou.shape
    matched = np.full(num_det, -1, dtype=np.int64)
    if num_det == 0 or num_gt == 0:
        return matched
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (num_det,))
    ignored = np.zeros(num_gt, dtype=bool) if gt_ignored is None else np.asarray(gt_ignored, dtype=bool)
    free = np.ones(num_gt, dtype=bool)
    for d in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        ok = free & (iou[d] >= thr[d])
        if not ok.any():
            continue
        pool = ok & ~ignored if (ok & ~ignored).any() else ok
        g = int(np.argmax(np.where(pool, iou[d], -np.inf)))
        matched[d] = g
        free[g] = False
    return matched


def ap_r40(tp: np.ndarray, num_gt: int) -> float:
    """AP|R40 in percent from TP flags (1 TP, 0 FP) of counted detections sorted by descending score.

    Mean over recall r = 1/40 .. 40/40 of the interpolated precision max{precision at recall >= r}
    (0 where recall r is never reached). Recall is compared exactly in integers.
    """
    if num_gt <= 0:
        return float("nan")
    tp = np.asarray(tp, dtype=np.int64)
    if tp.size == 0:
        return 0.0
    tp_cum = np.cumsum(tp)
    precision = tp_cum / np.arange(1, tp.size + 1)
    # Interpolated precision at each curve point: best precision at this recall or higher.
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    # First curve point whose recall reaches k / 40, i.e. 40 * tp >= k * num_gt (tp_cum never decreases).
    first = np.searchsorted(NUM_RECALL_POINTS * tp_cum, np.arange(1, NUM_RECALL_POINTS + 1) * num_gt, side="left")
    total = best_after[first[first < tp.size]].sum()
    return float(100.0 * total / NUM_RECALL_POINTS)


def devkit_thresholds(tp_scores: np.ndarray, num_gt: int, num_points: int = NUM_RECALL_POINTS + 1) -> np.ndarray:
    """The devkit's score thresholds (``get_thresholds``): from the true positives' scores, descending, keep
    the first and then each one whose recall is the closest to the next of ``num_points`` evenly spaced
    recall levels (the last true positive always closes a step). Same float arithmetic as the devkit."""
    scores = np.sort(np.asarray(tp_scores, dtype=np.float64))[::-1]
    current, kept = 0.0, []
    for i, score in enumerate(scores):
        left = (i + 1) / num_gt
        right = (i + 2) / num_gt if i < len(scores) - 1 else left
        if (right - current) < (current - left) and i < len(scores) - 1:
            continue
        kept.append(score)
        current += 1 / (num_points - 1.0)
    return np.array(kept[:num_points], dtype=np.float64)


def ap_devkit(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """AP|R40 in percent as the devkit computes it, from TP flags and scores of the counted detections.

    Precision is taken at each :func:`devkit_thresholds` threshold (every counted detection scoring at
    least it), made monotone from the right, and its entries 1..40 are averaged over 40 (entry 0, the
    first true positive, is left out; missing entries are 0).
    """
    if num_gt <= 0:
        return float("nan")
    tp = np.asarray(tp, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = devkit_thresholds(scores[tp], num_gt)
    if thresholds.size == 0:
        return 0.0
    precision = np.zeros(NUM_RECALL_POINTS + 1)
    for i, t in enumerate(thresholds):
        above = scores >= t
        precision[i] = tp[above].sum() / above.sum()
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(100.0 * precision[1:].sum() / NUM_RECALL_POINTS)


def _check_inputs(gt_boxes: list, det_boxes: list, det_scores: list, metric: str, difficulty: str) -> None:
    """Raise on mismatched frame counts, score lengths or unknown option names."""
    if metric not in ("3d", "bev"):
        raise ConfigError(f"unknown metric {metric!r}; expected '3d' or 'bev'", where="evaluate_ap: metric")
    if difficulty != "none" and difficulty not in DIFFICULTIES:
        raise ConfigError(
            f"unknown difficulty {difficulty!r}; expected one of {[*DIFFICULTIES, 'none']}",
            where="evaluate_ap: difficulty",
        )
    if not len(gt_boxes) == len(det_boxes) == len(det_scores):
        raise DataError(
            f"frame counts differ: {len(gt_boxes)} GT, {len(det_boxes)} detection, {len(det_scores)} score lists",
            where="evaluate_ap",
        )
    for i, (boxes, scores) in enumerate(zip(det_boxes, det_scores)):
        if len(boxes) != len(np.atleast_1d(scores)):
            raise DataError(f"{len(boxes)} detections but {len(np.atleast_1d(scores))} scores", where=f"frame {i}")


def _in_range(box: Box3D, range_bin: tuple[float, float] | None) -> bool:
    """Whether the box centre's horizontal distance from the sensor lies in ``[lo, hi)`` (always, without a bin)."""
    if range_bin is None:
        return True
    dist = float(np.hypot(box.center[0], box.center[1]))
    return range_bin[0] <= dist < range_bin[1]


def _frame_labels(
    gts: list[Box3D], dets: list[Box3D], scores: np.ndarray, cls: str, threshold: float, metric: str, difficulty: str,
    range_bin: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and TP flags of the counted detections of ``cls`` in one frame, and its number of counted GT."""
    det_idx = [i for i, d in enumerate(dets) if d.label == cls]
    if difficulty != "none":
        # KITTI: a detection smaller in the image than the difficulty allows (or outside it) plays no part:
        # neither TP nor FP, and it takes no GT (the GT stays counted, so it cannot be found by it).
        min_height = DIFFICULTIES[difficulty].min_height
        det_idx = [i for i in det_idx if _box_height_px(dets[i]) >= min_height]
    relevant = [g for g in gts if g.label == cls or g.label in NEIGHBOUR_CLASSES.get(cls, ())]
    gt_ignored = np.array([g.label != cls or not gt_counts(g, difficulty) or not _in_range(g, range_bin)
                           for g in relevant], dtype=bool)
    num_gt = int((~gt_ignored).sum())
    if not det_idx:
        return np.zeros(0), np.zeros(0, dtype=bool), num_gt
    det_scores = np.asarray(scores, dtype=np.float64)[det_idx]
    det_arr = boxes_to_array([dets[i] for i in det_idx])
    iou_fn = iou_3d if metric == "3d" else bev_iou
    matched = greedy_match(iou_fn(det_arr, boxes_to_array(relevant)), det_scores, threshold, gt_ignored)
    is_tp = matched >= 0
    is_tp[is_tp] = ~gt_ignored[matched[is_tp]]
    counted = (matched < 0) | is_tp  # a detection on an ignored GT is dropped
    if range_bin is not None:  # an unmatched detection counts as FP only in its own range bin
        counted &= is_tp | np.array([_in_range(dets[i], range_bin) for i in det_idx], dtype=bool)
    return det_scores[counted], is_tp[counted], num_gt


def evaluate_ap(
    gt_boxes: list[list[Box3D]],
    det_boxes: list[list[Box3D]],
    det_scores: list[np.ndarray],
    classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
    iou_thresholds: Mapping[str, float] = KITTI_IOU_THRESHOLDS,
    metric: str = "3d",
    difficulty: str = "moderate",
    range_bin: tuple[float, float] | None = None,
) -> dict[str, ClassAP]:
    """KITTI AP per class over a set of frames (lists indexed by frame): ``ap`` the devkit's AP|R40,
    ``ap_r40`` the exact one.

    ``metric`` is ``"3d"`` or ``"bev"``; ``difficulty`` is ``"easy"``, ``"moderate"``, ``"hard"`` or
    ``"none"`` (every GT with LiDAR points, for data without 2D boxes). DontCare and other classes'
    boxes play no part. With ``range_bin = (lo, hi)`` only GT whose centre lies ``lo <= hypot(x, y) < hi``
    metres from the sensor count (the others are ignored like a neighbouring class), and an unmatched
    detection is a false positive only inside the bin.
    """
    _check_inputs(gt_boxes, det_boxes, det_scores, metric, difficulty)
    missing = [c for c in classes if c not in iou_thresholds]
    if missing:
        raise ConfigError(f"no IoU threshold for {missing}", where="evaluate_ap: iou_thresholds")
    results: dict[str, ClassAP] = {}
    for cls in classes:
        all_scores, all_tp, num_gt = [], [], 0
        for gts, dets, scores in zip(gt_boxes, det_boxes, det_scores):
            s, tp, n = _frame_labels(gts, dets, scores, cls, float(iou_thresholds[cls]), metric, difficulty,
                                     range_bin)
            all_scores.append(s)
            all_tp.append(tp)
            num_gt += n
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
        order = np.argsort(-scores, kind="stable")
        scores, tp = scores[order], tp[order]
        tp_cum = np.cumsum(tp)
        precision = tp_cum / np.arange(1, len(tp) + 1)
        recall = tp_cum / num_gt if num_gt > 0 else np.full(len(tp), np.nan)
        results[cls] = ClassAP(
            ap=ap_devkit(tp, scores, num_gt), precision=precision, recall=recall, num_gt=num_gt, num_det=len(tp),
            scores=scores, ap_r40=ap_r40(tp, num_gt),
        )
    return results
