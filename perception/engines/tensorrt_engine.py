"""Native TensorRT engine (GPU): build from the exported ONNX (FP16, or INT8 with a calibration cache), cache the
serialized engine under a key of ONNX sha256 + TensorRT version + GPU name (:mod:`perception.engines.cache`),
and run it with CUDA buffers from PyTorch.

Needs ``tensorrt`` and a CUDA build of PyTorch; :func:`tensorrt_available` says whether both are present.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from perception.detector.postprocess import OUTPUT_NAMES
from perception.engines.artifacts import ONNX_FP32, TRT_CALIB_CACHE, TRT_DIR, export_dir, read_manifest, read_verified
from perception.engines.base import INPUT_NAMES
from perception.engines.cache import EngineCache, EngineKey
from perception.errors import EngineError

log = logging.getLogger(__name__)
PRECISIONS = ("fp16", "int8")
#: Pillar inputs are dynamic; the optimisation profile spans 1 .. max_pillars with this typical count.
OPT_PILLARS = 6000
WORKSPACE_BYTES = 2 << 30


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT imports and PyTorch sees a CUDA GPU."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    return True, ""


def engine_key(model_dir: Path, precision: str) -> EngineKey:
    """The cache key of the engine this machine needs for ``model_dir`` at ``precision``."""
    import tensorrt as trt
    import torch

    if precision not in PRECISIONS:
        raise EngineError(f"unknown TensorRT precision {precision!r}; expected one of {PRECISIONS}")
    files = read_manifest(model_dir)["files"]
    if ONNX_FP32 not in files:
        raise EngineError("no exported ONNX model; run `perception export` first", str(export_dir(model_dir)))
    calib = ""
    if precision == "int8":
        entry = files.get(TRT_CALIB_CACHE)
        calib = entry["sha256"] if entry else ""
    return EngineKey(files[ONNX_FP32]["sha256"], trt.__version__, torch.cuda.get_device_name(0), precision, calib)


class _Calibrator:
    """INT8 entropy calibrator over network input dicts (built lazily: subclasses a TensorRT class)."""

    @staticmethod
    def create(inputs: list[dict[str, np.ndarray]], cache_path: Path) -> Any:
        import tensorrt as trt
        import torch

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.items, self.held = iter(inputs), []

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: list[str]) -> list[int] | None:
                x = next(self.items, None)
                if x is None:
                    return None
                self.held = [torch.from_numpy(np.ascontiguousarray(x[n])).cuda() for n in names]
                return [t.data_ptr() for t in self.held]

            def read_calibration_cache(self) -> bytes | None:
                return cache_path.read_bytes() if cache_path.is_file() else None

            def write_calibration_cache(self, cache: bytes) -> None:
                cache_path.write_bytes(bytes(cache))

        return Calibrator()


def build_engine(onnx_bytes: bytes, precision: str, max_pillars: int, calib_inputs: list[dict] | None = None,
                 calib_cache: Path | None = None, where: str = ONNX_FP32) -> bytes:
    """Parse the ONNX graph and build a serialized engine (minutes on first build)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse the ONNX graph: {errors}", where)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(t.shape)
        if shape and shape[0] == -1:  # dynamic pillar count
            rest = shape[1:]
            opt = min(OPT_PILLARS, max_pillars)
            profile.set_shape(t.name, (1, *rest), (opt, *rest), (max_pillars, *rest))
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calib_inputs and not (calib_cache and calib_cache.is_file()):
            raise EngineError("INT8 TensorRT needs calibration frames or a calibration cache", where)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _Calibrator.create(calib_inputs or [], calib_cache or Path("/dev/null"))
        config.set_calibration_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise EngineError(f"TensorRT failed to build a {precision} engine (see the TensorRT log above)", where)
    return bytes(blob)


class TensorRTEngine:
    """Runs a deserialized TensorRT engine on CUDA; inputs/outputs are numpy like every Engine."""

    def __init__(self, engine_bytes: bytes, name: str = "tensorrt", where: str = TRT_DIR) -> None:
        import tensorrt as trt
        import torch

        self.name, self.where, self._torch = name, where, torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineError("TensorRT could not deserialize the engine", where)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if sorted(self.inputs) != sorted(INPUT_NAMES) or sorted(self.outputs) != sorted(OUTPUT_NAMES):
            raise EngineError(f"engine has tensors {names}; expected the FusionNet inputs/outputs", where)
        self._dtypes = {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in names}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch on the GPU; returns numpy outputs keyed by OUTPUT_NAMES."""
        torch = self._torch
        held = {}
        with torch.cuda.stream(self.stream):
            for n in self.inputs:
                arr = np.ascontiguousarray(inputs[n], dtype=self._dtypes[n])
                held[n] = torch.from_numpy(arr).cuda(non_blocking=True)
                self.context.set_input_shape(n, arr.shape)
                self.context.set_tensor_address(n, held[n].data_ptr())
            outs = {}
            for n in self.outputs:
                shape = tuple(self.context.get_tensor_shape(n))
                outs[n] = torch.empty(shape, dtype=getattr(torch, np.dtype(self._dtypes[n]).name), device="cuda")
                self.context.set_tensor_address(n, outs[n].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execution failed", self.where)
        self.stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}


def validate_engine(data: bytes) -> bool:
    """True when TensorRT can deserialize ``data`` on this machine."""
    import tensorrt as trt

    return trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(data) is not None


def load_tensorrt(model_dir: str | Path, precision: str = "fp16", allow_build: bool = False, max_pillars: int = 16000,
                  calib_inputs: list[dict] | None = None) -> TensorRTEngine:
    """The cached engine of this machine for ``model_dir``; builds it only when ``allow_build`` (export time)."""
    ok, reason = tensorrt_available()
    if not ok:
        raise EngineError(f"TensorRT backend unavailable: {reason}")
    model_dir = Path(model_dir)
    key = engine_key(model_dir, precision)
    cache = EngineCache(export_dir(model_dir) / TRT_DIR)
    calib_cache = export_dir(model_dir) / TRT_CALIB_CACHE

    def build() -> bytes:
        onnx_bytes = read_verified(model_dir, ONNX_FP32)
        return build_engine(onnx_bytes, precision, max_pillars, calib_inputs, calib_cache)

    data = cache.get_or_build(key, build, allow_build, validate_engine)
    log.info("TensorRT engine %s (%s, sha256 %s)", cache.paths(key)[0].name, precision,
             hashlib.sha256(data).hexdigest()[:12])
    return TensorRTEngine(data, name=f"tensorrt-{precision}" if precision != "fp16" else "tensorrt",
                          where=str(cache.paths(key)[0]))
