"""ONNX Runtime engine: one exported model on one or more execution providers (CPU, CUDA, TensorRT)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from perception.detector.postprocess import OUTPUT_NAMES
from perception.engines.base import INPUT_NAMES
from perception.errors import EngineError

log = logging.getLogger(__name__)

#: dtype of each network input (what :func:`perception.detector.api.engine_inputs` builds).
INPUT_DTYPES = {"pillar_features": np.float32, "num_points": np.int64, "coords": np.int64, "image": np.float32,
                "lidar2img": np.float32, "camera_valid": np.float32}


def session_options(num_threads: int | None = None) -> Any:
    """ORT session options: full graph optimisation, ``num_threads`` intra-op threads, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: constant-folding notes are not the user's business
    if num_threads:
        so.intra_op_num_threads = num_threads
        so.inter_op_num_threads = 1
    # Idle intra-op threads sleep instead of spin-waiting between ops and runs: in a node a spinning pool
    # burns the cores that the ROS executor and the sibling nodes (sensor health, OOD, crowd) need.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


class OnnxRuntimeEngine:
    """Runs an ONNX model (bytes verified by the caller) with ONNX Runtime; outputs keyed by OUTPUT_NAMES."""

    def __init__(self, model: bytes, name: str, providers: list[Any] | None = None, num_threads: int | None = None,
                 where: str = "model.onnx") -> None:
        import onnxruntime as ort

        self.name, self.where = name, where
        try:
            self.session = ort.InferenceSession(model, session_options(num_threads),
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise EngineError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}", where) from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise EngineError(f"model has inputs {inputs} and outputs {outputs}; expected {list(INPUT_NAMES)} → "
                              f"{list(OUTPUT_NAMES)} (exported from another network?)", where)
        self._outputs = outputs
        self.providers = self.session.get_providers()

    @classmethod
    def from_path(cls, path: str | Path, name: str = "onnxruntime", providers: list[Any] | None = None,
                  num_threads: int | None = None) -> OnnxRuntimeEngine:
        """Load an ONNX file directly (no manifest check: for freshly written files during export)."""
        path = Path(path)
        if not path.is_file():
            raise EngineError("ONNX model not found", str(path))
        return cls(path.read_bytes(), name, providers, num_threads, where=str(path))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs keyed by INPUT_NAMES (batch 1) → every network output as numpy."""
        missing = [k for k in INPUT_NAMES if k not in inputs]
        if missing:
            raise EngineError(f"missing network inputs {missing}", self.where)
        feed = {k: np.ascontiguousarray(inputs[k], dtype=INPUT_DTYPES[k]) for k in INPUT_NAMES}
        try:
            values = self.session.run(self._outputs, feed)
        except Exception as exc:
            raise EngineError(f"ONNX Runtime failed: {str(exc).splitlines()[0][:300]}", self.where) from exc
        return dict(zip(self._outputs, values))
