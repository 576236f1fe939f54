"""``CrowdCounter``: the ROS-free inference entry point (model directory in, count + interval + overlay out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.data import MIN_SIDE, shrink
from perception.crowd.predict import CountResult, count_image
from perception.errors import DataError


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a uint8 colour, grey ((H, W) or (H, W, 1)) or RGBA image; DataError (naming
    ``image``) for other types and shapes and for images with a side below :data:`MIN_SIDE` pixels."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise DataError(f"expected a uint8 image array, got {getattr(image, 'dtype', type(image).__name__)}",
                        "image")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {image.shape}", "image")
    if min(image.shape[:2]) < MIN_SIDE:
        raise DataError(f"image {image.shape[1]}x{image.shape[0]} is smaller than {MIN_SIDE} px: too small to count "
                        "people in", "image")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def resize_rgb(image: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 image (see :func:`as_rgb`) -> float32 RGB in [0, 1], shrunk (bilinear, as in training) so the longer
    side is at most ``max_side`` (huge frames, e.g. 8k, are shrunk like any other)."""
    small, _ = shrink(as_rgb(image), max_side)
    return small.astype(np.float32) / 255.0


def _jet(v: np.ndarray) -> np.ndarray:
    """Jet colour map of values in [0, 1] -> (..., 3) floats."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def density_overlay(image: np.ndarray, density: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` (float [0, 1] or uint8) blended with the upsampled, max-normalised density."""
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    h, w = img.shape[:2]
    stride = 8
    up = np.kron(density, np.ones((stride, stride), np.float32))[:h, :w]
    if up.shape != (h, w):
        up = np.pad(up, ((0, h - up.shape[0]), (0, w - up.shape[1])))
    v = up / max(float(up.max()), 1e-6)
    a = (alpha * np.sqrt(v))[..., None]  # empty areas stay visible
    out = img * (1 - a) + _jet(v) * a
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


class CrowdCounter:
    """Loads a crowd model directory once; call with an RGB uint8 image to get a :class:`CountResult`."""

    def __init__(self, model_dir: str | Path, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.net, self.cfg, self.interval = load_crowd_model(model_dir)
        self.model_dir = Path(model_dir)

    @property
    def level(self) -> float:
        """Nominal coverage of the count interval."""
        return self.interval.level

    def __call__(self, image: np.ndarray) -> tuple[CountResult, np.ndarray]:
        """Count a uint8 RGB (or grey / RGBA) image; returns the result and the resized float image it saw.
        Images smaller than :data:`MIN_SIDE` px or of another type raise DataError."""
        small = resize_rgb(image, self.cfg.model.max_side)
        return count_image(self.net, small, self.interval), small
