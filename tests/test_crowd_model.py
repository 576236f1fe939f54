"""Crowd network: attention variants keep shapes and add no parameters; config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from perception.crowd.attention import ChannelAttention, CombinedAttention, SimAM, SpatialAttention, make_attention
from perception.crowd.config import ATTENTION_VARIANTS, CrowdConfig, CrowdModelConfig
from perception.crowd.model import CrowdNet, count_parameters
from perception.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [SimAM(), ChannelAttention(), SpatialAttention(), CombinedAttention()])
def test_attention_keeps_shape_has_no_parameters_and_reweights(module: torch.nn.Module) -> None:
    x = torch.randn(2, 8, 12, 10)
    y = module(x)
    assert y.shape == x.shape
    assert sum(p.numel() for p in module.parameters()) == 0
    assert not torch.allclose(x, y)
    # gates are in (0, 1): each output has the sign of its input and a smaller magnitude
    assert torch.all(y.abs() <= x.abs() + 1e-6)


def test_unknown_attention_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        make_attention("transformer")


def test_variants_share_parameter_count_and_output_stride() -> None:
    counts = set()
    x = torch.rand(1, 3, 64, 96)
    for name in ATTENTION_VARIANTS:
        net = CrowdNet(CrowdModelConfig(attention=name)).eval()
        counts.add(count_parameters(net))
        out = net(x)
        assert out.shape == (1, 1, 8, 12)
        assert torch.all(out >= 0)
    assert len(counts) == 1


def test_default_config_loads_and_bad_values_name_the_field(tmp_path: Path) -> None:
    cfg = CrowdConfig.from_yaml(REPO / "models" / "crowd_default.yaml")
    assert cfg.model.attention in ATTENTION_VARIANTS
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {attention: sparkly}\n")
    with pytest.raises(ConfigError, match="model.attention"):
        CrowdConfig.from_yaml(bad)
    bad.write_text("train: {stepz: 3}\n")
    with pytest.raises(ConfigError, match="stepz"):
        CrowdConfig.from_yaml(bad)
    bad.write_text("data: {test_scenes: [scene_001], val_scenes: [scene_001]}\n")
    with pytest.raises(ConfigError, match="val_scenes"):
        CrowdConfig.from_yaml(bad)


def test_training_output_is_rectified_with_a_leaky_gradient() -> None:
    net = CrowdNet(CrowdModelConfig(front_channels=[4, 8, 8], back_channels=[8], attention="none")).train()
    with torch.no_grad():
        net.head.bias.fill_(-10.0)  # every cell negative before rectification
    out = net(torch.rand(2, 3, 32, 32))
    assert torch.all(out == 0)  # same value as at inference, so training sees the counts inference reports
    (out - 1.0).pow(2).sum().backward()
    assert net.head.bias.grad is not None and net.head.bias.grad.item() < 0  # still pushed towards positive
