"""PyTorch eager engine (the reference every exported engine is checked against)."""

from __future__ import annotations

import numpy as np
import torch

from perception.detector.model import FusionNet


class TorchEngine:
    """Runs :class:`FusionNet` in eval mode under ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, net: FusionNet, num_threads: int | None = None) -> None:
        self.net = net.eval()
        if num_threads:
            torch.set_num_threads(num_threads)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every NetOutput field as numpy."""
        with torch.inference_mode():
            out = self.net(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out._asdict().items()}
