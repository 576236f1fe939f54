"""Inference on whole images: pad to a multiple of 16, run the net, sum the stride-8 density map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from perception.crowd.interval import CountInterval
from perception.crowd.model import INPUT_MULTIPLE, STRIDE, CrowdNet

PAD_VALUE = 0.45  # grey: padding must not look like people


@dataclass
class CountResult:
    """Predicted count, its interval and the stride-8 density map (cropped to the image)."""

    count: float
    low: float
    high: float
    density: np.ndarray


def pad_to_stride(image: np.ndarray, stride: int = INPUT_MULTIPLE) -> np.ndarray:
    """(H, W, 3) float image padded at the bottom/right with grey to multiples of ``stride``."""
    h, w = image.shape[:2]
    ph, pw = (-h) % stride, (-w) % stride
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=PAD_VALUE)


@torch.no_grad()
def predict_density(net: CrowdNet, image: np.ndarray) -> np.ndarray:
    """Density map (ceil(H/8), ceil(W/8)) of one (H, W, 3) RGB image (float in [0, 1] or uint8)."""
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(pad_to_stride(image).transpose(2, 0, 1)))[None].float()
    d = net(x)[0, 0].numpy()
    return d[: -(-h // STRIDE), : -(-w // STRIDE)]


def count_image(net: CrowdNet, image: np.ndarray, interval: CountInterval) -> CountResult:
    """Count one image and attach the interval."""
    dens = predict_density(net, image)
    count = float(dens.sum())
    lo, hi = interval.bounds(count)
    return CountResult(count=count, low=lo, high=hi, density=dens)
