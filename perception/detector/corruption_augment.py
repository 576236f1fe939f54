"""Corruption augmentation for training (robustness-enhancing training): a share of the training samples
gets one random corruption of :mod:`perception.robustness` at a random severity.

Off by default (``train.corruption_augment: 0``), so the shipped recipe is unchanged. Only the corruptions a
cached sample can take (no rig, no earlier frames: :data:`perception.robustness.AUGMENTABLE`) are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perception.detector.data import Sample
from perception.errors import ConfigError
from perception.frame import Frame


def check_names(names: Sequence[str], where: str = "train.corruption_augment_names") -> tuple[str, ...]:
    """The augmentation corruptions (empty: every augmentable one); ConfigError listing the valid ones."""
    from perception.robustness import AUGMENTABLE

    bad = [n for n in names if n not in AUGMENTABLE]
    if bad:
        raise ConfigError(f"corruption(s) {bad} cannot augment cached samples; valid: {', '.join(AUGMENTABLE)}",
                          where)
    return tuple(names) or AUGMENTABLE


def corrupt_sample(s: Sample, names: Sequence[str], rng: np.random.Generator) -> Sample:
    """``s`` under one corruption drawn from ``names`` at a random severity (1-3); labels unchanged."""
    from perception.robustness import corrupt

    name = str(names[int(rng.integers(len(names)))])
    severity = int(rng.integers(1, 4))
    frame = Frame(points=s.points, image=s.image if s.has_camera else None, frame_id="augment")
    out = corrupt(frame, name, severity, seed=int(rng.integers(2**31)))
    has_camera = s.has_camera and out.image is not None
    image = out.image if out.image is not None else np.zeros_like(s.image)
    return Sample(out.points, image, s.lidar2img, s.boxes, s.labels, has_camera)
