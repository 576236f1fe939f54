"""Camera branch: a compact CNN image encoder trained from scratch (features at stride 8)."""

from __future__ import annotations

import torch
from torch import nn

from perception.detector.config import ModelConfig
from perception.detector.lidar import conv_bn

#: Per-channel RGB mean/std used to normalise images (fixed, data-independent).
IMAGE_MEAN = (0.45, 0.45, 0.45)
IMAGE_STD = (0.25, 0.25, 0.25)


class ImageEncoder(nn.Module):
    """Three stride-2 stages with a residual-free conv stack; output (B, C, h/8, w/8)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c1, c2, c3 = cfg.image_channels
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.net = nn.Sequential(
            conv_bn(3, c1, stride=2), conv_bn(c1, c1),
            conv_bn(c1, c2, stride=2), conv_bn(c2, c2),
            conv_bn(c2, c3, stride=2), conv_bn(c3, c3), conv_bn(c3, c3),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB in [0, 1] → (B, C, h/8, w/8)."""
        return self.net((image - self.mean) / self.std)
