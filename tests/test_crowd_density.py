"""Density maps preserve head counts; adaptive sigmas follow head spacing."""

from __future__ import annotations

import numpy as np
import pytest

from perception.crowd.density import adaptive_sigmas, render_density, sum_pool


def test_density_sums_to_count_including_border_heads() -> None:
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform([0, 0], [120, 80], size=(40, 2)), [[0.2, 0.3], [119.9, 79.9], [60, 0.0]]])
    sig = adaptive_sigmas(pts, knn=3, beta=0.3, sigma_min=2.0, sigma_max=16.0)
    dens = render_density(pts, sig, 80, 120)
    assert dens.shape == (80, 120)
    assert dens.min() >= 0
    assert dens.sum() == pytest.approx(len(pts), abs=1e-3)
    assert sum_pool(dens, 8).sum() == pytest.approx(len(pts), abs=1e-3)


def test_heads_outside_the_image_are_not_counted() -> None:
    pts = np.array([[10.0, 10.0], [-5.0, 3.0], [30.0, 99.0]])
    dens = render_density(pts, np.full(3, 3.0), 40, 40)
    assert dens.sum() == pytest.approx(1.0, abs=1e-5)


def test_sigmas_grow_with_spacing_and_are_clipped() -> None:
    dense = np.array([[0, 0], [4, 0], [0, 4], [4, 4]], dtype=float)
    sparse = dense * 10
    s_dense = adaptive_sigmas(dense, knn=2, beta=0.3, sigma_min=0.5, sigma_max=100.0)
    s_sparse = adaptive_sigmas(sparse, knn=2, beta=0.3, sigma_min=0.5, sigma_max=100.0)
    assert np.all(s_sparse > s_dense)
    clipped = adaptive_sigmas(sparse * 100, knn=2, beta=0.3, sigma_min=2.0, sigma_max=16.0)
    assert np.all(clipped == 16.0)
    assert adaptive_sigmas(np.zeros((1, 2)), sigma_single=6.0).tolist() == [6.0]
    assert adaptive_sigmas(np.zeros((0, 2))).size == 0


def test_sum_pool_rejects_non_multiple_sizes() -> None:
    with pytest.raises(ValueError):
        sum_pool(np.zeros((10, 16)), 8)
