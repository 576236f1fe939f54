"""Camera corruptions of an (H, W, 3) uint8 RGB image: motion blur, brightness, darkness, weather, lost view.

Pixel values are treated as gamma-2.2 encoded: exposure changes and weather act on linear radiance.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perception.rig import Rig
from perception.sim.weather import WeatherModel

GAMMA = 2.2
#: Image area the simulator's streak / flake counts are made for (KITTI's 1242 x 375).
REFERENCE_AREA = 1242 * 375


def to_linear(image: np.ndarray) -> np.ndarray:
    """uint8 gamma-encoded -> float32 linear 0..1."""
    return np.power(image.astype(np.float32) / 255.0, GAMMA)


def to_uint8(linear: np.ndarray) -> np.ndarray:
    """float linear 0..1 -> uint8 gamma-encoded (clipped)."""
    return (np.power(np.clip(linear, 0.0, 1.0), 1.0 / GAMMA) * 255.0 + 0.5).astype(np.uint8)


def motion_blur(image: np.ndarray, length_share: float) -> np.ndarray:
    """Horizontal box blur over ``length_share`` of the image width (the camera panning during exposure)."""
    k = max(1, int(round(length_share * image.shape[1])))
    if k == 1:
        return image.copy()
    pad = np.pad(image.astype(np.float32), ((0, 0), (k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    c = np.cumsum(pad, axis=1)
    c = np.concatenate([np.zeros_like(c[:, :1]), c], axis=1)
    return np.clip((c[:, k:] - c[:, :-k]) / k + 0.5, 0, 255).astype(np.uint8)


def brighten(image: np.ndarray, delta: float) -> np.ndarray:
    """Over-exposure: add ``delta`` (share of full scale) to the encoded value."""
    return np.clip(image.astype(np.float32) + 255.0 * delta, 0, 255).astype(np.uint8)


def darken(image: np.ndarray, gain: float, rng: np.random.Generator, read_noise: float = 0.004) -> np.ndarray:
    """Low light: scale linear radiance by ``gain``, then the sensor's shot and read noise at that light level
    (the image amplified back to a fixed brightness would show it as grain)."""
    lin = to_linear(image) * gain
    noise = rng.normal(0.0, 1.0, lin.shape).astype(np.float32) * np.sqrt(lin * 0.002 + read_noise ** 2)
    return to_uint8(lin + noise)


def mask_view(image: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Black out a vertical band ``share`` of the width at a random position (part of the view lost)."""
    out = image.copy()
    w = image.shape[1]
    band = int(round(share * w))
    x0 = int(rng.integers(0, w - band + 1))
    out[:, x0:x0 + band] = 0
    return out


def depth_map(rig: Rig, points: np.ndarray, shape: tuple[int, int], step: int = 4) -> np.ndarray:
    """(H, W) distance of the surface seen by each pixel (m): the ground plane below the LiDAR, nearer where a
    projected LiDAR return says so, 1e4 for the sky. A recorded image has no depth; weather needs one."""
    h, w = shape
    rays = rig.camera_rays(step)  # (h', w', 3) LiDAR frame
    origin = rig.camera_to_lidar[:3, 3]
    dz = rays[..., 2]
    t_ground = np.where(dz < -1e-3, (-rig.lidar_height - origin[2]) / np.minimum(dz, -1e-3), 1e4)
    depth = np.minimum(np.clip(t_ground, 0.0, 1e4), 1e4)
    if len(points):
        uv, d, vis = rig.project(points[:, :3].astype(np.float64))
        cu = (uv[vis, 0] // step).astype(np.int64)
        cv = (uv[vis, 1] // step).astype(np.int64)
        ok = (cu < depth.shape[1]) & (cv < depth.shape[0])
        np.minimum.at(depth, (cv[ok], cu[ok]), d[vis][ok])
    full = np.repeat(np.repeat(depth, step, axis=0), step, axis=1)
    return full[:h, :w].astype(np.float32)


def camera_weather(image: np.ndarray, depth: np.ndarray, model: WeatherModel, rng: np.random.Generator) -> np.ndarray:
    """Fog / rain / snow on a recorded image with the simulator's :class:`~perception.sim.weather.WeatherModel`
    (haze by depth, rain darkening and streaks, snow flakes; counts scaled to the image area)."""
    area = image.shape[0] * image.shape[1] / REFERENCE_AREA
    scaled = dataclasses.replace(model, streaks=int(model.streaks * area), flakes=int(model.flakes * area))
    return to_uint8(scaled.apply_camera(to_linear(image), depth, rng))
