"""Crowd network: MobileNetV2 front end from the pinned ImageNet weights (hash-checked), parameter-free attention,
output stride 8, config validation, rectified output with a leaky gradient."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from perception.crowd.attention import ChannelAttention, CombinedAttention, SimAM, SpatialAttention, make_attention
from perception.crowd.config import ATTENTION_VARIANTS, CrowdConfig, CrowdModelConfig
from perception.crowd.model import CrowdNet, count_parameters
from perception.crowd.pretrained import SHA256, file_sha256, load_mobilenet_v2, weights_path
from perception.errors import ConfigError, ModelError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [SimAM(), ChannelAttention(), SpatialAttention(), CombinedAttention()])
def test_attention_keeps_shape_has_no_parameters_and_reweights(module: torch.nn.Module) -> None:
    x = torch.randn(2, 8, 12, 10)
    y = module(x)
    assert y.shape == x.shape
    assert sum(p.numel() for p in module.parameters()) == 0
    assert not torch.allclose(x, y)
    assert torch.all(y.abs() <= x.abs() + 1e-6)  # gates in (0, 1)


def test_unknown_attention_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        make_attention("transformer")


@pytest.mark.parametrize("blocks", [7, 14])
def test_variants_share_parameter_count_and_output_stride(blocks: int) -> None:
    counts = set()
    x = torch.rand(1, 3, 64, 96)
    for name in ATTENTION_VARIANTS:
        net = CrowdNet(CrowdModelConfig(attention=name, front_blocks=blocks, back_channels=[8])).eval()
        counts.add(count_parameters(net))
        out = net(x)
        assert out.shape == (1, 1, 8, 12)
        assert torch.all(out >= 0)
    assert len(counts) == 1


def test_pinned_imagenet_weights_load_into_the_front_end() -> None:
    assert file_sha256(weights_path()) == SHA256
    state = load_mobilenet_v2()
    net = CrowdNet(CrowdModelConfig())
    assert net.load_pretrained(state) == sum(len(m.state_dict()) for m in net.backbone_modules())
    assert torch.equal(net.deep[-1].conv[6].weight, state["features.13.conv.6.weight"])
    assert torch.equal(net.front[1].conv[1].running_var, state["features.1.conv.1.running_var"])


def test_a_modified_weight_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "w.pt"
    shutil.copy(weights_path(), bad)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_mobilenet_v2(bad)


def test_default_config_loads_and_bad_values_name_the_field(tmp_path: Path) -> None:
    cfg = CrowdConfig.from_yaml(REPO / "models" / "crowd_default.yaml")
    assert cfg.model.attention == "simam" and cfg.model.pretrained
    bad = tmp_path / "bad.yaml"
    for text, field in (("model: {attention: sparkly}\n", "model.attention"), ("train: {stepz: 3}\n", "stepz"),
                        ("model: {front_blocks: 18}\n", "front_blocks"),
                        ("data: {val_patterns: {brt: ['(']}}\n", "val_patterns"),
                        ("data: {val_patterns: {kitti: ['x']}}\n", "val_patterns"),
                        ("sim: {steps: 3}\n", "sim")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=field):
            CrowdConfig.from_yaml(bad)


def test_training_output_is_rectified_with_a_leaky_gradient() -> None:
    net = CrowdNet(CrowdModelConfig(front_blocks=7, back_channels=[8], attention="none")).train()
    with torch.no_grad():
        net.head.bias.fill_(-10.0)  # every cell negative before rectification
    out = net(torch.rand(2, 3, 32, 32))
    assert torch.all(out == 0)  # same value as at inference
    (out - 1.0).pow(2).sum().backward()
    assert net.head.bias.grad is not None and net.head.bias.grad.item() < 0  # still pushed towards positive


def test_abs_output_is_non_negative_with_gradients_below_zero() -> None:
    from perception.crowd.config import CrowdModelConfig
    from perception.crowd.model import CrowdNet

    net = CrowdNet(CrowdModelConfig(front_blocks=14, back_channels=[8], pretrained=False, output="abs"))
    with torch.no_grad():
        net.head.bias.fill_(-5.0)  # every cell negative before rectification
    net.train()
    out = net(torch.rand(1, 3, 64, 64))
    assert (out > 0).all()
    out.sum().backward()
    assert net.head.bias.grad.item() == pytest.approx(-out.numel(), rel=1e-5)  # full-strength gradient, not leaky
