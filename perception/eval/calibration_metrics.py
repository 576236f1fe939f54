"""How trustworthy are the scores and the boxes' uncertainties: detection ECE, reliability, interval coverage.

Detection calibration follows Küppers et al. 2020 ("Multivariate Confidence Calibration for
Object Detection"): a detection is *correct* when it matches a same-class ground truth, and a
calibrated confidence equals the precision of the detections that carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from perception.errors import ConfigError, DataError
from perception.eval.ap import greedy_match
from perception.eval.iou import bev_iou, iou_3d
from perception.frame import Box3D, boxes_to_array

#: IoU a detection needs to count as correct for calibration (looser than KITTI's AP thresholds).
CALIBRATION_IOU_THRESHOLDS: Mapping[str, float] = MappingProxyType({"Car": 0.5, "Pedestrian": 0.25, "Cyclist": 0.25})


def match_correct(
    gt_boxes: list[Box3D],
    det_boxes: list[Box3D],
    det_scores: np.ndarray,
    iou_thresholds: Mapping[str, float] = CALIBRATION_IOU_THRESHOLDS,
    metric: str = "3d",
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection of one frame: whether it is correct (D,) bool, and the index of its GT (D,) int (-1 if none).

    Greedy by descending score; a detection is correct when it takes a free GT of its own class
    with IoU >= that class's threshold. Each GT is taken once; GT of classes without a threshold
    (Van, DontCare, ...) are never matched.
    """
    if metric not in ("3d", "bev"):
        raise ConfigError(f"unknown metric {metric!r}; expected '3d' or 'bev'", where="match_correct: metric")
    scores = np.atleast_1d(np.asarray(det_scores, dtype=np.float64))
    if len(scores) != len(det_boxes):
        raise DataError(f"{len(det_boxes)} detections but {len(scores)} scores", where="match_correct")
    unknown = sorted({d.label for d in det_boxes} - set(iou_thresholds))
    if unknown:
        raise ConfigError(f"no IoU threshold for detected classes {unknown}", where="match_correct: iou_thresholds")
    if not det_boxes or not gt_boxes:
        return np.zeros(len(det_boxes), dtype=bool), np.full(len(det_boxes), -1, dtype=np.int64)
    iou_fn = iou_3d if metric == "3d" else bev_iou
    iou = iou_fn(boxes_to_array(det_boxes), boxes_to_array(gt_boxes))
    same_class = np.array([d.label for d in det_boxes])[:, None] == np.array([g.label for g in gt_boxes])[None, :]
    iou = np.where(same_class, iou, -1.0)
    thresholds = np.array([iou_thresholds[d.label] for d in det_boxes], dtype=np.float64)
    matched = greedy_match(iou, scores, thresholds)
    return matched >= 0, matched


def _check_conf(confidences: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten confidence / correctness arrays."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape:
        raise DataError(f"{conf.size} confidences but {hit.size} correctness flags", where="calibration metrics")
    if conf.size and (np.nanmin(conf) < 0.0 or np.nanmax(conf) > 1.0 or np.isnan(conf).any()):
        raise DataError("confidences must lie in [0, 1]", where="calibration metrics")
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}", where="calibration metrics: n_bins")
    return conf, hit


def reliability_table(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per equal-width confidence bin over [0, 1]: ``lo``, ``hi``, ``count``, mean ``conf``, ``acc`` (precision).

    Bins are [lo, hi) except the last, which includes 1. ``conf`` and ``acc`` are NaN in empty bins.
    """
    conf, hit = _check_conf(confidences, correct, n_bins)
    index = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(index, weights=hit, minlength=n_bins)
    table = []
    for b in range(n_bins):
        n = int(count[b])
        table.append({
            "lo": b / n_bins,
            "hi": (b + 1) / n_bins,
            "count": n,
            "conf": conf_sum[b] / n if n else float("nan"),
            "acc": hit_sum[b] / n if n else float("nan"),
        })
    return table


def detection_ece(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Detection expected calibration error: sum over bins of |B|/N * |mean confidence - precision|.

    NaN when there are no detections.
    """
    table = reliability_table(confidences, correct, n_bins)
    total = sum(row["count"] for row in table)
    if total == 0:
        return float("nan")
    return float(sum(row["count"] / total * abs(row["conf"] - row["acc"]) for row in table if row["count"]))


def interval_coverage(errors: np.ndarray, sigmas: np.ndarray, k: float) -> np.ndarray:
    """Per parameter column: share of rows with |error| <= k * sigma; (K,) for (N, K) input, () for (N,)."""
    err = np.abs(np.asarray(errors, dtype=np.float64))
    sig = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), err.shape)
    if err.shape[0] == 0:
        raise DataError("no samples to measure coverage on", where="interval_coverage")
    return np.mean(err <= k * sig, axis=0)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap angles (radians) to [-pi, pi)."""
    return np.mod(np.asarray(angle, dtype=np.float64) + np.pi, 2.0 * np.pi) - np.pi


def box_residuals(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``gt - pred`` for (N, 7) ``[x, y, z, l, w, h, yaw]`` boxes, yaw error wrapped to [-pi, pi).

    The heading is directed: a box predicted backwards has a yaw error near pi, not 0.
    """
    gt, pred = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 2 or gt.shape[1] != 7:
        raise DataError(f"expected two (N, 7) arrays, got {gt.shape} and {pred.shape}", where="box_residuals")
    res = gt - pred
    res[:, 6] = wrap_angle(res[:, 6])
    return res
