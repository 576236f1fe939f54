"""INT8 quantization groups on the shipped export: which parts of the network are INT8 and which stay FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from perception.engines.quantize import (
    QUANT_GROUPS,
    SPEED_GROUPS,
    folded_activations,
    module_scope,
    node_groups,
    quantize_nodes,
)

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


def test_shipped_int8_quantizes_exactly_its_groups_with_relus_folded(fp32):
    int8_path = EXPORT / "model.int8.onnx"
    if not int8_path.is_file():
        pytest.skip("no INT8 export (perception export --int8)")
    manifest = json.loads((EXPORT / "manifest.json").read_text())
    quantized = manifest["files"]["model.int8.onnx"]["quantized_groups"]
    assert quantized and set(quantized) <= set(SPEED_GROUPS)
    int8 = onnx.load(str(int8_path))
    produced_by = {o: n.op_type for n in int8.graph.node for o in n.output}
    convs = {n.name: n for n in int8.graph.node if n.op_type == "Conv"}
    groups = node_groups(fp32)
    q_nodes = {n for g in quantized for n in groups[g]}
    assert len(convs) == sum(n.op_type == "Conv" for n in fp32.graph.node)
    for name, node in convs.items():  # an FP32 conv reads its weight straight from an initializer
        assert (produced_by.get(node.input[1]) == "DequantizeLinear") == (name in q_nodes), name
    folded = folded_activations(fp32, q_nodes)
    assert folded, "no ReLU follows a quantized conv"
    assert not set(folded) & {n.name for n in int8.graph.node}, "a ReLU after a quantized conv was kept"


def _conv_relu_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def test_quantize_nodes_folds_the_relu_into_the_conv_output(tmp_path):
    import onnxruntime as ort

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _conv_relu_model(src)
    rng = np.random.default_rng(1)
    calib = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    assert folded_activations(onnx.load(str(src)), ["conv"]) == ["relu"]
    quantize_nodes(src, dst, calib, ["conv"])
    q = onnx.load(str(dst))
    assert "Relu" not in [n.op_type for n in q.graph.node]
    zero_points = {t.name: t for t in q.graph.initializer}
    out_q = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "x")
    assert numpy_helper.to_array(zero_points[out_q.input[2]]) == 0  # the output range starts at 0 (ReLU's)
    x = calib[0]["x"]
    ref = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(dst)).run(None, {"x": x})[0]
    assert got.min() >= 0.0
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
