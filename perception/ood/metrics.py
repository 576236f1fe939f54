"""Detection-quality metrics of an OOD score: AUROC, FPR at 95 % TPR, and the matching threshold.

Convention: scores are higher for OOD. In-distribution (ID) samples are the positives that must be
kept: a sample is accepted as ID when ``score <= threshold``; TPR is the share of ID samples accepted
and FPR the share of OOD samples wrongly accepted.
"""

from __future__ import annotations

import math

import numpy as np

from perception.errors import DataError


def _scores(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    if len(a) == 0:
        raise DataError("no scores", name)
    if not np.isfinite(a).all():
        raise DataError("scores must be finite", name)
    return a


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Probability that a random OOD sample scores higher than a random ID sample (ties count 1/2)."""
    a, b = _scores(id_scores, "auroc.id_scores"), _scores(ood_scores, "auroc.ood_scores")
    allv = np.concatenate([a, b])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks of ties (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(allv)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    r_ood = ranks[len(a):].sum()
    return float((r_ood - len(b) * (len(b) + 1) / 2.0) / (len(a) * len(b)))


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Smallest observed ID score ``t`` with at least ``tpr`` of the ID scores ``<= t``."""
    if not 0.0 < tpr <= 1.0:
        raise DataError(f"tpr must be in (0, 1], got {tpr}", "threshold_at_tpr.tpr")
    a = np.sort(_scores(id_scores, "threshold_at_tpr.id_scores"))
    k = max(int(math.ceil(tpr * len(a) - 1e-9)), 1)
    return float(a[k - 1])


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD samples accepted as ID (``score <= threshold``) at the threshold keeping ``tpr`` of ID."""
    t = threshold_at_tpr(id_scores, tpr)
    b = _scores(ood_scores, "fpr_at_tpr.ood_scores")
    return float(np.mean(b <= t))
