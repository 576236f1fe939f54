"""INT8 quantization groups on the shipped export: which parts of the network are INT8 and which stay FP32."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from perception.engines.quantize import QUANT_GROUPS, SPEED_GROUPS, module_scope, node_groups

EXPORT = Path(__file__).resolve().parents[1] / "models" / "fusion_default" / "export"


@pytest.fixture(scope="module")
def fp32() -> onnx.ModelProto:
    if not (EXPORT / "model.onnx").is_file():
        pytest.skip("models/fusion_default/export/model.onnx not exported (perception export)")
    return onnx.load(str(EXPORT / "model.onnx"))


def test_groups_follow_the_module_scopes(fp32):
    groups = node_groups(fp32)
    by_name = {n.name: n for n in fp32.graph.node}
    # The full-resolution stage-0 convs (stem + second conv) and the stride-8 entry conv are their own groups.
    assert [module_scope(by_name[n]) for n in groups["bev_stage0"]] == ["backbone.stages.0.0.1",
                                                                         "backbone.stages.0.1.1"]
    assert [module_scope(by_name[n]) for n in groups["bev_stage2_entry"]] == ["backbone.stages.2.0.1"]
    assert groups["bev_backbone"] and not any(module_scope(by_name[n]).startswith("backbone.stages.0.")
                                              for n in groups["bev_backbone"])
    assert all(groups[g] for g in SPEED_GROUPS)
    every = [n for g in QUANT_GROUPS for n in groups[g]]
    assert len(every) == len(set(every)), "a node belongs to two groups"


def test_shipped_int8_keeps_the_sensitive_layers_fp32(fp32):
    int8_path = EXPORT / "model.int8.onnx"
    if not int8_path.is_file():
        pytest.skip("no INT8 export (perception export --int8)")
    manifest = json.loads((EXPORT / "manifest.json").read_text())
    quantized = manifest["files"]["model.int8.onnx"]["quantized_groups"]
    assert set(quantized) <= set(SPEED_GROUPS)
    int8 = onnx.load(str(int8_path))
    produced_by = {o: n.op_type for n in int8.graph.node for o in n.output}
    convs = {n.name: n for n in int8.graph.node if n.op_type == "Conv"}
    groups = node_groups(fp32)
    kept = [n for n in groups["bev_stage0"] + groups["bev_stage2_entry"] + groups["pillar_net"] if n in convs]
    assert len(kept) >= 3, "the FP32 convs are missing from the INT8 graph"
    for name in kept:  # an FP32 conv reads its weight straight from an initializer, not a DequantizeLinear
        assert produced_by.get(convs[name].input[1]) != "DequantizeLinear", name
    dq_weights = [n for n in convs.values() if produced_by.get(n.input[1]) == "DequantizeLinear"]
    assert len(dq_weights) >= len(groups["bev_backbone"]), "the backbone convs are not quantized"
