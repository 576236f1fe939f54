"""Export a model directory's network to ONNX (+ INT8, FP16, TensorRT), check it, and record it.

``export_model(model_dir, ExportOptions(...))`` writes into ``<model_dir>/export/`` (never the model's own
files): the FP32 ONNX graph from the dynamo exporter (opset 18, dynamic pillar count), checked with
``onnx.checker`` and for parity with PyTorch on frames it never saw; optionally a static INT8 model
calibrated on ``sim:calib`` frames, an FP16 model, and a TensorRT engine. Every artifact is recorded with
its sha256 in ``export/manifest.json`` together with the parity reports.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm import tqdm

from perception.detector.api import engine_inputs
from perception.detector.checkpoint import load_model
from perception.detector.config import DetectorConfig
from perception.detector.inputs import prepare_frame
from perception.detector.lidar import FusedPillarFeatureNet
from perception.detector.model import FusionNet
from perception.detector.postprocess import OUTPUT_NAMES, PostProcessConfig, decode
from perception.engines import artifacts as art
from perception.engines.base import INPUT_NAMES
from perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.engines.parity import ParityReport, check_parity
from perception.engines.torch_engine import TorchEngine
from perception.errors import EngineError
from perception.frame import Frame

log = logging.getLogger(__name__)
OPSET = 18
#: Node metadata kept in the saved graph (module paths, used to group nodes for INT8/FP16); the exporter's
#: stack traces and FX dumps are dropped (they are a sixth of the file).
KEEP_METADATA = ("pkg.torch.onnx.name_scopes",)
PILLAR_INPUTS = ("pillar_features", "num_points", "coords")


@dataclass
class ExportOptions:
    """What ``perception export`` builds."""

    int8: bool = False
    fp16: bool = False
    tensorrt: bool = False
    trt_precision: str = "fp16"  # "fp16" | "int8"
    calib_data: str = "sim:calib"  # frames for calibration and parity: sim:<split>, a KITTI or rosbag2 folder
    calib_frames: int = 64  # frames for INT8 calibration
    parity_frames: int = 5  # further frames (never used for tracing/calibration) for parity
    sensitivity_frames: int = 8  # calibration frames to measure each INT8 group's error on (0: do not measure)
    int8_groups: tuple[str, ...] | None = None  # candidate INT8 groups (default quantize.SPEED_GROUPS)
    opset: int = OPSET
    num_threads: int | None = None


def _strip_metadata(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key in KEEP_METADATA]
        del node.metadata_props[:]
        for k, v in keep:
            node.metadata_props.add(key=k, value=v)


def inference_form(net: FusionNet) -> FusionNet:
    """A copy of trained ``net`` in the form that is exported: same outputs, less work per frame (the pillar net
    with BatchNorm folded and its padding handled by a validity column, :class:`FusedPillarFeatureNet`).
    The parity check compares the exported engine against ``net`` itself."""
    out = copy.deepcopy(net).eval()
    out.pfn = FusedPillarFeatureNet(net.pfn)
    return out


def export_onnx(net: FusionNet, sample: dict[str, np.ndarray], path: Path, max_pillars: int,
                opset: int = OPSET) -> Path:
    """Export ``net`` with the dynamo exporter (dynamic pillar count), check it and save it to ``path``."""
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[k])) for k in INPUT_NAMES)
    pillars = torch.export.Dim("num_pillars", min=1, max=max_pillars)
    shapes = {k: ({0: pillars} if k in PILLAR_INPUTS else None) for k in INPUT_NAMES}
    net = net.eval()
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(net, args, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes=shapes, optimize=True,
                                        verbose=False)
    except Exception as exc:  # torch.export raises a zoo of error types
        raise EngineError(f"ONNX export failed: {str(exc).splitlines()[0][:500]}", str(path)) from exc
    if program is None:
        raise EngineError("ONNX export returned no program", str(path))
    model = program.model_proto
    _strip_metadata(model)
    model.doc_string = f"FusionNet {net.cfg.name} exported by perception (torch {torch.__version__})"
    return art.save_checked_onnx(model, path)


def frame_inputs(frames: Iterable[Frame], cfg: DetectorConfig, total: int | None = None,
                 desc: str = "frames") -> list[dict[str, np.ndarray]]:
    """Network inputs of frames (frames without LiDAR pillars are skipped)."""
    out = []
    for f in tqdm(frames, total=total, desc=desc, unit="frame", leave=False):
        x = engine_inputs(prepare_frame(f, cfg.model, where=f.frame_id or "frame"))
        if len(x["coords"]):
            out.append(x)
    return out


def source_inputs(data: str, cfg: DetectorConfig, n: int) -> list[dict[str, np.ndarray]]:
    """Inputs of the first ``n`` frames of ``data`` (``sim:calib`` is generated on first use)."""
    from perception.eval.evaluate import open_source

    frames, total = open_source(data, cfg, limit=n)
    return frame_inputs(frames, cfg, total, desc=data)


def _record_parity(model_dir: Path, backend: str, report: ParityReport) -> None:
    doc = art.read_manifest(model_dir)
    parity = doc.get("parity", {})
    parity[backend] = report.to_dict()
    art.update_manifest(model_dir, parity=parity)
    level = logging.INFO if report.passed else logging.WARNING
    log.log(level, "parity %s: %s", backend, report.to_dict())


def export_model(model_dir: str | Path, options: ExportOptions | None = None,
                 calib_inputs: list[dict[str, np.ndarray]] | None = None,
                 parity_inputs: list[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Export ``model_dir`` as ``options`` asks; returns the export manifest.

    ``calib_inputs`` / ``parity_inputs`` (network inputs of frames) default to frames of ``options.calib_data``:
    the first ``calib_frames`` calibrate INT8, the next ``parity_frames`` check parity. Raises EngineError when the FP32
    export fails parity (heads within 1e-4, identical detections).
    """
    options = options or ExportOptions()
    model_dir = Path(model_dir)
    net, cfg, calibration = load_model(model_dir)
    root = art.export_dir(model_dir)
    if calib_inputs is None or parity_inputs is None:
        n_calib = options.calib_frames if options.int8 or options.trt_precision == "int8" else 1
        inputs = source_inputs(options.calib_data, cfg, n_calib + options.parity_frames)
        if len(inputs) <= options.parity_frames:
            raise EngineError(f"need more than {options.parity_frames} frames with LiDAR points",
                              options.calib_data)
        calib_inputs, parity_inputs = inputs[:-options.parity_frames], inputs[-options.parity_frames:]
    reference = TorchEngine(net, options.num_threads)
    decode_fn = _decoder(cfg, calibration)

    for noisy in ("onnx_ir", "onnxscript"):  # one INFO line per folded constant / rewrite rule otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    fp32 = export_onnx(inference_form(net), calib_inputs[0], root / art.ONNX_FP32, cfg.model.max_pillars,
                       options.opset)
    log.info("exported %s (%.1f MB) in %.0f s", fp32, fp32.stat().st_size / 1e6, time.perf_counter() - t0)
    art.update_manifest(model_dir, parity={}, model=cfg.model.name, opset=options.opset, torch=torch.__version__,
                        inputs=list(INPUT_NAMES), outputs=list(OUTPUT_NAMES))
    for stale in (art.ONNX_INT8, art.ONNX_FP16):  # made from an older graph: drop them and their records
        _forget(model_dir, stale)
    art.record_artifact(model_dir, fp32, precision="fp32", opset=options.opset)
    report = check_parity(reference, OnnxRuntimeEngine.from_path(fp32, "onnxruntime", num_threads=options.num_threads),
                          parity_inputs, cfg.model, calibration, exact=True)
    _record_parity(model_dir, "onnxruntime", report)
    if not report.passed:
        raise EngineError(f"ONNX export fails parity with PyTorch: {report.to_dict()}", str(fp32))

    if options.int8:
        _export_int8(model_dir, fp32, calib_inputs, parity_inputs, options, reference, cfg, calibration, decode_fn)
    if options.fp16:
        from perception.engines.fp16 import convert_fp16

        path = root / art.ONNX_FP16
        converted = convert_fp16(fp32, path)
        art.record_artifact(model_dir, path, precision="fp16", fp16_nodes=converted)
        try:  # FP16 targets GPUs; ONNX Runtime's CPU provider can still run it for a numeric check
            engine = OnnxRuntimeEngine.from_path(path, "onnxruntime-fp16", num_threads=options.num_threads)
            _record_parity(model_dir, "onnxruntime-fp16", check_parity(
                reference, engine, parity_inputs, cfg.model, calibration, exact=False))
        except EngineError as exc:
            log.warning("FP16 model not checked on CPU: %s", exc)
    if options.tensorrt:
        _export_tensorrt(model_dir, options, calib_inputs, cfg, reference, parity_inputs, calibration)
    return art.read_manifest(model_dir)


def _forget(model_dir: Path, name: str) -> None:
    path = art.export_dir(model_dir) / name
    path.unlink(missing_ok=True)
    doc = art.read_manifest(model_dir)
    if doc["files"].pop(name, None) is not None:
        art.update_manifest(model_dir, files=doc["files"])


def _decoder(cfg: DetectorConfig, calibration: Any):  # noqa: ANN202 - a closure
    pp = PostProcessConfig(keep_attention=False)
    return lambda raw: decode(raw, cfg.model, calibration, pp)


def _export_int8(model_dir: Path, fp32: Path, calib_inputs: list[dict], parity_inputs: list[dict],
                 options: ExportOptions, reference: TorchEngine, cfg: DetectorConfig, calibration: Any,
                 decode_fn: Any) -> None:
    from perception.engines.quantize import (
        QUANT_GROUPS,
        SPEED_GROUPS,
        quantize_int8,
        select_groups,
        sensitivity,
        sensitivity_table,
    )

    candidates = list(options.int8_groups or SPEED_GROUPS)
    if options.sensitivity_frames > 0:
        k = min(options.sensitivity_frames, len(calib_inputs) - 1)
        fit, held_out = (calib_inputs[:-k], calib_inputs[-k:]) if k > 0 else (calib_inputs, calib_inputs)
        errors = sensitivity(fp32, fit, held_out, decode_fn, groups=candidates)
        groups, table = select_groups(errors), sensitivity_table(errors)
    else:
        groups, table = candidates, {}
    log.info("INT8 groups quantized: %s; kept FP32: %s", groups, sorted(set(QUANT_GROUPS) - set(groups)))
    if not groups:
        raise EngineError(f"no group can be quantized within the accuracy budget: {table}", str(fp32))
    path = art.export_dir(model_dir) / art.ONNX_INT8
    nodes = quantize_int8(fp32, path, calib_inputs, groups=groups)
    art.record_artifact(model_dir, path, precision="int8", calib_frames=len(calib_inputs),
                        quantized_groups=groups, quantized_nodes=len(nodes))
    art.update_manifest(model_dir, int8_sensitivity=table)
    engine = OnnxRuntimeEngine.from_path(path, "onnxruntime-int8", num_threads=options.num_threads)
    _record_parity(model_dir, "onnxruntime-int8", check_parity(
        reference, engine, parity_inputs, cfg.model, calibration, exact=False))


def _export_tensorrt(model_dir: Path, options: ExportOptions, calib_inputs: list[dict], cfg: DetectorConfig,
                     reference: TorchEngine, parity_inputs: list[dict], calibration: Any) -> None:
    from perception.engines.tensorrt_engine import load_tensorrt, tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        raise EngineError(f"cannot build a TensorRT engine here: {reason}")
    precision = options.trt_precision
    engine = load_tensorrt(model_dir, precision, allow_build=True, max_pillars=cfg.model.max_pillars,
                           calib_inputs=calib_inputs)
    calib_cache = art.export_dir(model_dir) / art.TRT_CALIB_CACHE
    if precision == "int8" and calib_cache.is_file():
        art.record_artifact(model_dir, calib_cache, kind="tensorrt-int8-calibration")
        # the key names the calibration cache: re-file the engine built with it under the final key
        engine = load_tensorrt(model_dir, precision, allow_build=True, max_pillars=cfg.model.max_pillars,
                               calib_inputs=calib_inputs)
    art.record_artifact(model_dir, Path(engine.where), kind=f"tensorrt-{precision}")
    name = "tensorrt" if precision == "fp16" else "tensorrt-int8"
    _record_parity(model_dir, name, check_parity(reference, engine, parity_inputs, cfg.model, calibration,
                                                 exact=False))
