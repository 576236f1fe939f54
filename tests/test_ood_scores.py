"""OOD scores and Gaussian fitting on synthetic data: OOD points must score higher."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.errors import DataError
from perception.ood.gaussian import fit_gaussian_model, ledoit_wolf_shrinkage, shrunk_covariance
from perception.ood.metrics import auroc
from perception.ood.scores import energy_score, mahalanobis_score, mahavar_score


def _two_classes(rng: np.random.Generator, n: int = 400, dim: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    means = np.zeros((2, dim))
    means[0, 0], means[1, 0] = -6.0, 6.0
    labels = rng.integers(0, 2, n)
    x = means[labels] + rng.normal(size=(n, dim))
    return x, labels, means


def test_class_gaussians_recover_means_and_whiten() -> None:
    rng = np.random.default_rng(0)
    x, labels, means = _two_classes(rng, n=4000)
    model = fit_gaussian_model(x, labels, 2)
    assert np.allclose(model.means, means, atol=0.1)
    # unit within-class covariance: squared distances of in-class points average ~dim
    d = model.distances(x)
    own = d[np.arange(len(x)), labels]
    assert abs(np.mean(own ** 2) - x.shape[1]) < 0.5


def test_mahalanobis_and_mahavar_flag_points_unlike_every_class() -> None:
    rng = np.random.default_rng(1)
    x, labels, _ = _two_classes(rng)
    model = fit_gaussian_model(x, labels, 2)
    id_test, _, _ = _two_classes(rng, n=200)
    far = rng.normal(size=(200, 8))
    far[:, 1] += 10.0  # far from both classes, in a direction no class occupies
    between = rng.normal(size=(200, 8))  # halfway between the two classes: equally far from both
    d_id, d_far, d_between = model.distances(id_test), model.distances(far), model.distances(between)
    assert auroc(mahalanobis_score(d_id), mahalanobis_score(d_far)) > 0.99
    assert auroc(mahalanobis_score(d_id), mahalanobis_score(d_between)) > 0.99
    assert auroc(mahavar_score(d_id), mahavar_score(d_between)) > 0.99
    assert np.all(mahavar_score(d_id) <= 0.0)


def test_mahavar_is_negative_variance_across_classes() -> None:
    d = np.array([[1.0, 5.0, 9.0], [4.0, 4.0, 4.0]])
    assert np.allclose(mahavar_score(d), [-32.0 / 3.0, 0.0])
    assert np.allclose(mahalanobis_score(d), [1.0, 4.0])


def test_energy_score_is_negative_logsumexp_and_stable() -> None:
    logits = np.array([[0.0, 0.0], [1000.0, 0.0], [-5.0, -7.0]])
    e = energy_score(logits)
    assert e[0] == pytest.approx(-math.log(2.0))
    assert e[1] == pytest.approx(-1000.0)
    assert e[2] == pytest.approx(-math.log(math.exp(-5.0) + math.exp(-7.0)))
    # a confident detection (one large logit) has lower energy than an unsure one
    assert energy_score(np.array([[6.0, -4.0, -4.0]]))[0] < energy_score(np.array([[-2.0, -2.0, -2.5]]))[0]


def test_ledoit_wolf_shrinks_more_when_samples_are_few() -> None:
    rng = np.random.default_rng(2)
    few = rng.normal(size=(20, 50))
    many = rng.normal(size=(5000, 5)) * np.array([10.0, 5.0, 1.0, 0.5, 0.1])
    a_few = ledoit_wolf_shrinkage(few - few.mean(0))
    a_many = ledoit_wolf_shrinkage(many - many.mean(0))
    assert a_few > 0.5 > 0.05 > a_many
    cov, a = shrunk_covariance(few - few.mean(0))
    assert a == pytest.approx(a_few)
    assert np.linalg.eigvalsh(cov).min() > 0.0  # invertible although n < d


def test_fit_rejects_bad_input() -> None:
    x = np.random.default_rng(3).normal(size=(10, 4))
    with pytest.raises(DataError):
        fit_gaussian_model(x, np.zeros(10, int), 2)  # class 1 has no samples
    with pytest.raises(DataError):
        fit_gaussian_model(np.full((10, 4), np.nan))
    model = fit_gaussian_model(x)
    with pytest.raises(DataError):
        model.distances(np.zeros((3, 5)))
