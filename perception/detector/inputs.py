"""Frame → network inputs (shared by training, inference and export): voxelise, resize, project."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from perception.detector.config import ModelConfig
from perception.detector.result import CAMERA_INVALID, CAMERA_MISSING, LIDAR_EMPTY, POINTS_DROPPED
from perception.detector.voxelize import Pillars, voxelize
from perception.errors import CalibrationError
from perception.frame import Frame
from perception.rig import Rig


@dataclass
class FrameInputs:
    """Everything the network needs for one frame, as numpy arrays."""

    pillars: Pillars
    image: np.ndarray  # (h, w, 3) uint8 at cfg.image_size (zeros when the camera is missing)
    lidar2img: np.ndarray  # (3, 4) float32: LiDAR xyz → image-feature pixel (stride 8) homogeneous coords
    camera_valid: bool
    degraded: list[str] = field(default_factory=list)


def lidar_to_feature_matrix(rig: Rig, cfg: ModelConfig) -> np.ndarray:
    """(3, 4) projection from the LiDAR frame into the camera's stride-8 feature map of the resized image."""
    h, w = cfg.image_size
    s = np.diag([w / rig.width / 8.0, h / rig.height / 8.0, 1.0])
    return (s @ rig.K @ rig.lidar_to_camera[:3, :]).astype(np.float32)


def resize_image(image: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Resize an RGB uint8 image to the network's input size (bilinear)."""
    h, w = cfg.image_size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def prepare_frame(frame: Frame, cfg: ModelConfig, where: str = "frame") -> FrameInputs:
    """Validate and convert a Frame. A missing or mismatched image gives a flagged LiDAR-only input."""
    if frame.rig is None:
        raise CalibrationError("frame has no calibration (rig); cannot place boxes or project to the camera",
                               f"{where}.rig")
    degraded: list[str] = []
    pillars = voxelize(frame.points, cfg)
    if pillars.dropped_nonfinite:
        degraded.append(POINTS_DROPPED)
    if len(pillars.coords) == 0:
        degraded.append(LIDAR_EMPTY)
    h, w = cfg.image_size
    image = np.zeros((h, w, 3), np.uint8)
    camera_valid = False
    if frame.image is None:
        degraded.append(CAMERA_MISSING)
    else:
        try:
            frame.rig.check_image(frame.image, f"{where}.image")
            image = resize_image(frame.image, cfg)
            camera_valid = True
        except CalibrationError:
            degraded.append(CAMERA_INVALID)
    return FrameInputs(pillars, image, lidar_to_feature_matrix(frame.rig, cfg), camera_valid, degraded)


def collate(batch: list[FrameInputs], bev_valid: list[bool] | None = None) -> dict[str, torch.Tensor]:
    """Stack per-frame inputs into the network's keyword arguments."""
    feats, nums, coords = [], [], []
    for b, item in enumerate(batch):
        p = item.pillars
        feats.append(p.features)
        nums.append(p.num_points)
        coords.append(np.concatenate([np.full((len(p.coords), 1), b, np.int64), p.coords], axis=1))
    out = {
        "pillar_features": torch.from_numpy(np.concatenate(feats)),
        "num_points": torch.from_numpy(np.concatenate(nums)),
        "coords": torch.from_numpy(np.concatenate(coords)),
        "image": torch.from_numpy(np.stack([i.image for i in batch])).permute(0, 3, 1, 2).float() / 255.0,
        "lidar2img": torch.from_numpy(np.stack([i.lidar2img for i in batch])),
        "camera_valid": torch.tensor([float(i.camera_valid) for i in batch]),
    }
    if bev_valid is not None:
        out["bev_valid"] = torch.tensor([float(v) for v in bev_valid])
    return out
