"""FP16 conversion of the exported network for GPU engines (inputs and outputs stay FP32).

A small converter of our own (the float16 converters of onnxconverter-common / onnxruntime.transformers
break SSA when a tensor feeds several blocked nodes, which this graph has). Compute-heavy ops of the LiDAR
backbone, camera encoder and decoder run in FP16; kept in FP32: the network's own glue (camera projection,
locality biases, top-k, gathers, the BEV scatter — nodes outside any sub-module), softmax, layer norms and
the box/variance heads, whose log-variances and yaw are sensitive to rounding. Casts are inserted at every
boundary between the two.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from perception.engines.quantize import module_scope
from perception.errors import EngineError

#: Op types that run in FP16 (everything else stays FP32).
FP16_OPS = frozenset({"Conv", "ConvTranspose", "Relu", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Concat",
                      "MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "ReduceMean",
                      "ReduceMax", "Sigmoid", "Expand", "Split"})
#: FusionNet sub-modules (first name-scope prefixes) left in FP32.
FP32_SCOPES = ("heads.",)
FP16_MAX = 65504.0


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of all FP32 tensors (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    infos = list(g.value_info) + list(g.input) + list(g.output)
    out = {v.name for v in infos if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return out | {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}


def half_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes converted to FP16: an op of FP16_OPS inside a sub-module not in FP32_SCOPES, with float data."""
    floats = _float_tensors(model)
    out = []
    for node in model.graph.node:
        scope = module_scope(node)
        if node.op_type not in FP16_OPS or scope == "" or any(scope.startswith(p) for p in FP32_SCOPES):
            continue
        if any(o in floats for o in node.output) and all(o in floats for o in node.output):
            out.append(node)
    return out


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise EngineError(f"graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """FP16 copy of ``model`` (FP32 inputs/outputs); returns it and the number of nodes converted."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    floats = _float_tensors(model)
    halves = half_nodes(model)
    half_ids = {id(n) for n in halves}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    inits = {t.name: t for t in graph.initializer}
    produced_half = {o for n in halves for o in n.output if o in floats}
    half_name: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def half_of(name: str) -> str:
        """FP16 version of tensor ``name`` (converted initializer or a Cast), created once."""
        if name in half_name:
            return half_name[name]
        h = f"{name}__fp16"
        if name in inits:
            values = numpy_helper.to_array(inits[name]).clip(-FP16_MAX, FP16_MAX).astype(np.float16)
            graph.initializer.append(numpy_helper.from_array(values, h))
        else:
            new_nodes.append(helper.make_node("Cast", [name], [h], to=TensorProto.FLOAT16, name=f"cast16_{name}"))
        half_name[name] = h
        return h

    for node in halves:
        for k, name in enumerate(node.input):
            if name in floats and name not in produced_half:
                node.input[k] = half_of(name)
        for k, name in enumerate(node.output):
            if name not in floats:
                continue
            h = f"{name}__fp16"
            node.output[k] = h
            for c in consumers[name]:
                if id(c) in half_ids:
                    c.input[:] = [h if i == name else i for i in c.input]
            if name in outputs or any(id(c) not in half_ids for c in consumers[name]):
                new_nodes.append(helper.make_node("Cast", [h], [name], to=TensorProto.FLOAT, name=f"cast32_{name}"))
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale types; runtimes re-infer them
    topological_sort(graph)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model, len(halves)


def convert_fp16(src: Path, dst: Path) -> int:
    """Write an FP16 copy of ``src`` with FP32 inputs/outputs to ``dst``; returns how many nodes became FP16."""
    try:
        half, n = to_fp16(onnx.load(str(src)))
        onnx.checker.check_model(half, full_check=True)
    except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EngineError(f"FP16 conversion failed: {exc}", str(src)) from exc
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(dst))
    return n
