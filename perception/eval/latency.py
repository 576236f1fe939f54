"""Per-stage latency of the PyTorch model: LiDAR branch, camera branch, decoder."""

from __future__ import annotations

import time

import numpy as np
import torch

from perception.detector.lidar import scatter_to_bev
from perception.detector.model import FusionNet


def torch_stage_latency(net: FusionNet, inputs: dict[str, np.ndarray], repeats: int = 10) -> dict[str, float]:
    """Median ms of the LiDAR branch (pillars → heatmap), camera branch (image encoder) and the decoder
    (whole network minus both branches) for one prepared frame."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    nx, ny = net.cfg.grid_size
    bsz = t["image"].shape[0]

    def lidar() -> None:
        p = net.pfn(t["pillar_features"], t["num_points"])
        net.heatmap_head(net.backbone(scatter_to_bev(p, t["coords"], bsz, nx, ny)))

    def camera() -> None:
        net.image_proj(net.image_encoder(t["image"]))

    def full() -> None:
        net(**t)

    out = {}
    with torch.inference_mode():
        for name, fn in (("lidar_branch", lidar), ("camera_branch", camera), ("full_network", full)):
            fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            out[name] = float(np.median(times))
    out["decoder"] = max(out["full_network"] - out["lidar_branch"] - out["camera_branch"], 0.0)
    return out
