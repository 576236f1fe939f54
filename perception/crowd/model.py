"""Compact CSRNet-style counter: VGG-like front end (strided stem + 2 pools = stride 8), dilated back end,
1x1 density head; parameter-free attention after each front-end stage (optionally not the stride-2 stem, where
it costs more than the convolutions it re-weights) and after the back end."""

from __future__ import annotations

import torch
from torch import nn

from perception.crowd.attention import make_attention
from perception.crowd.config import CrowdModelConfig

#: ImageNet-style normalisation applied inside the network (inputs are RGB in [0, 1]).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
STRIDE = 8
#: Gradient slope of the rectified output below zero during training (the forward value is exactly ReLU).
LEAK = 0.01


def _norm(kind: str, channels: int) -> nn.Module:
    """``batch``: BatchNorm (statistics of the training crops); ``instance``: each image normalised by its own
    per-channel statistics (the same in training and inference), then a learned scale and shift."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    return nn.BatchNorm2d(channels)


def _conv(cin: int, cout: int, dilation: int = 1, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
                         _norm(norm, cout), nn.ReLU(inplace=True))


class CrowdNet(nn.Module):
    """Maps an RGB image (N, 3, H, W) in [0, 1] to a density map (N, 1, H/8, W/8) whose sum is the count.

    H and W must be multiples of 8. The output is rectified (ReLU) in both modes, so that the training loss sees
    exactly the counts that inference reports (an unrectified training output lets small negative and positive
    background cells cancel, and clipping them at inference then over-counts in proportion to image area). In
    training the backward pass is leaky (slope :data:`LEAK` below zero), so cells that should hold people
    never get stuck at zero.
    """

    def __init__(self, cfg: CrowdModelConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        att, lam = cfg.attention, cfg.simam_lambda
        layers: list[nn.Module] = []
        cin = 3
        for i, (width, depth) in enumerate(zip(cfg.front_channels, cfg.front_depth)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for j in range(depth):
                layers.append(_conv(cin, width, stride=2 if i == 0 and j == 0 else 1, norm=cfg.norm))
                cin = width
            if i > 0 or cfg.stem_attention:
                layers.append(make_attention(att, lam))
        self.front = nn.Sequential(*layers)
        layers = []
        for cout in cfg.back_channels:
            layers.append(_conv(cin, cout, cfg.dilation, norm=cfg.norm))
            cin = cout
        layers.append(make_attention(att, lam))
        self.back = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 1, 1)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.constant_(self.head.bias, 0.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Density map at stride 8."""
        x = (image - self.mean) / self.std
        d = self.head(self.back(self.front(x)))
        if not self.training:
            return torch.relu(d)
        neg = torch.clamp(d, max=0.0)
        return torch.relu(d) + LEAK * (neg - neg.detach())  # value ReLU(d); gradient LEAK where d < 0


def count_parameters(net: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in net.parameters())
