"""LiDAR corruptions of a point cloud: beam reduction, point and sector drop, crosstalk, weather.

Every function takes an (N, 4) float32 ``x, y, z, intensity`` cloud in the LiDAR frame and a
``numpy`` generator and returns a new cloud; none modifies its input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perception.sim.lidar import NOISE_FLOOR, BeamPattern, sector_mask
from perception.sim.weather import WeatherModel


def beam_index(points: np.ndarray, lidar_model: dict[str, Any] | None = None) -> np.ndarray:
    """(N,) index of the beam (0 = top) each point most likely came from, from its elevation angle.

    The beam elevations are the rig's ``lidar.model`` (:class:`perception.sim.lidar.BeamPattern`; HDL-64E when
    the rig has none, as for KITTI, whose scans carry no ring field); each point takes the nearest one.
    """
    elev = np.sort(BeamPattern.from_model(lidar_model).elevations)  # ascending
    p = np.asarray(points, dtype=np.float64)
    e = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
    i = np.clip(np.searchsorted(elev, e), 1, len(elev) - 1)
    nearest = np.where(np.abs(e - elev[i - 1]) <= np.abs(elev[i] - e), i - 1, i)
    return (len(elev) - 1 - nearest).astype(np.int64)


def reduce_beams(points: np.ndarray, beams: int, lidar_model: dict[str, Any] | None = None) -> np.ndarray:
    """Keep every k-th beam so that ``beams`` of the sensor's beams remain (64 -> 32 keeps the even ones)."""
    idx = beam_index(points, lidar_model)
    channels = len(BeamPattern.from_model(lidar_model).elevations)
    step = max(1, channels // beams)
    return points[idx % step == 0].copy()


def drop_points(points: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Drop a random ``share`` of the points."""
    return points[rng.random(len(points)) >= share].copy()


def drop_sector(points: np.ndarray, width_deg: float, rng: np.random.Generator,
                centre_range_deg: float = 30.0) -> np.ndarray:
    """Remove every point in one azimuth sector ``width_deg`` wide, centred at a random azimuth within
    ``±centre_range_deg`` of straight ahead (where the detector looks)."""
    centre = rng.uniform(-centre_range_deg, centre_range_deg)
    inside = sector_mask(points[:, :2], centre - width_deg / 2, centre + width_deg / 2)
    return points[~inside].copy()


def add_crosstalk(points: np.ndarray, share: float, rng: np.random.Generator,
                  range_m: tuple[float, float] = (1.0, 70.0)) -> np.ndarray:
    """Add ``share * N`` ghost returns (another LiDAR's pulses): along directions of real returns, at a random
    range and a low random intensity."""
    n = int(round(share * len(points)))
    if n == 0 or len(points) == 0:
        return points.copy()
    src = points[rng.integers(0, len(points), n), :3].astype(np.float64)
    dirs = src / np.maximum(np.linalg.norm(src, axis=1, keepdims=True), 1e-6)
    ghosts = dirs * rng.uniform(*range_m, n)[:, None]
    out = np.concatenate([ghosts, rng.uniform(0.0, 0.3, n)[:, None]], axis=1).astype(np.float32)
    return np.concatenate([points, out])


def lidar_weather(points: np.ndarray, model: WeatherModel, rng: np.random.Generator) -> np.ndarray:
    """Weather on a recorded cloud with the simulator's :class:`~perception.sim.weather.WeatherModel`: two-way
    attenuation of the intensity, the returns it pushes below the noise floor lost, spurious near returns.

    Only existing returns can become spurious ones (a recorded cloud has no rays that hit nothing).
    """
    p = points.astype(np.float64)
    r = np.linalg.norm(p[:, :3], axis=1)
    falloff = np.minimum(1.0, (25.0 / np.maximum(r, 1.0)) ** 2)
    att = np.exp(-2.0 * model.lidar_extinction * r)
    before = np.clip((NOISE_FLOOR - p[:, 3] * falloff) / NOISE_FLOOR, 0.0, 1.0)
    after = np.clip((NOISE_FLOOR - p[:, 3] * att * falloff) / NOISE_FLOOR, 0.0, 1.0)
    lost = rng.random(len(p)) < (after - before) / np.maximum(1.0 - before, 1e-9)
    wet = 1.0 - 0.45 * model.surface_wetness * (p[:, 2] < -1.3)  # wet ground returns less (specular loss)
    ranges = np.where(lost, np.inf, r)
    ranges, inten = model.lidar_scatter(ranges, p[:, 3] * att * wet, rng)
    ok = np.isfinite(ranges) & (ranges > 0.5)
    dirs = p[ok, :3] / np.maximum(r[ok, None], 1e-9)
    return np.concatenate([dirs * ranges[ok, None], np.clip(inten[ok], 0.0, 1.0)[:, None]], axis=1).astype(np.float32)
