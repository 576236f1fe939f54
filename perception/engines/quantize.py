"""Static post-training INT8 quantization (QDQ) with ONNX Runtime, calibrated on simulated frames.

Nodes are grouped by the sub-module of :class:`~perception.detector.model.FusionNet` they were exported from
(the dynamo exporter records it in each node's ``pkg.torch.onnx.name_scopes`` metadata). Only weight-bearing
Conv / Gemm / MatMul nodes of chosen groups are quantized; always FP32: attention logits and softmax, top-k /
gather / scatter, the camera projection, ConvTranspose (no INT8 CPU kernel: quantizing it only adds Q/DQ).

ReLU folding: BatchNorm is folded into the convs at export, so every backbone conv is followed by a ReLU.
Quantized on its own, a conv's output is rounded to 8 bits over a range that includes the negative values the
ReLU then throws away (half the codes wasted), and rounded again after the ReLU for the next conv. The ReLU
that directly follows a quantized node is therefore handed to the quantizer too, which removes it and
quantizes the conv's output over the ReLU's range ``[0, max]`` (one rounding, twice the resolution, and
ONNX Runtime fuses the conv into one integer kernel). Measured on the trained detector, 300 ``sim:test``
frames, every conv group quantized: 3D AP Car / Ped / Cyc 74.65 / 78.12 / 82.82 without folding, 76.54 /
77.34 / 87.58 with it (FP32: 76.65 / 78.16 / 87.40); CPU time per frame, 1 thread: 1.40x faster than FP32
without folding, 1.67x with it.

Which groups: :data:`SPEED_GROUPS`, every conv group (the convs are where INT8 pays on CPU; small Gemm /
MatMul nodes of the pillar net and the decoder lose more to Q/DQ than they gain: measured before folding,
untrained weights, 1 thread: FP32 178 ms, INT8 conv groups 114 ms, + pillar_net 121 ms, + decoder_linear
123 ms, all groups 135 ms). Before ReLU folding the full-resolution stage-0 convs (the sparse pillar canvas),
the stride-8 entry conv and the heatmap head cost up to 3-6 AP points and were kept FP32; with folding they
hold accuracy (numbers above). At export, :func:`sensitivity` still measures each group's detection error
against FP32 and :func:`select_groups` keeps in FP32 any group outside the budget; ``perception bench``
then checks the whole INT8 network against the 1-AP-point target.
"""

from __future__ import annotations

import ast
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from perception.errors import EngineError

log = logging.getLogger(__name__)

#: Quantization groups → top-level FusionNet sub-modules (prefixes of the first name scope).
QUANT_GROUPS: dict[str, tuple[str, ...]] = {
    "pillar_net": ("pfn",),
    "bev_stage0": ("backbone.stages.0.",),  # full-resolution convs on the sparse pillar canvas
    "bev_stage2_entry": ("backbone.stages.2.0",),  # the stride-8 down-sampling conv
    "bev_backbone": ("backbone",),  # the rest: stage 1, stage 2 after its entry, the neck
    "heatmap_head": ("heatmap_head",),
    "bev_proj": ("bev_proj",),
    "image_encoder": ("image_encoder", "image_proj"),
    "decoder_linear": ("layers.", "bev_pos", "image_pos"),
    "box_heads": ("heads.",),
}
#: Groups worth quantizing for speed on CPU (see the module docstring); the others stay FP32.
SPEED_GROUPS = ("bev_stage0", "bev_stage2_entry", "bev_backbone", "heatmap_head", "bev_proj", "image_encoder")
#: Op types with an INT8 kernel worth having on CPU (ConvTranspose has none: it would only add Q/DQ).
QUANT_OP_TYPES = ("Conv", "Gemm", "MatMul")
#: Activations folded into the quantized node they directly follow (see the module docstring).
FOLDED_ACTIVATIONS = ("Relu",)
#: Accuracy budget of one quantized group against FP32 on held-out frames (see :class:`GroupError`).
MIN_AGREEMENT = 0.95
MAX_CENTER_ERROR_M = 0.05
MAX_SCORE_ERROR = 0.05
MAX_LOGVAR_ERROR = 0.15

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


class InputsReader:
    """ONNX Runtime ``CalibrationDataReader`` over network input dicts (e.g. ``engine_inputs`` of frames)."""

    def __init__(self, inputs: Iterable[dict[str, np.ndarray]]) -> None:
        self._inputs = list(inputs)
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Next input dict, or None when exhausted."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start again from the first input."""
        self._it = iter(self._inputs)

    def __len__(self) -> int:
        return len(self._inputs)


def module_scope(node: onnx.NodeProto) -> str:
    """The innermost FusionNet sub-module a node came from, e.g. ``backbone.stages.0.1.1`` ('' for the
    network's own ops); groups match it by prefix."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            return scopes[-2] if len(scopes) > 2 else ""
    return ""


def node_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Names of the quantizable nodes (weight-bearing Conv/Gemm/MatMul) of each group in :data:`QUANT_GROUPS`."""
    weights = {t.name for t in model.graph.initializer}
    groups: dict[str, list[str]] = {g: [] for g in QUANT_GROUPS}
    for node in model.graph.node:
        if node.op_type not in QUANT_OP_TYPES or not any(i in weights for i in node.input[1:2]):
            continue  # activation x activation products (attention) stay FP32
        scope = module_scope(node)
        for group, prefixes in QUANT_GROUPS.items():
            if any(scope.startswith(p) for p in prefixes):
                groups[group].append(node.name)
                break
    if not any(groups.values()):
        raise EngineError("no quantizable nodes found: the model lacks name-scope metadata (not a dynamo export?)")
    return groups


def quantize_int8(fp32_path: Path, out_path: Path, calib_inputs: list[dict[str, np.ndarray]],
                  groups: Iterable[str] | None = None, per_channel: bool = True) -> list[str]:
    """Write a static QDQ INT8 model quantizing the nodes of ``groups`` (default: SPEED_GROUPS); returns them.

    Activations are asymmetric uint8 and weights symmetric int8 (per output channel), the fast path of
    ONNX Runtime's CPU kernels on x86 with VNNI; ranges come from MinMax calibration over ``calib_inputs``,
    averaged over the frames (``CalibMovingAverage``) rather than the extreme of all of them: one frame's
    outlier no longer stretches the range every other frame is quantized with (measured on the trained
    detector, all speed groups: mean score error against FP32 0.11 → 0.035, agreement 0.964 → 0.991).
    Percentile and entropy calibration cannot be used: ONNX Runtime stacks the collected activations, which
    fails on the dynamic pillar count.
    """
    if not calib_inputs:
        raise EngineError("INT8 calibration needs at least one frame", str(out_path))
    model = onnx.load(str(fp32_path))
    by_group = node_groups(model)
    chosen = list(SPEED_GROUPS) if groups is None else list(groups)
    unknown = sorted(set(chosen) - set(QUANT_GROUPS))
    if unknown:
        raise EngineError(f"unknown quantization groups {unknown}; known: {', '.join(QUANT_GROUPS)}")
    nodes = [n for g in chosen for n in by_group[g]]
    if not nodes:
        raise EngineError(f"groups {chosen} have no quantizable nodes", str(fp32_path))
    quantize_nodes(fp32_path, out_path, calib_inputs, nodes, per_channel)
    return nodes


def folded_activations(model: onnx.ModelProto, nodes: Iterable[str]) -> list[str]:
    """Names of the :data:`FOLDED_ACTIVATIONS` nodes whose input is the output of one of ``nodes``."""
    chosen = set(nodes)
    producer = {out: n.name for n in model.graph.node for out in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in FOLDED_ACTIVATIONS and n.input and producer.get(n.input[0]) in chosen]


def quantize_nodes(fp32_path: Path, out_path: Path, calib_inputs: list[dict[str, np.ndarray]], nodes: list[str],
                   per_channel: bool = True) -> None:
    """Write a static QDQ INT8 model quantizing exactly ``nodes`` (see :func:`quantize_int8`), with the ReLUs
    that directly follow them folded into their output quantization."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calib_inputs:
        raise EngineError("INT8 calibration needs at least one frame", str(out_path))
    nodes = list(nodes) + folded_activations(onnx.load(str(fp32_path), load_external_data=False), nodes)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static nags about optional pre-processing on the root logger
    try:
        quantize_static(
            str(fp32_path), str(out_path), InputsReader(calib_inputs), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[*QUANT_OP_TYPES, *FOLDED_ACTIVATIONS], nodes_to_quantize=nodes,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": True,
                           "CalibMovingAverage": True},
            calibration_providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises bare Exceptions/RuntimeErrors from calibration
        raise EngineError(f"INT8 quantization failed: {exc}", str(fp32_path)) from exc
    finally:
        root.setLevel(level)


@dataclass
class GroupError:
    """How far a network with one group quantized is from FP32, on decoded detections.

    ``agreement``: min of the fraction of FP32 detections (score ≥ min_score) found by the quantized network
    (same class, centre within 0.5 m) and the converse; the rest are means over matched pairs.
    """

    group: str
    agreement: float
    center_error_m: float
    score_error: float
    logvar_error: float
    detections: int

    def within_budget(self) -> bool:
        """True when every error is inside the module's accuracy budget."""
        return (self.agreement >= MIN_AGREEMENT and self.center_error_m <= MAX_CENTER_ERROR_M
                and self.score_error <= MAX_SCORE_ERROR and self.logvar_error <= MAX_LOGVAR_ERROR)


def detection_errors(reference: list, candidate: list, min_score: float = 0.3,
                     max_dist: float = 0.5) -> tuple[float, float, float, float, int]:
    """(agreement, centre error, score error, logvar error, matched count) of two lists of Detections."""

    def match(src: list, dst: list) -> list[tuple[int, int]]:
        pairs = []
        for i, d in enumerate(src):
            if d.score < min_score:
                continue
            best, best_dist = -1, max_dist
            for j, e in enumerate(dst):
                dist = float(np.hypot(*(d.box.center[:2] - e.box.center[:2])))
                if e.box.label == d.box.label and dist <= best_dist:
                    best, best_dist = j, dist
            pairs.append((i, best))
        return pairs

    fwd, back = match(reference, candidate), match(candidate, reference)
    recall = np.mean([j >= 0 for _, j in fwd]) if fwd else 1.0
    precision = np.mean([j >= 0 for _, j in back]) if back else 1.0
    ok = [(reference[i], candidate[j]) for i, j in fwd if j >= 0]
    if not ok:
        return float(min(recall, precision)), 0.0, 0.0, 0.0, 0
    center = np.mean([np.linalg.norm(a.box.center - b.box.center) for a, b in ok])
    score = np.mean([abs(a.score - b.score) for a, b in ok])
    logvar = np.mean([np.abs(np.log(np.diag(a.covariance)) - np.log(np.diag(b.covariance))).mean() for a, b in ok])
    return float(min(recall, precision)), float(center), float(score), float(logvar), len(ok)


def sensitivity(fp32_path: Path, calib_inputs: list[dict[str, np.ndarray]],
                eval_inputs: list[dict[str, np.ndarray]], decode: Callable[[dict[str, np.ndarray]], list],
                groups: Iterable[str] | None = None, min_score: float = 0.3) -> list[GroupError]:
    """Quantize one group at a time and measure its detections against FP32 on ``eval_inputs``.

    ``decode`` turns raw outputs into Detections (post-processing with the model's config and calibration).
    """
    from perception.engines.onnxruntime_engine import OnnxRuntimeEngine

    ref_engine = OnnxRuntimeEngine.from_path(fp32_path, name="fp32", num_threads=1)
    reference = [decode(ref_engine.run(x)) for x in eval_inputs]
    results = []
    with tempfile.TemporaryDirectory(prefix="int8_sens_") as tmp:
        for group in tqdm(list(groups or SPEED_GROUPS), desc="int8 sensitivity", unit="group"):
            path = Path(tmp) / f"{group}.onnx"
            quantize_int8(fp32_path, path, calib_inputs, groups=[group])
            engine = OnnxRuntimeEngine.from_path(path, name=group, num_threads=1)
            errs = [detection_errors(r, decode(engine.run(x)), min_score) for r, x in zip(reference, eval_inputs)]
            n = sum(e[4] for e in errs)
            w = [max(e[4], 1) for e in errs]
            results.append(GroupError(
                group, agreement=float(min(e[0] for e in errs)),
                center_error_m=float(np.average([e[1] for e in errs], weights=w)),
                score_error=float(np.average([e[2] for e in errs], weights=w)),
                logvar_error=float(np.average([e[3] for e in errs], weights=w)), detections=n))
            log.info("int8 group %s: %s", group, results[-1])
    return results


def select_groups(errors: list[GroupError]) -> list[str]:
    """Groups whose measured error is inside the budget (the others stay FP32)."""
    return [e.group for e in errors if e.within_budget()]


def sensitivity_table(errors: list[GroupError]) -> dict[str, dict[str, float | int | bool]]:
    """JSON-ready ``group → errors + quantized flag`` for the export manifest."""
    return {e.group: {**{k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(e).items()
                         if k != "group"}, "quantized": e.within_budget()} for e in errors}
