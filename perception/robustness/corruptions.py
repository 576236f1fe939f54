"""The corruption suite: named corruptions of a :class:`~perception.frame.Frame`, three severities each.

    from perception.robustness import corrupt
    foggy = corrupt(frame, "fog", severity=2, seed=0)
    late = corrupt(frame, "temporal_misalignment", 1, history=[previous_frame])   # camera of an earlier frame

Deterministic: the same frame, name, severity and seed give the same output (the random stream is seeded
by all four). Ground truth, stamps of the LiDAR and the frame id are left as they are; the corrupted frame
records what was done in ``meta["corruption"]``. Simulated and real KITTI frames are treated alike.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.errors import ConfigError, DataError
from perception.frame import Frame
from perception.rig import make_transform, rpy_to_matrix
from perception.robustness import camera as cam
from perception.robustness import lidar as lid
from perception.sim.weather import WeatherModel

SEVERITIES: tuple[int, ...] = (1, 2, 3)
#: Weather intensity (0..1, :class:`~perception.sim.weather.WeatherModel`) per severity; 0.9 is the OOD
#: benchmark's "heavy" (:data:`perception.ood.shifts.HEAVY`).
WEATHER_INTENSITY = (0.3, 0.6, 0.9)


class NotApplicable(DataError):
    """The corruption cannot be applied to this frame (e.g. no earlier frame for a temporal misalignment)."""


@dataclass(frozen=True)
class Corruption:
    """One corruption: its per-severity parameter and the function applying it."""

    name: str
    sensor: str  # "lidar", "camera", "both" or "calibration"
    levels: tuple[Any, Any, Any]  # parameter at severity 1, 2, 3
    unit: str  # what the parameter means
    apply: Callable[[Frame, Any, np.random.Generator, Sequence[Frame]], Frame]
    needs_rig: bool = False  # needs the frame's rig (projection, extrinsics)
    needs_history: bool = False  # needs earlier frames of the same sequence

    def describe(self, severity: int) -> str:
        """e.g. ``fog severity 2 (intensity 0.6)``."""
        return f"{self.name} severity {severity} ({self.unit} {self.levels[severity - 1]})"


def _with(frame: Frame, **changes: Any) -> Frame:
    return dataclasses.replace(frame, meta=dict(frame.meta), **changes)


def _lidar_model(frame: Frame) -> dict[str, Any] | None:
    return frame.rig.lidar_model if frame.rig is not None else None


def _camera_only(fn: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]):
    def apply(frame: Frame, level: Any, rng: np.random.Generator, history: Sequence[Frame]) -> Frame:
        return frame if frame.image is None else _with(frame, image=fn(frame.image, level, rng))
    return apply


def _points_only(fn: Callable[[np.ndarray, Any, np.random.Generator, Frame], np.ndarray]):
    def apply(frame: Frame, level: Any, rng: np.random.Generator, history: Sequence[Frame]) -> Frame:
        return _with(frame, points=fn(frame.points, level, rng, frame))
    return apply


def _weather(kind: str):
    def apply(frame: Frame, level: float, rng: np.random.Generator, history: Sequence[Frame]) -> Frame:
        model = WeatherModel.from_options(kind, level)
        points = lid.lidar_weather(frame.points, model, rng)
        image = frame.image
        if image is not None:
            if frame.rig is None:
                raise NotApplicable(f"{kind} on the camera needs the frame's rig (depth of each pixel)",
                                    frame.frame_id or "frame")
            depth = cam.depth_map(frame.rig, frame.points, image.shape[:2])
            image = cam.camera_weather(image, depth, model, rng)
        return _with(frame, points=points, image=image)
    return apply


def _missing_camera(frame: Frame, share: float, rng: np.random.Generator, history: Sequence[Frame]) -> Frame:
    if frame.image is None:
        return frame
    if share >= 1.0:
        return _with(frame, image=None)
    return _with(frame, image=cam.mask_view(frame.image, share, rng))


def _spatial(frame: Frame, level: tuple[float, float], rng: np.random.Generator,
             history: Sequence[Frame]) -> Frame:
    """The rig the detector is given is off by a rotation of ``level[0]`` degrees about a random axis and a
    translation of ``level[1]`` metres in a random direction (a bumped camera, a stale calibration)."""
    if frame.rig is None:
        raise NotApplicable("spatial misalignment needs the frame's rig", frame.frame_id or "frame")
    deg, metres = level
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rpy = np.deg2rad(deg) * axis  # small angles: roll/pitch/yaw components of the error
    shift = rng.normal(size=3)
    error = make_transform(rpy_to_matrix(*rpy), metres * shift / np.linalg.norm(shift))
    rig = dataclasses.replace(frame.rig, lidar_to_camera=error @ frame.rig.lidar_to_camera)
    return _with(frame, rig=rig)


def _temporal(frame: Frame, lag: int, rng: np.random.Generator, history: Sequence[Frame]) -> Frame:
    """The camera image (and its stamp) of the frame ``lag`` frames earlier; ``history`` holds the earlier frames
    of the same sequence, newest last."""
    if frame.image is None:
        return frame
    if len(history) < lag:
        raise NotApplicable(f"temporal misalignment of {lag} frame(s) needs {lag} earlier frame(s) of the same "
                            f"sequence, got {len(history)}", frame.frame_id or "frame")
    earlier = history[-lag]
    if earlier.image is None or earlier.image.shape != frame.image.shape:
        raise NotApplicable(f"the frame {lag} earlier has no image of the same size", earlier.frame_id or "frame")
    return _with(frame, image=earlier.image.copy(), image_stamp_ns=earlier.image_stamp_ns or earlier.stamp_ns)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("beam_reduction", "lidar", (32, 16, 8), "beams kept (of 64)",
               _points_only(lambda p, beams, rng, f: lid.reduce_beams(p, beams, _lidar_model(f)))),
    Corruption("point_drop", "lidar", (0.5, 0.75, 0.9), "share of points dropped",
               _points_only(lambda p, share, rng, f: lid.drop_points(p, share, rng))),
    Corruption("sector_drop", "lidar", (30.0, 60.0, 90.0), "degrees of azimuth lost (within ±30° of ahead)",
               _points_only(lambda p, width, rng, f: lid.drop_sector(p, width, rng))),
    Corruption("crosstalk", "lidar", (0.02, 0.05, 0.1), "ghost points added, share of the cloud",
               _points_only(lambda p, share, rng, f: lid.add_crosstalk(p, share, rng))),
    Corruption("fog", "both", WEATHER_INTENSITY, "intensity", _weather("fog"), needs_rig=True),
    Corruption("rain", "both", WEATHER_INTENSITY, "intensity", _weather("rain"), needs_rig=True),
    Corruption("snow", "both", WEATHER_INTENSITY, "intensity", _weather("snow"), needs_rig=True),
    Corruption("motion_blur", "camera", (0.005, 0.01, 0.02), "blur length, share of the image width",
               _camera_only(lambda im, share, rng: cam.motion_blur(im, share))),
    Corruption("brightness", "camera", (0.2, 0.35, 0.5), "added to every pixel, share of full scale",
               _camera_only(lambda im, delta, rng: cam.brighten(im, delta))),
    Corruption("darkness", "camera", (0.3, 0.1, 0.03), "linear light kept", _camera_only(cam.darken)),
    Corruption("missing_camera", "camera", (1 / 3, 2 / 3, 1.0), "share of the view lost (1 = no image)",
               _missing_camera),
    Corruption("spatial_misalignment", "calibration", ((0.5, 0.02), (1.0, 0.05), (2.0, 0.1)),
               "extrinsic error (degrees, metres)", _spatial, needs_rig=True),
    Corruption("temporal_misalignment", "calibration", (1, 2, 3), "camera frames late", _temporal,
               needs_history=True),
)}
#: The corruptions a cached training sample (no rig, no earlier frames) can take: the augmentation set.
AUGMENTABLE: tuple[str, ...] = tuple(n for n, c in CORRUPTIONS.items() if not c.needs_rig and not c.needs_history)


def get_corruption(name: str) -> Corruption:
    """The corruption called ``name``; ConfigError listing the valid names."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}", "corruption")
    return CORRUPTIONS[name]


def check_severity(severity: int) -> int:
    """``severity`` when it is one of :data:`SEVERITIES`; ConfigError listing them otherwise."""
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ConfigError(f"unknown severity {severity!r}; valid: {', '.join(map(str, SEVERITIES))}", "severity")
    return int(severity)


def corruption_rng(name: str, severity: int, seed: int, frame_id: str) -> np.random.Generator:
    """The random stream of one (corruption, severity, seed, frame)."""
    return np.random.default_rng([zlib.crc32(name.encode()), severity, seed, zlib.crc32(frame_id.encode())])


def corrupt(frame: Frame, name: str, severity: int, seed: int = 0, history: Sequence[Frame] = ()) -> Frame:
    """``frame`` under corruption ``name`` at ``severity`` (1..3); the input frame is not modified.

    ``history``: earlier frames of the same sequence, newest last (only ``temporal_misalignment`` uses it).
    Raises ConfigError for an unknown name or severity, :class:`NotApplicable` when the frame lacks what the
    corruption needs.
    """
    c = get_corruption(name)
    severity = check_severity(severity)
    rng = corruption_rng(name, severity, seed, frame.frame_id)
    out = c.apply(frame, c.levels[severity - 1], rng, history)
    if out is frame:
        out = _with(frame)
    out.meta["corruption"] = {"name": name, "severity": severity, "seed": seed, "level": c.levels[severity - 1]}
    return out
