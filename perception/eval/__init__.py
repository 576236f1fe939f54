"""Evaluation metrics: rotated IoU, KITTI AP|R40, and calibration / uncertainty metrics."""

from perception.eval.ap import ClassAP, evaluate_ap
from perception.eval.calibration_metrics import (
    box_residuals,
    detection_ece,
    interval_coverage,
    match_correct,
    reliability_table,
)
from perception.eval.iou import bev_distance, bev_iou, iou_3d

__all__ = [
    "ClassAP",
    "bev_distance",
    "bev_iou",
    "box_residuals",
    "detection_ece",
    "evaluate_ap",
    "interval_coverage",
    "iou_3d",
    "match_correct",
    "reliability_table",
]
