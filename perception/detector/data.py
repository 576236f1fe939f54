"""Training data: simulated frames cached as compact samples, augmentation, batching."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.detector.config import ModelConfig
from perception.detector.inputs import FrameInputs, lidar_to_feature_matrix, resize_image
from perception.detector.loss import heatmap_target
from perception.detector.object_augment import object_augment
from perception.detector.voxelize import clean_points, voxelize
from perception.errors import DataError
from perception.frame import Frame, boxes_to_array
from perception.rig import Rig

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One cached training sample (LiDAR points already cropped to the detection range)."""

    points: np.ndarray  # (N, 4) float32
    image: np.ndarray  # (h, w, 3) uint8, resized
    lidar2img: np.ndarray  # (3, 4) float32
    boxes: np.ndarray  # (G, 7) float32
    labels: np.ndarray  # (G,) int64 index into cfg.classes
    has_camera: bool = True


def frame_to_sample(frame: Frame, cfg: ModelConfig) -> Sample:
    """Keep what training needs: in-range points, the resized image, GT of the detection classes."""
    pts, _, _ = clean_points(frame.points, cfg.point_range)
    keep = [b for b in frame.boxes if b.label in cfg.classes and b.num_points != 0]
    boxes = boxes_to_array(keep).astype(np.float32)
    labels = np.array([cfg.classes.index(b.label) for b in keep], np.int64)
    h, w = cfg.image_size
    image = resize_image(frame.image, cfg) if frame.image is not None else np.zeros((h, w, 3), np.uint8)
    assert frame.rig is not None
    return Sample(pts, image, lidar_to_feature_matrix(frame.rig, cfg), boxes, labels, frame.image is not None)


def save_sample(path: Path, s: Sample) -> None:
    """Write a sample as an uncompressed .npz (atomic rename, so a cut session leaves no half file)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, points=s.points, image=s.image, lidar2img=s.lidar2img, boxes=s.boxes, labels=s.labels,
             has_camera=np.array(s.has_camera))
    tmp.replace(path)


def load_sample(path: Path) -> Sample:
    """Read a cached sample; a corrupt file is a DataError naming it."""
    try:
        with np.load(path) as z:
            return Sample(z["points"], z["image"], z["lidar2img"], z["boxes"], z["labels"], bool(z["has_camera"]))
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"corrupt cached sample: {exc}", str(path)) from exc


def build_cache(root: Path, rig: Rig, split: str, n_frames: int, seed: int, cfg: ModelConfig,
                frames_per_drive: int = 10, workers: int = 2) -> list[Path]:
    """Generate ``n_frames`` simulated frames of ``split`` into ``root`` (resumes: existing files are kept)."""
    from perception.sim import iter_split

    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"{i:05d}.npz" for i in range(n_frames)]
    if all(p.exists() for p in paths):
        return paths
    done = sum(p.exists() for p in paths)
    log.info("simulating %d %s frames into %s (%d cached)", n_frames, split, root, done)
    frames = iter_split(rig, split, n_frames, seed=seed, frames_per_drive=frames_per_drive, workers=workers)
    for path, frame in tqdm(zip(paths, frames), total=n_frames, desc=f"sim {split}", unit="frame"):
        if not path.exists():
            save_sample(path, frame_to_sample(frame, cfg))
    return paths


def augment(s: Sample, rng: np.random.Generator, cfg: ModelConfig, z_shift_std: float = 0.0) -> Sample:
    """Random flip about the x axis (image mirrored too), rotation about z, scaling and, with ``z_shift_std``
    > 0, a vertical shift of the whole scene ~ N(0, z_shift_std) m (simulated ground is flat at one height, real
    ground is not: without it the network learns a constant box height instead of reading it from the points).

    The camera stays consistent because ``lidar2img`` absorbs the inverse of the LiDAR transform.
    """
    pts, boxes, image, p = s.points.copy(), s.boxes.copy(), s.image, s.lidar2img.astype(np.float64)
    if rng.random() < 0.5:
        pts[:, 1] *= -1
        boxes[:, 1] *= -1
        boxes[:, 6] *= -1
        image = image[:, ::-1].copy()
        wf = cfg.image_size[1] / 8.0
        flip_img = np.array([[-1.0, 0, wf], [0, 1, 0], [0, 0, 1]])
        p = flip_img @ p @ np.diag([1.0, -1.0, 1.0, 1.0])
    theta = rng.uniform(-math.pi / 12, math.pi / 12)
    scale = rng.uniform(0.95, 1.05)
    c, sn = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1]]) * scale
    pts[:, :3] = pts[:, :3] @ rot.T
    boxes[:, :3] = boxes[:, :3] @ rot.T
    boxes[:, 3:6] *= scale
    boxes[:, 6] = (boxes[:, 6] + theta + math.pi) % (2 * math.pi) - math.pi
    a = np.eye(4)
    a[:3, :3] = rot
    if z_shift_std > 0:
        dz = rng.normal(0.0, z_shift_std)
        pts[:, 2] += dz
        boxes[:, 2] += dz
        a[2, 3] = dz
    p = p @ np.linalg.inv(a)
    r = cfg.point_range
    inside = (boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) & (boxes[:, 1] < r[4])
    return Sample(pts.astype(np.float32), image, p.astype(np.float32), boxes[inside], s.labels[inside], s.has_camera)


class SampleDataset(torch.utils.data.Dataset):
    """Cached samples → (FrameInputs, heatmap target, boxes, labels), with optional augmentation."""

    def __init__(self, paths: list[Path], cfg: ModelConfig, train: bool, seed: int = 0,
                 corruption_share: float = 0.0, corruption_names: tuple[str, ...] = (),
                 object_rotation: float = 0.0, object_point_drop: float = 0.0, z_shift_std: float = 0.0) -> None:
        self.paths, self.cfg, self.train = paths, cfg, train
        self.object_rotation, self.object_point_drop = object_rotation, object_point_drop
        self.z_shift_std = z_shift_std
        self.rng = np.random.default_rng(seed)
        self.corruption_share = corruption_share  # share of training samples corrupted (0: off)
        self.corruption_names = corruption_names

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[FrameInputs, np.ndarray, np.ndarray, np.ndarray]:
        s = load_sample(self.paths[i])
        if self.train:
            s.points, s.boxes = object_augment(s.points, s.boxes, self.rng, self.object_rotation,
                                               self.object_point_drop)
            s = augment(s, self.rng, self.cfg, self.z_shift_std)
            if self.corruption_share > 0 and self.rng.random() < self.corruption_share:
                from perception.detector.corruption_augment import corrupt_sample

                s = corrupt_sample(s, self.corruption_names, self.rng)
        inputs = FrameInputs(voxelize(s.points, self.cfg), s.image, s.lidar2img, s.has_camera)
        return inputs, heatmap_target(s.boxes, s.labels, self.cfg), s.boxes, s.labels
