"""``CrowdCounter``: the ROS-free inference entry point (model directory in, count + interval + overlay out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from perception.crowd.checkpoint import load_crowd_model
from perception.crowd.predict import CountResult, count_image
from perception.errors import DataError


def resize_rgb(image: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float32 in [0, 1], shrunk (bilinear, as in training) so the longer side is at most
    ``max_side``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}", "image")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        pil = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        image = np.asarray(pil)
    return image.astype(np.float32) / 255.0


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
        """Count an (H, W, 3) uint8 RGB image; returns the result and the resized float image it saw."""
        small = resize_rgb(image, self.cfg.model.max_side)
        return count_image(self.net, small, self.interval), small
