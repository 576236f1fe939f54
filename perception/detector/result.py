"""What one detector call returns: detections plus the evidence the trust layer needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perception.frame import Detection

#: Reasons a result can be degraded, as reported in ``DetectionResult.degraded``.
CAMERA_MISSING = "camera_missing"
CAMERA_INVALID = "camera_invalid"
LIDAR_EMPTY = "lidar_empty"
POINTS_DROPPED = "nonfinite_points_dropped"
#: Reasons that mean the network ran without the camera (LiDAR-only).
CAMERA_UNUSED = (CAMERA_MISSING, CAMERA_INVALID)


@dataclass
class DetectionResult:
    """Output of :meth:`perception.detector.api.FusionDetector.__call__` for one :class:`Frame`."""

    detections: list[Detection]
    degraded: list[str] = field(default_factory=list)  # e.g. ["camera_missing"], ["lidar_empty"]
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage: voxelize, lidar, camera, decoder, post
    dropped_points: int = 0  # NaN/inf or out-of-range points removed before voxelisation
    frame_embedding: np.ndarray | None = None  # (D,) pooled BEV + image features, for OOD scoring
    bev_attention: np.ndarray | None = None  # (H, W) attention mass over BEV cells, summed over detections
    image_attention: np.ndarray | None = None  # (h, w) attention mass over image feature cells
    model_id: str = ""

    @property
    def is_degraded(self) -> bool:
        """True when the result was produced without a full set of healthy inputs."""
        return bool(self.degraded)

    @property
    def camera_used(self) -> bool:
        """False when the network ran LiDAR-only (camera missing or unusable)."""
        return camera_used(self.degraded)


def camera_used(degraded: list[str]) -> bool:
    """False when ``degraded`` says the network ran without the camera."""
    return not any(reason in CAMERA_UNUSED for reason in degraded)
