"""AUROC and FPR@95TPR against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import DataError
from perception.ood.metrics import auroc, fpr_at_tpr, threshold_at_tpr


def test_auroc_hand_computed() -> None:
    # pairs (ood > id): (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); (0.35 < 0.4) -> 3 / 4
    assert auroc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(0.75)
    # ties count one half: (2 vs 2) -> 0.5, the other three pairs 1 -> 3.5 / 4
    assert auroc([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.875)
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == pytest.approx(0.5)


def test_auroc_matches_pairwise_count_on_random_data() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 20, 60).astype(float), rng.integers(5, 25, 45).astype(float)
    pairs = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
    assert auroc(a, b) == pytest.approx(pairs)


def test_threshold_and_fpr_at_95_tpr_hand_computed() -> None:
    id_scores = np.arange(1.0, 21.0)  # 20 ID scores: 19 of them (95 %) are <= 19
    assert threshold_at_tpr(id_scores, 0.95) == 19.0
    # OOD accepted as ID: 18.5 and 19 (<= 19) -> 2 of 4
    assert fpr_at_tpr(id_scores, [18.5, 19.0, 19.5, 25.0]) == pytest.approx(0.5)
    assert fpr_at_tpr(id_scores, [30.0, 40.0]) == 0.0
    assert threshold_at_tpr([5.0, 1.0, 3.0], 1.0) == 5.0
    assert threshold_at_tpr([5.0, 1.0, 3.0], 0.5) == 3.0  # ceil(1.5) = 2 smallest scores


def test_metrics_reject_empty_or_nonfinite() -> None:
    with pytest.raises(DataError):
        auroc([], [1.0])
    with pytest.raises(DataError):
        fpr_at_tpr([1.0, np.nan], [1.0])
    with pytest.raises(DataError):
        threshold_at_tpr([1.0], 0.0)
