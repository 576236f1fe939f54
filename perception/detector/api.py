"""Inference API: ``FusionDetector.load(model_dir)(frame) -> DetectionResult``.

The one entry point nodes, the CLI and evaluation use. Pre-processing and post-processing run in
numpy; the network runs on an :class:`perception.engines.base.Engine` (PyTorch, ONNX Runtime, ...).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from perception.detector.checkpoint import load_model
from perception.detector.config import ModelConfig
from perception.detector.inputs import FrameInputs, prepare_frame
from perception.detector.postprocess import PostProcessConfig, attention_maps, decode
from perception.detector.refine import PillarIndex, refine_detections
from perception.detector.result import DetectionResult
from perception.engines.base import Engine
from perception.engines.torch_engine import TorchEngine
from perception.frame import Detection, Frame
from perception.trust.calibration import Calibration

log = logging.getLogger(__name__)


def engine_inputs(inputs: FrameInputs) -> dict[str, np.ndarray]:
    """Batch-1 numpy inputs of the network for one prepared frame."""
    p = inputs.pillars
    coords = np.concatenate([np.zeros((len(p.coords), 1), np.int64), p.coords], axis=1)
    return {
        "pillar_features": p.features,
        "num_points": p.num_points,
        "coords": coords,
        "image": (inputs.image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy(),
        "lidar2img": inputs.lidar2img[None].astype(np.float32),
        "camera_valid": np.array([1.0 if inputs.camera_valid else 0.0], np.float32),
    }


def add_geometry(detections: list[Detection], points: np.ndarray) -> None:
    """Set each detection's point-geometry descriptor (:mod:`perception.ood.geometry`) from the frame's points."""
    if not detections:
        return
    from perception.ood.geometry import box_point_descriptors

    boxes = np.stack([np.r_[d.box.center, d.box.size, d.box.yaw] for d in detections])
    for d, g in zip(detections, box_point_descriptors(points, boxes)):
        d.geometry = g


class FusionDetector:
    """A loaded fusion detector with its calibration, running on one engine."""

    def __init__(self, cfg: ModelConfig, engine: Engine, calibration: Calibration, model_id: str = "",
                 postprocess: PostProcessConfig | None = None) -> None:
        self.cfg, self.engine, self.calibration, self.model_id = cfg, engine, calibration, model_id
        self.postprocess = postprocess or PostProcessConfig()

    @classmethod
    def load(cls, model_dir: str | Path, backend: str = "torch", num_threads: int | None = None,
             postprocess: PostProcessConfig | None = None) -> FusionDetector:
        """Load ``model_dir`` (config, weights, calibration) on ``backend``; raises ModelError/EngineError.

        ``backend="auto"`` picks the fastest backend that passed parity in ``perception bench``
        (``export/engines.json``), falling back to ``torch``.
        """
        model_dir = Path(model_dir)
        net, cfg, calibration = load_model(model_dir)
        from perception.engines.registry import resolve_backend

        backend = resolve_backend(model_dir, backend)
        if backend == "torch":
            engine: Engine = TorchEngine(net, num_threads)
        else:
            from perception.engines.registry import load_engine

            engine = load_engine(model_dir, backend=backend, num_threads=num_threads)
        return cls(cfg.model, engine, calibration, model_id=f"{cfg.model.name}@{backend}", postprocess=postprocess)

    def __call__(self, frame: Frame) -> DetectionResult:
        """Detect objects in one frame. Never raises on bad sensor data: it flags a degraded result."""
        t0 = time.perf_counter()
        inputs = prepare_frame(frame, self.cfg, where=frame.frame_id or "frame")
        t1 = time.perf_counter()
        p = inputs.pillars
        dropped = p.dropped_nonfinite
        if len(p.coords) == 0:
            return DetectionResult([], degraded=inputs.degraded, timings_ms={"voxelize": (t1 - t0) * 1e3},
                                   dropped_points=dropped, model_id=self.model_id)
        raw = self.engine.run(engine_inputs(inputs))
        t2 = time.perf_counter()
        dets = decode(raw, self.cfg, self.calibration, self.postprocess)
        if not inputs.camera_valid:  # LiDAR-only: every bit of evidence is LiDAR, whatever the masked softmax left
            for d in dets:
                d.modality_share = {"lidar": 1.0, "camera": 0.0}
        add_geometry(dets, frame.points)  # before refining: the OOD statistics describe the network's boxes
        if self.postprocess.refine_boxes:
            refine_detections(dets, PillarIndex(p, self.cfg))
        bev_map, img_map = attention_maps(dets, self.cfg)
        t3 = time.perf_counter()
        return DetectionResult(
            detections=dets, degraded=inputs.degraded,
            timings_ms={"voxelize": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3},
            dropped_points=dropped, frame_embedding=raw["frame_embedding"][0], bev_attention=bev_map,
            image_attention=img_map, model_id=self.model_id)
