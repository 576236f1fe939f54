"""Bayesian loss: a density with one unit of mass on each head's cell scores better than none, double or misplaced
mass; no heads means |count|."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perception.crowd.bayesian import bayesian_loss


def unit_map(points: np.ndarray, shape: tuple[int, int], stride: int) -> torch.Tensor:
    d = torch.zeros(shape)
    for x, y in points:
        d[int(y // stride), int(x // stride)] += 1.0
    return d


def test_unit_mass_on_each_head_beats_none_double_and_misplaced() -> None:
    pts = np.array([[20.0, 20.0], [100.0, 60.0], [180.0, 20.0]])
    good = unit_map(pts, (12, 32), 8)
    loss = lambda d: float(bayesian_loss(d, pts, 8, 8.0, 1.0))  # noqa: E731
    assert loss(good) < 0.5
    assert loss(torch.zeros(12, 32)) == pytest.approx(3.0, abs=1e-4)
    assert loss(good) < loss(2 * good) and loss(good) < loss(good.roll(shifts=10, dims=1))


def test_no_heads_is_the_absolute_count_and_gradients_flow() -> None:
    d = torch.full((4, 4), 0.25, requires_grad=True)
    assert float(bayesian_loss(d, np.zeros((0, 2)), 8, 8.0, 1.0)) == pytest.approx(4.0)
    loss = bayesian_loss(d, np.array([[3.0, 5.0]]), 8, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0
