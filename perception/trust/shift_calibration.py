"""Calibration under shift: a second :class:`~perception.trust.calibration.Calibration`, fitted on frames whose
LiDAR input the monitors flagged (a LiDAR health check, or the OOD frame score of the embedding's LiDAR part),
used in place of the clean one whenever they flag a frame's LiDAR input.

The clean calibration is fitted on clean frames; under a corruption the detector's scores mean something
else (fewer true positives at the same score) and its boxes are worse than their σ says. The flagged-input
calibration re-tempers the raw scores (per class, ``sigmoid(logit / T + b)``) and scales the (already
calibrated) variances, so it needs nothing the monitors do not already provide. It is fitted on corrupted
frames of ``sim:calib`` (``perception robustness --data sim:calib --fit-shift-calibration``), never on the
frames it is measured on.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from perception.frame import Detection
from perception.trust.calibration import Calibration

#: File name of the flagged-input calibration beside the model's ``calibration.json``.
SHIFT_CALIBRATION_FILE = "calibration_flagged.json"


def shift_calibration_path(model_dir: str | Path) -> Path:
    """Where a model keeps its flagged-input calibration."""
    return Path(model_dir) / SHIFT_CALIBRATION_FILE


def apply_shift_calibration(detections: list[Detection], calibration: Calibration) -> list[Detection]:
    """Copies of ``detections`` (of a flagged frame) with the flagged-input calibration: the probability from the
    raw score, the covariance scaled on top of the clean calibration's."""
    out = []
    for d in detections:
        s = min(max(d.score, 1e-6), 1.0 - 1e-6)
        p = float(calibration.probability(np.array(math.log(s / (1.0 - s))), d.label))
        cov = np.diag(calibration.scale_variance(np.diag(d.covariance)))
        out.append(dataclasses.replace(d, probability=p, covariance=cov))
    return out


def calibrate_for_flags(detections: list[Detection], flagged: bool,
                        calibration: Calibration | None) -> list[Detection]:
    """The detections to publish: re-calibrated when the input is ``flagged`` and a flagged-input calibration
    exists, as they are otherwise."""
    if not flagged or calibration is None:
        return detections
    return apply_shift_calibration(detections, calibration)
