"""Parameter-free attention modules (no learnable weights): SimAM, channel, spatial and their combination.

SimAM (Yang et al., ICML 2021) weights each activation by the sigmoid of its inverse energy, i.e. how far it
stands out from the other activations of its channel. The channel and spatial variants re-weight by a sigmoid of
z-scored statistics (global average per channel; channel mean per pixel); ``combined`` applies channel, then
spatial, then SimAM, the parameter-free stacking idea of Rostamza et al. (2026). All are ONNX-exportable.
"""

from __future__ import annotations

import torch
from torch import nn

from perception.errors import ConfigError

_EPS = 1e-5


class SimAM(nn.Module):
    """Energy-based 3-D attention: ``x * sigmoid((x - mu)^2 / (4 (var + lambda)) + 0.5)`` per channel."""

    def __init__(self, lam: float = 1e-4) -> None:
        super().__init__()
        self.lam = lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight ``x`` (N, C, H, W); same shape out."""
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        n = x.shape[2] * x.shape[3]
        var = d.sum(dim=(2, 3), keepdim=True) / (n - 1)  # inputs are at least 8x8 pixels, so n >= 1
        return x * torch.sigmoid(d / (4.0 * (var + self.lam)) + 0.5)


class ChannelAttention(nn.Module):
    """Channel gate from z-scored global-average descriptors: ``x * sigmoid(z(gap(x)))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight the channels of ``x`` (N, C, H, W)."""
        g = x.mean(dim=(2, 3), keepdim=True)
        z = (g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + _EPS)
        return x * torch.sigmoid(z)


class SpatialAttention(nn.Module):
    """Spatial gate from the z-scored channel mean at each pixel: ``x * sigmoid(z(mean_c(x)))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight the pixels of ``x`` (N, C, H, W)."""
        m = x.mean(dim=1, keepdim=True)
        mu = m.mean(dim=(2, 3), keepdim=True)
        sd = (m - mu).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * torch.sigmoid((m - mu) / (sd + _EPS))


class CombinedAttention(nn.Module):
    """Channel, then spatial, then SimAM attention."""

    def __init__(self, lam: float = 1e-4) -> None:
        super().__init__()
        self.channel = ChannelAttention()
        self.spatial = SpatialAttention()
        self.simam = SimAM(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the three gates in order."""
        return self.simam(self.spatial(self.channel(x)))


def make_attention(name: str, lam: float = 1e-4) -> nn.Module:
    """The attention module called ``name`` (``none`` gives an identity)."""
    if name == "none":
        return nn.Identity()
    if name == "simam":
        return SimAM(lam)
    if name == "channel":
        return ChannelAttention()
    if name == "spatial":
        return SpatialAttention()
    if name == "combined":
        return CombinedAttention(lam)
    raise ConfigError(f"unknown attention variant {name!r}", "model.attention")
