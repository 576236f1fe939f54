"""Labelled real frames as training samples: points cropped to the camera's field of view (KITTI labels only
exist there, so anything outside would teach the detector to ignore real cars)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from perception.detector.config import ModelConfig
from perception.detector.data import frame_to_sample, save_sample
from perception.errors import DataError
from perception.frame import Frame

REPO = Path(__file__).resolve().parents[2]


def load_real_frames(folders: list[str]) -> list[Frame]:
    """Every labelled frame of the KITTI folders ``folders`` (relative paths are taken from the repo root)."""
    from perception.io import KittiDataset

    frames: list[Frame] = []
    for name in folders:
        path = REPO / name  # an absolute name stays as it is
        ds = KittiDataset(path)
        if not ds.has_labels:
            raise DataError("real training data needs labels (label_2/)", str(path))
        frames += list(ds)
    return frames


def fov_frame(frame: Frame) -> Frame:
    """The frame with only the points that project into its camera image."""
    if frame.rig is None or frame.image is None:
        raise DataError("a labelled real training frame needs its camera and calibration", frame.frame_id)
    _, _, visible = frame.rig.project(frame.points[:, :3])
    return replace(frame, points=frame.points[visible])


def write_real_samples(frames: list[Frame], cfg: ModelConfig, root: Path) -> list[Path]:
    """Write FOV-cropped training samples of ``frames`` into ``root``; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        paths.append(root / f"real_{i:04d}.npz")
        save_sample(paths[-1], frame_to_sample(fov_frame(frame), cfg))
    return paths
