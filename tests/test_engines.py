"""Backend registry, artifact integrity, the TensorRT engine cache (pure Python) and the small converters.

GPU backends (ONNX Runtime CUDA / TensorRT providers, native TensorRT) are skipped with a reason when the
machine has none; the cache-key and refusal logic is tested without TensorRT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from perception.engines import artifacts as art
from perception.engines.cache import CacheMiss, EngineCache, EngineKey
from perception.engines.fp16 import to_fp16, topological_sort
from perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.engines.quantize import detection_errors
from perception.engines.registry import BACKENDS, available_backends, default_backend, load_engine, runtime_missing
from perception.errors import EngineError
from perception.frame import Box3D, Detection

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "fusion_default"


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    """A copy of the shipped model directory without any export."""
    if not MODEL.is_dir():
        pytest.skip(f"no model at {MODEL}")
    dst = tmp_path / "model"
    shutil.copytree(MODEL, dst, ignore=shutil.ignore_patterns("export", "checkpoints", "report"))
    return dst


def _write_artifact(model_dir: Path, name: str, data: bytes) -> Path:
    path = art.export_dir(model_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    art.record_artifact(model_dir, path)
    return path


def test_unknown_backend_lists_available_ones(model_dir):
    with pytest.raises(EngineError, match="unknown backend 'tflite'") as info:
        load_engine(model_dir, backend="tflite")
    assert "available here: torch" in str(info.value)
    assert "onnxruntime-int8" in str(info.value)  # the full list is named too


def test_backend_without_export_says_how_to_make_it(model_dir):
    assert available_backends(model_dir) == ["torch"]
    with pytest.raises(EngineError, match=r"perception export --int8"):
        load_engine(model_dir, backend="onnxruntime-int8")
    assert default_backend(model_dir) == "torch"


def test_torch_backend_loads_through_the_registry(model_dir):
    engine = load_engine(model_dir, backend="torch", num_threads=1)
    assert engine.name == "torch"


@pytest.mark.parametrize("backend", ["onnxruntime-cuda", "onnxruntime-trt", "onnxruntime-fp16", "tensorrt"])
def test_gpu_backend_without_gpu_is_a_clear_error(model_dir, backend):
    if runtime_missing(backend) is None:
        pytest.skip(f"{backend} runtime present on this machine")
    with pytest.raises(EngineError, match="not available") as info:
        load_engine(model_dir, backend=backend)
    assert "available here: torch" in str(info.value)


def test_read_verified_detects_truncation_corruption_and_strays(model_dir):
    path = _write_artifact(model_dir, "blob.bin", b"0123456789" * 100)
    assert art.read_verified(model_dir, "blob.bin") == b"0123456789" * 100
    path.write_bytes(b"0123456789" * 50)
    with pytest.raises(EngineError, match="truncated") as info:
        art.read_verified(model_dir, "blob.bin")
    assert str(path) in str(info.value)
    path.write_bytes(b"9123456789" + b"0123456789" * 99)
    with pytest.raises(EngineError, match="sha256"):
        art.read_verified(model_dir, "blob.bin")
    (art.export_dir(model_dir) / "stray.onnx").write_bytes(b"x")
    with pytest.raises(EngineError, match="not listed"):
        art.read_verified(model_dir, "stray.onnx")
    with pytest.raises(EngineError, match="not found"):
        art.read_verified(model_dir, "missing.onnx")
    (art.export_dir(model_dir) / art.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable export manifest"):
        art.read_manifest(model_dir)


def test_garbage_or_foreign_onnx_is_an_engine_error():
    with pytest.raises(EngineError, match="cannot load"):
        OnnxRuntimeEngine(b"\x08\x07garbage" * 10, "x", where="bad.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with pytest.raises(EngineError, match="expected") as info:
        OnnxRuntimeEngine(model.SerializeToString(), "x", where="foreign.onnx")
    assert "foreign.onnx" in str(info.value)


def _key(**changes) -> EngineKey:
    base = {"onnx_sha256": "a" * 64, "trt_version": "10.3.0", "gpu_name": "NVIDIA H100", "precision": "fp16"}
    return EngineKey(**{**base, **changes})


def test_engine_key_depends_on_every_field():
    digests = {_key().digest(), _key(onnx_sha256="b" * 64).digest(), _key(trt_version="10.4.0").digest(),
               _key(gpu_name="NVIDIA Orin").digest(), _key(precision="int8").digest(),
               _key(precision="int8", calib_sha256="c" * 64).digest()}
    assert len(digests) == 6
    assert _key().digest() == _key().digest()


def test_engine_cache_roundtrip_and_refusals(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    key = _key()
    with pytest.raises(CacheMiss, match="no cached TensorRT engine"):
        cache.load(key)
    engine_path = cache.store(key, b"serialized-engine" * 64)
    assert cache.load(key) == b"serialized-engine" * 64
    # an engine file copied over from another GPU (sidecar says so) is refused, naming the difference
    other = _key(gpu_name="NVIDIA Orin")
    shutil.copy(engine_path, cache.paths(other)[0])
    shutil.copy(cache.paths(key)[1], cache.paths(other)[1])
    with pytest.raises(CacheMiss, match="gpu_name: cached 'NVIDIA H100' != wanted 'NVIDIA Orin'"):
        cache.load(other)
    # truncated, corrupt, unreadable sidecar, failed deserialization
    engine_path.write_bytes(b"serialized-engine" * 10)
    with pytest.raises(CacheMiss, match="truncated"):
        cache.load(key)
    engine_path.write_bytes(b"X" + (b"serialized-engine" * 64)[1:])
    with pytest.raises(CacheMiss, match="corrupt"):
        cache.load(key)
    cache.store(key, b"serialized-engine" * 64)
    with pytest.raises(CacheMiss, match="deserialize"):
        cache.load(key, validate=lambda data: False)
    cache.paths(key)[1].write_text("{")
    with pytest.raises(CacheMiss, match="unreadable engine sidecar"):
        cache.load(key)


def test_get_or_build_refuses_at_startup_and_rebuilds_at_export(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    key = _key()
    calls = []

    def build() -> bytes:
        calls.append(1)
        return b"fresh-engine"

    with pytest.raises(CacheMiss, match="perception export --tensorrt"):
        cache.get_or_build(key, build, allow_build=False)
    assert not calls  # a node never builds at start-up
    assert cache.get_or_build(key, build, allow_build=True) == b"fresh-engine"
    assert cache.get_or_build(key, build, allow_build=False) == b"fresh-engine"
    assert len(calls) == 1  # cached: no second build
    cache.paths(key)[0].write_bytes(b"fresh-enginX")  # corrupt → rebuilt when allowed
    assert cache.get_or_build(key, build, allow_build=True) == b"fresh-engine"
    assert len(calls) == 2
    sidecar = json.loads(cache.paths(key)[1].read_text())
    assert sidecar["key"]["gpu_name"] == "NVIDIA H100" and sidecar["bytes"] == len(b"fresh-engine")


def test_tensorrt_backend_on_gpu():
    from perception.engines.tensorrt_engine import tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT path needs a GPU: {reason}")
    assert "tensorrt" in available_backends()


def _mini_graph() -> onnx.ModelProto:
    """x → Conv (inside a sub-module scope) → Relu → Softmax (kept FP32) → y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 2, 1, 1)).astype(np.float32), "w")
    scope = "['', 'backbone', 'backbone.0', 'conv']"
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=1)]
    for n in nodes[:2]:
        n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=scope)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_fp16_converter_keeps_io_fp32_and_values_close():
    import onnxruntime as ort

    model = _mini_graph()
    half, n = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    assert n == 2  # Conv and Relu; Softmax stays FP32
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {t.data_type for t in half.graph.initializer} == {TensorProto.FLOAT16}
    x = np.random.default_rng(1).normal(size=(1, 2, 4, 4)).astype(np.float32)
    a = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    b = ort.InferenceSession(half.SerializeToString()).run(None, {"x": x})[0]
    assert b.dtype == np.float32 and np.abs(a - b).max() < 1e-2


def test_topological_sort_orders_appended_nodes():
    model = _mini_graph()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    topological_sort(model.graph)
    assert [n.name for n in model.graph.node] == ["conv", "relu", "softmax"]


def _det(label: str, x: float, score: float) -> Detection:
    return Detection(Box3D(label, np.array([x, 0.0, 0.0]), np.array([4.0, 1.6, 1.5]), 0.0), score, score,
                     np.eye(7) * 0.1)


def test_detection_agreement_counts_missing_and_extra_objects():
    ref = [_det("Car", 10.0, 0.9), _det("Car", 20.0, 0.8), _det("Pedestrian", 5.0, 0.7)]
    assert detection_errors(ref, ref)[:2] == (1.0, 0.0)
    moved = [_det("Car", 10.1, 0.9), _det("Car", 20.0, 0.8), _det("Cyclist", 5.0, 0.7)]  # class changed
    agreement, center, *_ = detection_errors(ref, moved)
    assert agreement == pytest.approx(2 / 3) and center == pytest.approx(0.05)
    assert detection_errors(ref, ref + [_det("Car", 40.0, 0.95)])[0] == pytest.approx(3 / 4)


def test_backend_table_is_complete():
    assert BACKENDS[0] == "torch" and {"onnxruntime", "onnxruntime-int8", "onnxruntime-fp16", "onnxruntime-cuda",
                                       "onnxruntime-trt", "tensorrt"} <= set(BACKENDS)


def _fake_outputs(q: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    from perception.detector.postprocess import OUTPUT_NAMES

    rng = np.random.default_rng(seed)
    shapes = {"heatmap": (1, 3, 6, 6), "query_ref": (1, q, 2), "query_class": (1, q), "logits": (2, 1, q, 3),
              "boxes": (2, 1, q, 8), "logvar": (2, 1, q, 7), "attn_bev": (2, 1, 4, q, 81),
              "attn_bev_index": (2, 1, q, 81), "attn_image": (1, 4, q, 480), "camera_share": (1, q),
              "query_features": (1, q, 64), "frame_embedding": (1, 128)}
    out = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    out["query_class"] = rng.integers(0, 3, size=(1, q))
    out["attn_bev_index"] = rng.integers(0, 1000, size=shapes["attn_bev_index"])
    assert set(out) == set(OUTPUT_NAMES)
    return out


def test_canonical_query_order_hides_only_the_query_permutation():
    from perception.engines.parity import canonical_queries, head_errors

    a = _fake_outputs()
    perm = np.array([2, 0, 3, 1])
    b = {k: v.copy() for k, v in a.items()}
    for name, axis in (("query_ref", 1), ("query_class", 1), ("logits", 2), ("boxes", 2), ("logvar", 2),
                       ("attn_bev", 3), ("attn_bev_index", 2), ("attn_image", 2), ("camera_share", 1),
                       ("query_features", 1)):
        b[name] = np.take(a[name], perm, axis=axis)
    errs, mismatches = head_errors(a, b)
    assert errs["boxes"] > 0 or mismatches["query_class"] > 0  # raw comparison sees the reordering
    errs, mismatches = head_errors(canonical_queries(a), canonical_queries(b))
    assert max(errs.values()) == 0.0 and not any(mismatches.values())
    b["boxes"][0, 0, 1, 0] += 1.0  # a real difference survives canonicalisation
    errs, _ = head_errors(canonical_queries(a), canonical_queries(b))
    assert errs["boxes"] == pytest.approx(1.0)


def test_topk_tie_detection():
    from perception.engines.parity import topk_tied

    flat = np.zeros((1, 3, 20, 20), np.float32)  # every cell is an equal peak: the cut is tied
    assert topk_tied(flat, 8)
    distinct = np.full_like(flat, -10.0)  # logits: a low background plateau ...
    distinct[0, 0, ::3, ::3] = np.linspace(-3, 3, 49, dtype=np.float32).reshape(7, 7)  # ... and 49 distinct peaks
    assert not topk_tied(distinct, 8)
    assert topk_tied(distinct, 60)  # the cut falls into the background plateau


def test_default_backend_prefers_exact_parity_unless_an_approximate_one_is_clearly_faster():
    from perception.engines.benchmark import choose_default

    def r(p50: float, parity: str) -> dict:
        return {"p50_ms": p50, "parity": parity}

    base = {"torch": r(103.0, "reference"), "onnxruntime": r(85.0, "exact parity")}
    assert choose_default(base) == "onnxruntime"
    # 3.5 % faster, within run-to-run noise: keep the exact engine (the OOD features stay the reference ones)
    assert choose_default({**base, "onnxruntime-int8": r(82.0, "Car 3D AP loss -0.57 (max 1.0)")}) == "onnxruntime"
    assert choose_default({**base, "onnxruntime-int8": r(60.0, "Car 3D AP loss 0.40 (max 1.0)")}) == "onnxruntime-int8"
    assert choose_default({"onnxruntime-int8": r(60.0, "detections agree (AP not compared)")}) == "onnxruntime-int8"
    assert choose_default({}) is None
    # the network stage decides when it was timed: the stages around it are the same code for every backend
    staged = {"onnxruntime": {**r(83.0, "exact parity"), "stages": {"network": {"p50": 48.0}}},
              "onnxruntime-int8": {**r(80.0, "Car 3D AP loss 0.41 (max 1.0)"), "stages": {"network": {"p50": 36.5}}}}
    assert choose_default(staged) == "onnxruntime-int8"
    staged["onnxruntime-int8"]["stages"]["network"]["p50"] = 46.0
    assert choose_default(staged) == "onnxruntime"


def test_bench_rounds_take_the_median_and_keep_the_measured_ap():
    from perception.engines.benchmark import merge_rounds

    def run(net: float, frame: float, rss: float, ap: dict | None) -> dict:
        return {"backend": "x", "p50_ms": frame, "p99_ms": frame * 1.5, "fps": 1000.0 / frame, "rss_mb": rss,
                "ap3d": ap, "stages": {"network": {"p50": net, "p99": net * 2}, "preprocess": {"p50": 5.0, "p99": 6.0}}}

    merged = merge_rounds([run(40.0, 70.0, 400, {"Car": 80.0}), run(60.0, 95.0, 420, None), run(42.0, 72.0, 410, None)])
    assert merged["stages"]["network"]["p50"] == 42.0 and merged["p50_ms"] == 72.0  # the slow round is outvoted
    assert merged["rss_mb"] == 420 and merged["ap3d"] == {"Car": 80.0}
    assert [r["network_p50_ms"] for r in merged["rounds"]] == [40.0, 60.0, 42.0]
    failed = {"backend": "x", "error": "boom"}
    assert merge_rounds([failed]) == failed


def test_same_detections_ignores_the_order_of_near_tied_scores():
    from perception.engines.parity import same_detections
    from perception.frame import Box3D, Detection

    def det(x: float, score: float, label: str = "Car") -> Detection:
        return Detection(box=Box3D(label, [x, 2.0, -1.0], [3.9, 1.6, 1.5], 0.1), score=score, probability=score,
                         covariance=np.eye(7))

    a = [det(10.0, 0.500001), det(20.0, 0.5)]
    b = [det(20.0, 0.500001), det(10.0, 0.5)]  # the other engine ranks the two the other way round
    assert same_detections(a, b) == (True, 0.0)
    same, err = same_detections(a, [det(10.0, 0.5), det(25.0, 0.5)])
    assert not same and err == pytest.approx(5.0)
    assert not same_detections(a, [det(10.0, 0.5), det(20.0, 0.5, "Cyclist")])[0]
    assert not same_detections(a, a[:1])[0]
