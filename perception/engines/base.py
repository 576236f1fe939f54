"""The Engine protocol: network inputs (numpy) in, raw head outputs (numpy) out."""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Input names of the network, in export order.
INPUT_NAMES = ("pillar_features", "num_points", "coords", "image", "lidar2img", "camera_valid")


class Engine(Protocol):
    """A loaded network ready to run one frame (batch 1)."""

    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs keyed by :data:`INPUT_NAMES` → outputs keyed by ``postprocess.OUTPUT_NAMES``."""
        ...
