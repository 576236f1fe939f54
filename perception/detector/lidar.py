"""LiDAR branch: pillar feature net, scatter to a BEV canvas, 2D backbone and neck."""

from __future__ import annotations

import torch
from torch import nn

from perception.detector.config import ModelConfig
from perception.detector.voxelize import PILLAR_FEATURES


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _upsample(cin: int, cout: int, factor: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, factor, factor, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class PillarFeatureNet(nn.Module):
    """PointNet over the points of each pillar: shared linear layer, then max over points."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(PILLAR_FEATURES, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, features: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        """(P, M, 9) padded point features, (P,) counts → (P, C) pillar features."""
        p, m, _ = features.shape
        x = self.linear(features.reshape(p * m, -1))
        x = torch.relu(self.norm(x)).reshape(p, m, -1)
        valid = (torch.arange(m, device=features.device)[None, :] < num_points[:, None]).to(x.dtype)
        return (x * valid[..., None]).amax(dim=1)


class FusedPillarFeatureNet(nn.Module):
    """Inference form of a trained :class:`PillarFeatureNet` for export: the same function, less work.

    BatchNorm is folded into the linear layer, its shift moved into a weight on an appended validity column
    (1 for a real point, 0 for padding), so padded rows give exactly 0 before the max instead of being masked
    over all ``C`` output channels afterwards; the ReLU runs after the max (``max relu = relu max``).
    """

    def __init__(self, pfn: PillarFeatureNet) -> None:
        super().__init__()
        bn = pfn.norm
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        self.register_buffer("weight", torch.cat([pfn.linear.weight * scale[:, None], shift[:, None]], 1).detach())

    def forward(self, features: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        """(P, M, 9) padded point features, (P,) counts → (P, C) pillar features."""
        m = features.shape[1]
        valid = (torch.arange(m, device=features.device)[None, :] < num_points[:, None]).to(features.dtype)
        x = torch.cat([features * valid[..., None], valid[..., None]], -1) @ self.weight.t()
        return torch.relu(x.amax(dim=1))


def scatter_to_bev(pillar_feats: torch.Tensor, coords: torch.Tensor, batch_size: int, nx: int, ny: int) -> torch.Tensor:
    """Place (P, C) pillar features at (P, 3) ``(batch, iy, ix)`` coords on a (B, C, ny, nx) canvas."""
    c = pillar_feats.shape[1]
    flat = coords[:, 0] * (ny * nx) + coords[:, 1] * nx + coords[:, 2]
    canvas = torch.zeros(batch_size * ny * nx, c, dtype=pillar_feats.dtype, device=pillar_feats.device)
    canvas = canvas.index_put((flat,), pillar_feats)
    return canvas.reshape(batch_size, ny, nx, c).permute(0, 3, 1, 2)


class BEVBackbone(nn.Module):
    """Three strided stages (strides 2, 4, 8) and a neck that fuses them at stride 2."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans, layers = cfg.backbone_channels, cfg.backbone_layers
        cin = cfg.pillar_channels
        self.stages = nn.ModuleList()
        for cout, n in zip(chans, layers):
            blocks = [conv_bn(cin, cout, stride=2)] + [conv_bn(cout, cout) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*blocks))
            cin = cout
        nc = cfg.neck_channels
        self.up = nn.ModuleList([conv_bn(chans[0], nc, kernel=1), _upsample(chans[1], nc, 2),
                                 _upsample(chans[2], nc, 4)])
        self.fuse = conv_bn(3 * nc, cfg.bev_channels)

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        """(B, C, ny, nx) pillar canvas → (B, bev_channels, ny/2, nx/2)."""
        outs = []
        x = canvas
        for stage, up in zip(self.stages, self.up):
            x = stage(x)
            outs.append(up(x))
        return self.fuse(torch.cat(outs, dim=1))
