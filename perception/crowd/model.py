"""Crowd counter: ImageNet-pretrained MobileNetV2 front end (stride 16, with its stride-8 features as a skip),
parameter-free attention (SimAM), a light dilated back end at stride 8 and a 1x1 density head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from perception.crowd.attention import make_attention
from perception.crowd.config import CrowdModelConfig

#: ImageNet normalisation applied inside the network (inputs are RGB in [0, 1]), as the pretrained weights expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Stride of the density map.
STRIDE = 8
#: Input height and width must be multiples of this (the stride-16 features are upsampled x2 onto stride 8).
INPUT_MULTIPLE = 16
#: Gradient slope of the rectified output below zero during training (the forward value is exactly ReLU).
LEAK = 0.01
#: MobileNetV2 inverted-residual settings (expansion t, channels c, repeats n, first stride s).
_MNV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2))
#: ``features`` index after which the map is at stride 8 (block 6: 32 channels).
SKIP_BLOCKS = 7


class InvertedResidual(nn.Module):
    """MobileNetV2 block (layer layout and names of the pretrained state dict: ``conv.0`` ... ``conv.7``)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output (with the identity shortcut when shapes allow)."""
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2_features(blocks: int) -> nn.Sequential:
    """The first ``blocks`` modules of MobileNetV2's ``features`` (stem = index 0)."""
    layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                             nn.ReLU6(inplace=True))]
    cin = 32
    for t, c, n, s in _MNV2:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers[:blocks])


def _channels(seq: nn.Sequential) -> int:
    last = seq[-1]
    return last.conv[-1].num_features if isinstance(last, InvertedResidual) else 32


class CrowdNet(nn.Module):
    """Maps an RGB image (N, 3, H, W) in [0, 1] to a density map (N, 1, H/8, W/8) whose sum is the count.

    H and W must be multiples of :data:`INPUT_MULTIPLE`. ``front`` = MobileNetV2 ``features[:7]`` (stride 8);
    with ``front_blocks`` > 7, ``deep`` = ``features[7:front_blocks]`` (stride 16), upsampled x2 and concatenated
    with the stride-8 map. Attention re-weights the fused features and the back-end output. The output is
    rectified in both modes; in training the backward pass is leaky (slope :data:`LEAK` below zero); with
    ``output`` abs it is the head's absolute value.
    """

    def __init__(self, cfg: CrowdModelConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        features = mobilenet_v2_features(cfg.front_blocks)
        self.front = features[:SKIP_BLOCKS]
        self.deep = features[SKIP_BLOCKS:] if cfg.front_blocks > SKIP_BLOCKS else None
        cin = _channels(self.front) + (_channels(features) if self.deep is not None else 0)
        self.fuse_attention = make_attention(cfg.attention, cfg.simam_lambda)
        layers: list[nn.Module] = []
        for cout in cfg.back_channels:
            layers += [nn.Conv2d(cin, cout, 3, padding=cfg.dilation, dilation=cfg.dilation), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(make_attention(cfg.attention, cfg.simam_lambda))
        self.back = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 1, 1)
        self.output = cfg.output
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.constant_(self.head.bias, 0.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Density map at stride 8."""
        x = self.front((image - self.mean) / self.std)
        if self.deep is not None:
            x = torch.cat([x, F.interpolate(self.deep(x), scale_factor=2.0, mode="bilinear", align_corners=False)], 1)
        d = self.head(self.back(self.fuse_attention(x)))
        if self.output == "abs":
            return torch.abs(d)
        if not self.training:
            return torch.relu(d)
        neg = torch.clamp(d, max=0.0)
        return torch.relu(d) + LEAK * (neg - neg.detach())  # value ReLU(d); gradient LEAK where d < 0

    def backbone_modules(self) -> list[nn.Module]:
        """The MobileNetV2 modules in ``features`` order (stem first)."""
        return list(self.front) + (list(self.deep) if self.deep is not None else [])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> int:
        """Copy ``features.N...`` tensors of a MobileNetV2 state dict into the front end; returns how many."""
        own = {}
        for i, m in enumerate(self.backbone_modules()):
            for k, v in m.state_dict().items():
                own[f"features.{i}.{k}"] = (m, k, v)
        missing = [k for k in own if k not in state]
        if missing:
            raise KeyError(f"pretrained state lacks {missing[:3]}")
        for i, m in enumerate(self.backbone_modules()):
            m.load_state_dict({k: state[f"features.{i}.{k}"] for k in m.state_dict()})
        return len(own)

    def freeze(self, blocks: int) -> None:
        """No gradients for the first ``blocks`` MobileNetV2 modules (their BatchNorm layers are frozen too)."""
        for m in self.backbone_modules()[:blocks]:
            for p in m.parameters():
                p.requires_grad_(False)


def train_mode(net: CrowdNet) -> None:
    """Training mode with every backbone BatchNorm in eval mode: the ImageNet statistics (small crowd batches
    would give noisy ones) are used and kept, so the training forward pass normalises as inference does."""
    net.train()
    for m in net.backbone_modules():
        for sub in m.modules():
            if isinstance(sub, nn.BatchNorm2d):
                sub.eval()


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (frozen ones included)."""
    return sum(p.numel() for p in net.parameters())
