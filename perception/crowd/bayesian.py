"""Bayesian loss for point-annotated crowds (Ma et al., "Bayesian Loss for Crowd Count Estimation with Point
Supervision", ICCV 2019): each head's expected count under its posterior over the density cells should be 1, the
background's 0. No density map is rendered, so no kernel width per head has to be guessed."""

from __future__ import annotations

import numpy as np
import torch


def bayesian_loss(density: torch.Tensor, points: np.ndarray, stride: int, sigma: float,
                  background_ratio: float) -> torch.Tensor:
    """Bayesian loss of one (h, w) density map (cells of ``stride`` input pixels) against ``points`` (N, 2) x, y in
    input pixels: sum over heads of |1 - E[count of head n]| plus |E[count of the background]|.

    The posterior of head n at a cell is a softmax over -d^2 / (2 ``sigma``^2) of the squared distances to every
    head and to a background point, whose squared distance is (``background_ratio`` x shorter input side)^2 over
    the distance to the nearest head (the original's background model). With no heads the loss is |count|.
    """
    h, w = density.shape
    flat = density.reshape(-1)
    if len(points) == 0:
        return flat.sum().abs()
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32))
    ys = torch.arange(h, dtype=torch.float32) * stride + stride / 2
    xs = torch.arange(w, dtype=torch.float32) * stride + stride / 2
    d2 = ((pts[:, 1:2] - ys[None]) ** 2)[:, :, None] + ((pts[:, 0:1] - xs[None]) ** 2)[:, None, :]
    d2 = d2.reshape(len(pts), -1)
    nearest = d2.min(dim=0, keepdim=True).values
    background = (background_ratio * min(h, w) * stride) ** 2 / (nearest + 1e-5)
    posterior = torch.softmax(-torch.cat([d2, background], 0) / (2.0 * sigma ** 2), dim=0)
    expected = posterior @ flat
    target = torch.ones_like(expected)
    target[-1] = 0.0
    return (target - expected).abs().sum()
