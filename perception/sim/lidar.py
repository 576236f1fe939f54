"""Spinning LiDAR by ray casting: beam pattern, range noise, material/incidence intensity, dropouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception.errors import ConfigError
from perception.sim import materials as mat
from perception.sim.options import DEFAULT_LIDAR_MODEL, LIDAR_MODEL_KEYS
from perception.sim.raycast import FrameScene, rotate
from perception.sim.texture import texture_noise
from perception.sim.weather import WeatherModel
from perception.sim.world import World

NOISE_FLOOR = 0.012  # received intensity below which a return is lost (after range falloff)


def _hdl64_angles(up: float, down: float, channels: int) -> np.ndarray:
    """Velodyne HDL-64E layout: the upper half of the lasers packed in the top ~39 % of the field of view
    (~1/3 deg apart for +2..-24.8 deg), the lower half spread below (~1/2 deg)."""
    span = up - down
    upper = channels // 2
    return np.concatenate([np.linspace(up, up - 0.3855 * span, upper),
                           np.linspace(up - 0.4042 * span, down, channels - upper)])


@dataclass
class BeamPattern:
    """Ray directions of one sweep plus the sensor's range/noise characteristics.

    Beams are spread uniformly over ``vertical_fov_deg``, except 64-beam patterns which follow the
    HDL-64E's two-block layout unless ``vertical_layout: uniform``; ``vertical_angles_deg`` lists them
    explicitly.
    """

    elevations: np.ndarray  # (C,) radians, top beam first
    azimuths: np.ndarray  # (A,) radians
    max_range: float
    range_noise_std: float
    dropout: float
    _dirs: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, model: dict[str, Any] | None, override: dict[str, Any] | None = None,
                   where: str = "rig.lidar_model") -> BeamPattern:
        """Build from a rig's ``lidar_model`` (missing keys take HDL-64E defaults) and an optional override."""
        m = dict(DEFAULT_LIDAR_MODEL)
        m.update(model or {})
        m.update(override or {})
        for key in m:
            if key not in LIDAR_MODEL_KEYS:
                raise ConfigError(f"unknown beam-pattern key; expected one of {LIDAR_MODEL_KEYS}", f"{where}.{key}")
        try:
            if m.get("vertical_angles_deg") is not None:
                elev = np.sort(np.asarray(m["vertical_angles_deg"], dtype=np.float64))[::-1]
                if elev.ndim != 1 or len(elev) < 1:
                    raise ValueError("vertical_angles_deg must be a non-empty list")
            else:
                channels = int(m["channels"])
                up, down = (float(v) for v in m["vertical_fov_deg"])
                if channels < 1 or channels > 512:
                    raise ValueError(f"channels must be in 1..512, got {channels}")
                if not -90 <= down < up <= 90:
                    raise ValueError(f"vertical_fov_deg must be [up, down] with up > down, got {[up, down]}")
                layout = str(m.get("vertical_layout", "auto"))
                if layout not in ("auto", "uniform", "hdl64"):
                    raise ValueError(f"vertical_layout must be auto, uniform or hdl64, got {layout!r}")
                if layout == "auto":
                    layout = "hdl64" if channels == 64 else "uniform"
                elev = _hdl64_angles(up, down, channels) if layout == "hdl64" else np.linspace(up, down, channels)
            res = float(m["horizontal_resolution_deg"])
            h0, h1 = (float(v) for v in m["horizontal_fov_deg"])
            if not 0.01 <= res <= 10:
                raise ValueError(f"horizontal_resolution_deg must be in [0.01, 10], got {res}")
            if not -180 <= h0 < h1 <= 180:
                raise ValueError(f"horizontal_fov_deg must be [from, to] within [-180, 180], got {[h0, h1]}")
            pattern = cls(
                elevations=np.deg2rad(elev),
                azimuths=np.deg2rad(np.arange(h0, h1, res)),
                max_range=float(m["max_range"]),
                range_noise_std=float(m["range_noise_std"]),
                dropout=float(m["dropout"]),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"invalid beam pattern: {exc}", where) from exc
        p = pattern
        if not (1.0 <= p.max_range <= 1000 and 0 <= p.range_noise_std <= 1 and 0 <= p.dropout < 1):
            raise ConfigError("max_range must be in [1, 1000] m, range_noise_std in [0, 1] m, dropout in [0, 1)", where)
        return pattern

    @property
    def n_rays(self) -> int:
        """Rays per sweep."""
        return len(self.elevations) * len(self.azimuths)

    def directions(self) -> np.ndarray:
        """Unit ray directions in the LiDAR frame, (A * C, 3) float32, azimuth-major (one column after another)."""
        if self._dirs is None:
            az, el = np.meshgrid(self.azimuths, self.elevations, indexing="ij")
            ce = np.cos(el)
            self._dirs = np.stack([ce * np.cos(az), ce * np.sin(az), np.sin(el)], -1).reshape(-1, 3).astype(np.float32)
        return self._dirs


def surface_reflectance(world: World, fs: FrameScene, tri: np.ndarray, points_w: np.ndarray) -> np.ndarray:
    """LiDAR reflectance of hit triangles, with lane paint and asphalt texture on the road."""
    refl = fs.attrs.reflectance[tri].copy()
    kind = mat.MATERIAL_KIND[fs.attrs.material[tri]]
    road = kind == mat.KIND_ROAD
    if road.any():
        s, d = world.road.to_road(points_w[road, 0], points_w[road, 1])
        paint = world.road.paint_mask(s, d)
        tex = texture_noise(points_w[road, 0], points_w[road, 1], 0.25)
        refl[road] = np.where(paint, 0.72, refl[road] * (0.8 + 0.4 * tex))
    return refl


def sector_mask(xy: np.ndarray, from_deg: float, to_deg: float) -> np.ndarray:
    """(N,) bool: directions (N, 2+) whose azimuth lies in the sector from ``from_deg`` counter-clockwise to
    ``to_deg`` (degrees, 0 = +x, wrapping at ±180)."""
    az = np.rad2deg(np.arctan2(xy[:, 1], xy[:, 0]))
    a0, a1 = float(from_deg), float(to_deg)
    return np.mod(az - a0, 360.0) <= np.mod(a1 - a0, 360.0)


def render_lidar(world: World, fs: FrameScene, world_from_lidar: np.ndarray, pattern: BeamPattern,
                 rng: np.random.Generator, weather: WeatherModel,
                 blackout_deg: tuple[float, float] | None = None) -> np.ndarray:
    """One sweep as (N, 4) float32 ``x, y, z, intensity`` in the LiDAR frame (no-return rays dropped)."""
    dirs_l = pattern.directions()
    rot, origin = world_from_lidar[:3, :3], world_from_lidar[:3, 3]
    dirs_w = rotate(dirs_l, rot)
    hits = fs.cast(origin, dirs_w)
    n = len(dirs_l)
    r = hits.t.astype(np.float64)
    valid = hits.hit & (r <= pattern.max_range)
    idx = np.flatnonzero(valid)
    r_hit = r[idx]
    tri = hits.tri[idx]
    pts_w = origin + dirs_w[idx] * r_hit[:, None]
    refl = surface_reflectance(world, fs, tri, pts_w)
    cos_inc = np.abs(np.einsum("ij,ij->i", hits.normal[idx], dirs_w[idx]))
    kind = mat.MATERIAL_KIND[fs.attrs.material[tri]]
    wet = weather.surface_wetness
    if wet > 0:
        refl = refl * (1.0 - 0.45 * wet * (hits.normal[idx, 2] > 0.7))
    intensity = refl * (0.75 + 0.25 * cos_inc) * rng.lognormal(0.0, 0.25, len(idx))
    retro = kind == mat.KIND_RETRO
    intensity[retro] = np.maximum(intensity[retro], refl[retro] * rng.uniform(0.85, 1.0, retro.sum()))
    intensity *= np.exp(-2.0 * weather.lidar_extinction * r_hit)
    received = intensity * np.minimum(1.0, (25.0 / np.maximum(r_hit, 1.0)) ** 2)
    p_drop = np.full(len(idx), pattern.dropout)
    p_drop[kind == mat.KIND_GLASS] = 0.5
    p_drop[kind == mat.KIND_FOLIAGE] += 0.25
    p_drop += 0.5 * np.clip((0.12 - cos_inc) / 0.12, 0.0, 1.0)
    p_drop += np.clip((NOISE_FLOOR - received) / NOISE_FLOOR, 0.0, 1.0)
    keep = rng.random(len(idx)) >= p_drop
    ranges = np.full(n, np.inf)
    inten = np.zeros(n)
    ranges[idx[keep]] = r_hit[keep] + rng.normal(0.0, pattern.range_noise_std, keep.sum())
    inten[idx[keep]] = intensity[keep]
    ranges, inten = weather.lidar_scatter(ranges, inten, rng)
    ok = np.isfinite(ranges) & (ranges > 0.5)
    if blackout_deg is not None:
        ok &= ~sector_mask(dirs_l[:, :2], *blackout_deg)
    pts = dirs_l[ok] * ranges[ok, None]
    return np.concatenate([pts, np.clip(inten[ok], 0.0, 1.0)[:, None]], axis=1).astype(np.float32)
