"""ONNX export of the whole network: checker, FP32 parity with PyTorch on fresh frames, INT8 / FP16 closeness,
integrity (corrupt / truncated / stale artifacts), the detector API and the benchmark on exported backends.

The export runs once per module (a copy of models/fusion_default, a handful of simulated frames).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from perception.detector.api import FusionDetector
from perception.detector.checkpoint import CONFIG_FILE, load_model
from perception.detector.config import DetectorConfig
from perception.detector.postprocess import decode
from perception.engines import artifacts as art
from perception.engines.export import ExportOptions, export_model, frame_inputs
from perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.engines.parity import HEAD_TOLERANCE, check_parity, same_detections
from perception.engines.registry import available_backends, default_backend, load_engine
from perception.engines.torch_engine import TorchEngine
from perception.errors import EngineError

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "fusion_default"


@pytest.fixture(scope="module")
def sim_frames(sim_rig):
    """Calibration frames and fresh frames (another split) from the simulator."""
    from perception.sim import iter_split

    torch.set_num_threads(1)
    calib = list(iter_split(sim_rig, "calib", 4, seed=0, frames_per_drive=4, workers=1))
    fresh = list(iter_split(sim_rig, "test", 3, seed=0, frames_per_drive=3, workers=1))
    return calib, fresh


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sim_frames) -> Path:
    """A copy of the shipped model with FP32, INT8 and FP16 exports."""
    if not (MODEL / CONFIG_FILE).is_file():
        pytest.skip(f"no model at {MODEL}")
    model_dir = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(MODEL, model_dir, ignore=shutil.ignore_patterns("export", "checkpoints", "report"))
    cfg = DetectorConfig.from_yaml(model_dir / CONFIG_FILE)
    calib, fresh = sim_frames
    options = ExportOptions(int8=True, fp16=True, sensitivity_frames=0, num_threads=1)
    export_model(model_dir, options, frame_inputs(calib, cfg), frame_inputs(fresh[:1], cfg))
    return model_dir


def _fresh_inputs(model_dir: Path, frames) -> list[dict[str, np.ndarray]]:
    cfg = DetectorConfig.from_yaml(model_dir / CONFIG_FILE)
    inputs = frame_inputs(frames, cfg)
    lidar_only = dict(inputs[-1], camera_valid=np.zeros(1, np.float32), image=np.zeros_like(inputs[-1]["image"]))
    return inputs + [lidar_only]


def test_onnx_passes_checker_with_dynamic_pillars(exported):
    path = art.export_dir(exported) / art.ONNX_FP32
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    first = model.graph.input[0]
    assert first.name == "pillar_features"
    assert first.type.tensor_type.shape.dim[0].dim_param  # symbolic pillar count
    assert path.stat().st_size < 10e6  # no BEV canvas baked in as a constant
    manifest = art.read_manifest(exported)
    assert manifest["files"][art.ONNX_FP32]["bytes"] == path.stat().st_size
    assert manifest["parity"]["onnxruntime"]["passed"]


def test_fp32_parity_on_fresh_frames(exported, sim_frames):
    net, cfg, calibration = load_model(exported)
    inputs = _fresh_inputs(exported, sim_frames[1][1:])
    assert len({len(x["coords"]) for x in inputs[:-1]}) > 1 or len(inputs) > 2  # pillar counts vary
    engine = load_engine(exported, backend="onnxruntime", num_threads=1)
    report = check_parity(TorchEngine(net), engine, inputs, cfg.model, calibration, exact=True)
    assert max(report.max_head_error.values()) <= HEAD_TOLERANCE, report.max_head_error
    assert not any(report.index_mismatches.values()), report.index_mismatches
    assert report.detections_identical and report.detections > 0
    assert report.passed


def test_detector_api_runs_onnxruntime(exported, sim_frames):
    frame = sim_frames[1][-1]
    a = FusionDetector.load(exported, backend="torch", num_threads=1)(frame)
    b = FusionDetector.load(exported, backend="onnxruntime", num_threads=1)(frame)
    assert b.model_id.endswith("@onnxruntime")
    same, err = same_detections(a.detections, b.detections)
    assert same, err
    assert set(b.timings_ms) == {"voxelize", "network", "postprocess"}
    assert np.allclose(a.frame_embedding, b.frame_embedding, atol=1e-4)


def test_int8_runs_and_stays_close(exported, sim_frames):
    net, cfg, calibration = load_model(exported)
    int8 = load_engine(exported, backend="onnxruntime-int8", num_threads=1)
    fp32 = load_engine(exported, backend="onnxruntime", num_threads=1)
    x = _fresh_inputs(exported, sim_frames[1][1:2])[0]
    a, b = fp32.run(x), int8.run(x)
    assert all(np.isfinite(v).all() for v in b.values())
    model = onnx.load(str(art.export_dir(exported) / art.ONNX_INT8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "Softmax" in ops  # attention softmax is never quantized
    def prob(logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logits))

    assert np.abs(prob(a["heatmap"]) - prob(b["heatmap"])).max() <= 0.15  # heatmap probabilities stay close
    emb = np.linalg.norm(a["frame_embedding"] - b["frame_embedding"]) / np.linalg.norm(a["frame_embedding"])
    assert emb < 0.1
    scores = np.sort([d.score for d in decode(a, cfg.model, calibration)])
    min_score = max(0.3, float(scores[-5])) if len(scores) >= 5 else 0.3
    report = check_parity(fp32, int8, [x], cfg.model, calibration, exact=False, min_score=min_score)
    assert report.agreement >= 0.8, report.to_dict()


def test_fp16_model_keeps_fp32_io_and_is_close(exported, sim_frames):
    path = art.export_dir(exported) / art.ONNX_FP16
    model = onnx.load(str(path))
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in model.graph.input)
    assert all(o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for o in model.graph.output)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    x = _fresh_inputs(exported, sim_frames[1][:1])[0]
    a = load_engine(exported, "onnxruntime", num_threads=1).run(x)
    b = OnnxRuntimeEngine(art.read_verified(exported, art.ONNX_FP16), "fp16", num_threads=1).run(x)
    assert b["heatmap"].dtype == np.float32
    assert np.abs(a["heatmap"] - b["heatmap"]).max() <= 0.02 * max(1.0, np.abs(a["heatmap"]).max())
    assert np.abs(a["frame_embedding"] - b["frame_embedding"]).max() <= 0.02 * np.abs(a["frame_embedding"]).max()


def _copy(exported: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(exported, dst)
    return dst


def test_truncated_onnx_is_refused_naming_the_file(exported, tmp_path):
    model_dir = _copy(exported, tmp_path)
    path = art.export_dir(model_dir) / art.ONNX_FP32
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EngineError, match="truncated") as info:
        load_engine(model_dir, backend="onnxruntime")
    assert str(path) in str(info.value)


def test_corrupt_onnx_is_refused_naming_the_file(exported, tmp_path):
    model_dir = _copy(exported, tmp_path)
    path = art.export_dir(model_dir) / art.ONNX_INT8
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="sha256") as info:
        FusionDetector.load(model_dir, backend="onnxruntime-int8")
    assert str(path) in str(info.value)


def test_unrecorded_or_stale_export_is_refused(exported, tmp_path):
    model_dir = _copy(exported, tmp_path)
    (art.export_dir(model_dir) / art.MANIFEST_FILE).unlink()
    with pytest.raises(EngineError, match="not exported"):
        load_engine(model_dir, backend="onnxruntime")
    model_dir = _copy(exported, tmp_path / "stale")
    weights = model_dir / "weights.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(EngineError, match="stale"):
        load_engine(model_dir, backend="onnxruntime")


def test_bench_measures_each_backend_and_picks_a_default(exported, sim_frames, tmp_path, sim_rig):
    from perception.engines.benchmark import run_benchmarks
    from perception.io import write_frames

    data = tmp_path / "kitti"
    write_frames(sim_frames[1], data, "kitti", sim_rig, total=len(sim_frames[1]), progress=False)
    assert {"torch", "onnxruntime", "onnxruntime-int8"} <= set(available_backends(exported))
    doc = run_benchmarks(exported, ["torch", "onnxruntime"], data=str(data), frames=3, num_threads=1)
    for name in ("torch", "onnxruntime"):
        r = doc["backends"][name]
        assert "error" not in r, r
        assert r["frames"] == 2 and r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["fps"] > 0
        assert r["rss_mb"] > 50
        assert set(r["stages"]) == {"preprocess", "network", "postprocess"}
        assert set(r["ap3d"]) == {"Car", "Pedestrian", "Cyclist"}
        assert r["parity_ok"]
    fastest = min(doc["backends"], key=lambda n: doc["backends"][n]["p50_ms"])
    assert doc["default_backend"] == fastest
    saved = json.loads((art.export_dir(exported) / art.ENGINES_FILE).read_text())
    assert saved["default_backend"] == fastest == default_backend(exported)


def test_inference_form_is_the_same_function_with_a_fused_pillar_net(sim_frames) -> None:
    """What is exported (BatchNorm folded into the pillar net, padding by a validity column, ReLU after the max)
    gives the trained network's outputs, also when the padded rows hold garbage instead of zeros."""
    from perception.detector.lidar import FusedPillarFeatureNet
    from perception.engines.export import inference_form

    model = Path(__file__).resolve().parents[1] / "models" / "fusion_default"
    if not (model / "weights.safetensors").is_file():
        pytest.skip("models/fusion_default not present")
    net, cfg, _ = load_model(model)
    net.eval()
    deployed = inference_form(net)
    assert isinstance(deployed.pfn, FusedPillarFeatureNet) and not isinstance(net.pfn, FusedPillarFeatureNet)
    inputs = frame_inputs(sim_frames[1][:1], cfg)[0]
    args = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    with torch.inference_mode():
        ref, out = net(**args), deployed(**args)
        for name in ("heatmap", "boxes", "logits", "query_features", "frame_embedding"):
            torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-4, atol=1e-4)
        feats, num = args["pillar_features"].clone(), args["num_points"]
        pad = torch.arange(feats.shape[1])[None, :] >= num[:, None]
        feats[pad] = 7.0  # padding is zeros by contract; the fused net must not depend on it
        torch.testing.assert_close(deployed.pfn(feats, num), net.pfn(args["pillar_features"], num),
                                   rtol=1e-5, atol=1e-5)
