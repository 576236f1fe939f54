"""One entry point for every runtime: ``load_engine(model_dir, backend=...)``.

Backends (what each needs):

==================  ========================================  ====================================
backend             artifact (under ``<model_dir>/export/``)  runtime
==================  ========================================  ====================================
torch               – (weights.safetensors)                   PyTorch eager, CPU
onnxruntime         model.onnx                                ONNX Runtime CPU, FP32
onnxruntime-int8    model.int8.onnx                           ONNX Runtime CPU, static QDQ INT8
onnxruntime-fp16    model.fp16.onnx                           ONNX Runtime CUDA provider
onnxruntime-cuda    model.onnx                                ONNX Runtime CUDA provider
onnxruntime-trt     model.onnx                                ONNX Runtime TensorRT provider (FP16)
tensorrt            trt/<key>.engine                          TensorRT (built by export --tensorrt)
==================  ========================================  ====================================
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from perception.engines.artifacts import (
    ENGINES_FILE,
    ONNX_FP16,
    ONNX_FP32,
    ONNX_INT8,
    TRT_DIR,
    check_fresh,
    export_dir,
    read_manifest,
    read_verified,
)
from perception.engines.base import Engine
from perception.errors import EngineError

log = logging.getLogger(__name__)

#: backend → (artifact, ONNX Runtime provider or None)
ONNX_BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": (ONNX_FP32, "CPUExecutionProvider"),
    "onnxruntime-int8": (ONNX_INT8, "CPUExecutionProvider"),
    "onnxruntime-fp16": (ONNX_FP16, "CUDAExecutionProvider"),
    "onnxruntime-cuda": (ONNX_FP32, "CUDAExecutionProvider"),
    "onnxruntime-trt": (ONNX_FP32, "TensorrtExecutionProvider"),
}
BACKENDS = ("torch", *ONNX_BACKENDS, "tensorrt", "tensorrt-int8")


def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def runtime_missing(backend: str) -> str | None:
    """Why ``backend`` cannot run on this machine (None when its runtime is present)."""
    if backend == "torch":
        return None
    if backend in ONNX_BACKENDS:
        provider = ONNX_BACKENDS[backend][1]
        return None if provider in _ort_providers() else f"ONNX Runtime has no {provider} here"
    if backend.startswith("tensorrt"):
        from perception.engines.tensorrt_engine import tensorrt_available

        ok, reason = tensorrt_available()
        return None if ok else reason
    return "unknown backend"


def _artifact_missing(model_dir: Path, backend: str) -> str | None:
    files = read_manifest(model_dir)["files"]
    if backend in ONNX_BACKENDS:
        name = ONNX_BACKENDS[backend][0]
        if name not in files:
            flag = {ONNX_INT8: " --int8", ONNX_FP16: " --fp16"}.get(name, "")
            return f"{name} not exported (run `perception export{flag}`)"
    if backend.startswith("tensorrt") and not any(k.startswith(f"{TRT_DIR}/") for k in files):
        return "no TensorRT engine built (run `perception export --tensorrt` on this machine)"
    return None


def available_backends(model_dir: str | Path | None = None) -> list[str]:
    """Backends whose runtime is present here (and, with ``model_dir``, whose artifacts were exported)."""
    out = []
    for b in BACKENDS:
        if runtime_missing(b) is not None:
            continue
        if model_dir is not None and b != "torch" and _artifact_missing(Path(model_dir), b) is not None:
            continue
        out.append(b)
    return out


def _trt_options(model_dir: Path) -> dict[str, Any]:
    """ONNX Runtime TensorRT provider options: FP16 with its engine cache under ``export/trt/ort``."""
    import onnxruntime as ort

    cache = export_dir(model_dir) / TRT_DIR / f"ort-{ort.__version__}"
    cache.mkdir(parents=True, exist_ok=True)
    return {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}


def load_engine(model_dir: str | Path, backend: str = "onnxruntime", num_threads: int | None = None) -> Engine:
    """Load ``backend`` for ``model_dir``; an unknown, unavailable, unexported, stale or corrupt one → EngineError."""
    model_dir = Path(model_dir)
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; available here: {', '.join(available_backends(model_dir))} "
                          f"(all: {', '.join(BACKENDS)})")
    missing = runtime_missing(backend)
    if missing:
        raise EngineError(f"backend {backend!r} is not available: {missing}; available here: "
                          f"{', '.join(available_backends(model_dir))}")
    if backend == "torch":
        from perception.detector.checkpoint import load_model
        from perception.engines.torch_engine import TorchEngine

        return TorchEngine(load_model(model_dir)[0], num_threads)
    reason = _artifact_missing(model_dir, backend)
    if reason:
        raise EngineError(f"backend {backend!r} is not exported: {reason}; available here: "
                          f"{', '.join(available_backends(model_dir))}", str(export_dir(model_dir)))
    check_fresh(model_dir)
    if backend in ONNX_BACKENDS:
        from perception.engines.onnxruntime_engine import OnnxRuntimeEngine

        name, provider = ONNX_BACKENDS[backend]
        providers: list[Any] = [provider]
        if provider == "TensorrtExecutionProvider":
            providers = [(provider, _trt_options(model_dir)), "CUDAExecutionProvider"]
        data = read_verified(model_dir, name)
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")  # for the few ops a GPU provider does not take
        return OnnxRuntimeEngine(data, backend, providers, num_threads,
                                 where=str(export_dir(model_dir) / name))
    from perception.engines.tensorrt_engine import load_tensorrt

    return load_tensorrt(model_dir, "int8" if backend == "tensorrt-int8" else "fp16", allow_build=False)


def resolve_backend(model_dir: str | Path, backend: str) -> str:
    """``backend`` itself, or for ``"auto"`` the model's :func:`default_backend`."""
    return default_backend(model_dir) if backend == "auto" else backend


def default_backend(model_dir: str | Path) -> str:
    """The measured fastest backend that passed parity (``export/engines.json``), if available here; else the
    best exported CPU backend; else ``torch``."""
    model_dir = Path(model_dir)
    here = available_backends(model_dir)
    path = export_dir(model_dir) / ENGINES_FILE
    if path.is_file():
        try:
            chosen = json.loads(path.read_text()).get("default_backend")
        except ValueError:
            log.warning("ignoring unreadable %s", path)
            chosen = None
        if chosen in here:
            return str(chosen)
        if chosen:
            log.warning("default backend %r from %s is not available here; falling back", chosen, path)
    return "onnxruntime" if "onnxruntime" in here else "torch"
