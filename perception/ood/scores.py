"""Out-of-distribution scores; every score is oriented so that higher means more unusual.

Per detection (query embedding ``f`` and class logits ``z``), with ``d_c`` the Mahalanobis distance of
``f`` to class ``c`` under a shared covariance (:mod:`perception.ood.gaussian`):

* ``mahalanobis`` = ``min_c d_c`` — far from the nearest known class.
* ``mahavar`` = ``-Var_c(d_c)`` — MahaVar (arXiv 2605.14413): an in-distribution feature is close to one
  class and far from the others (high variance across classes); a feature unlike every class is about
  equally far from all of them (low variance). Negated so that higher = more OOD.
* ``energy`` = ``-logsumexp_c z_c`` — the energy score on the detector's raw (sigmoid-head) class logits.
* ``geometry`` — Mahalanobis distance of the box's point-geometry descriptor (:mod:`perception.ood.geometry`) to
  the training detections of the detection's class (``argmax_c z_c``; one Gaussian per class).
* ``energy_geometry`` — ``energy`` and ``geometry`` each standardised on the training detections, summed: what
  the network thinks plus what the points inside the box look like.

Per frame: ``embedding`` (Mahalanobis distance of the frame embedding, pooled BEV + image features, to the
training frames) and ``mean_<score>`` (mean of a detection score over the frame's detections); see
:class:`perception.ood.monitor.OodMonitor` for the combined ``frame`` score.
"""

from __future__ import annotations

import numpy as np

from perception.errors import DataError

#: Per-detection scores, in report order.
DETECTION_SCORES: tuple[str, ...] = ("mahalanobis", "mahavar", "energy", "geometry", "energy_geometry")
#: Scores that need the class logits.
LOGIT_SCORES: tuple[str, ...] = ("energy", "geometry", "energy_geometry")
#: Scores that need the point-geometry descriptors.
GEOMETRY_SCORES: tuple[str, ...] = ("geometry", "energy_geometry")
#: Scores that need only the query feature (the others need logits too).
FEATURE_SCORES: tuple[str, ...] = ("mahalanobis", "mahavar")


def mahalanobis_score(distances: np.ndarray) -> np.ndarray:
    """``min_c d_c`` of class-wise distances (N, C) → (N,)."""
    d = _as_matrix(distances, "mahalanobis_score")
    return d.min(axis=1)


def mahavar_score(distances: np.ndarray) -> np.ndarray:
    """``-Var_c(d_c)`` (population variance across classes) of class-wise distances (N, C) → (N,)."""
    d = _as_matrix(distances, "mahavar_score")
    return -d.var(axis=1)


def energy_score(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp(logits)`` over classes, (N, C) → (N,); numerically stable."""
    z = _as_matrix(logits, "energy_score")
    m = z.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))


def _as_matrix(a: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 1:
        raise DataError(f"expected an (N, C) array with C >= 1, got shape {a.shape}", where)
    return a
