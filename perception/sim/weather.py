"""Weather and lighting acting on both sensors: fog, rain, snow (LiDAR attenuation, spurious near returns,
intensity loss; camera contrast loss, streaks, speckle) and night."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WeatherModel:
    """Physical knobs derived from ``SceneOptions.weather`` / ``weather_intensity``."""

    kind: str = "clear"
    intensity: float = 0.0
    lidar_extinction: float = 0.0  # 1/m, two-way attenuation exp(-2 a r)
    spurious_fraction: float = 0.0  # share of rays returning from drops / flakes / fog
    spurious_range: tuple[float, float] = (0.5, 10.0)  # near-return range interval (m)
    spurious_intensity: tuple[float, float] = (0.0, 0.05)
    surface_wetness: float = 0.0  # 0..1, darkens upward-facing surfaces for LiDAR (specular loss)
    fog_density: float = 0.0  # camera extinction 1/m
    haze_colour: tuple[float, float, float] = (0.7, 0.7, 0.72)
    sun_scale: float = 1.0  # direct sunlight left
    streaks: int = 0  # rain streaks in the image
    flakes: int = 0  # snow flakes in the image
    snow_cover: float = 0.0  # whitening of upward-facing surfaces

    @classmethod
    def from_options(cls, kind: str, intensity: float) -> WeatherModel:
        """Map a weather name and intensity (0..1) to effect strengths."""
        i = float(intensity)
        if kind == "clear" or i <= 0:
            return cls()
        if kind == "fog":
            return cls(kind, i, lidar_extinction=0.004 + 0.05 * i, spurious_fraction=0.12 * i,
                       spurious_range=(0.8, 3.0 + 6.0 * i), spurious_intensity=(0.0, 0.06),
                       fog_density=0.006 + 0.07 * i, haze_colour=(0.72, 0.73, 0.75), sun_scale=1.0 - 0.9 * i)
        if kind == "rain":
            return cls(kind, i, lidar_extinction=0.002 + 0.01 * i, spurious_fraction=0.02 * i,
                       spurious_range=(0.5, 12.0), spurious_intensity=(0.0, 0.1), surface_wetness=i,
                       fog_density=0.002 + 0.008 * i, haze_colour=(0.5, 0.52, 0.55), sun_scale=1.0 - 0.8 * i,
                       streaks=int(2500 * i))
        if kind == "snow":
            return cls(kind, i, lidar_extinction=0.003 + 0.025 * i, spurious_fraction=0.06 * i,
                       spurious_range=(0.5, 25.0), spurious_intensity=(0.05, 0.4), surface_wetness=0.3 * i,
                       fog_density=0.004 + 0.02 * i, haze_colour=(0.82, 0.83, 0.86), sun_scale=1.0 - 0.7 * i,
                       flakes=int(5000 * i), snow_cover=0.7 * i)
        raise ValueError(f"unknown weather {kind!r}")

    # ------------------------------------------------------------------ LiDAR
    def lidar_scatter(self, ranges: np.ndarray, intensity: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Replace some returns by spurious near returns (drops, flakes, fog backscatter)."""
        if self.spurious_fraction <= 0:
            return ranges, intensity
        n = len(ranges)
        pick = rng.random(n) < self.spurious_fraction
        lo, hi = self.spurious_range
        if self.kind == "fog":
            near = lo + rng.gamma(2.0, (hi - lo) / 4.0, n)
        else:
            near = rng.uniform(lo, hi, n)
        pick &= near < ranges
        ranges, intensity = ranges.copy(), intensity.copy()
        ranges[pick] = near[pick]
        intensity[pick] = rng.uniform(*self.spurious_intensity, pick.sum())
        return ranges, intensity

    # ------------------------------------------------------------------ camera
    def apply_camera(self, rgb: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply haze / fog, rain streaks and snow flakes to a linear (H, W, 3) image with per-pixel depth."""
        if self.fog_density > 0:
            trans = np.exp(-self.fog_density * np.minimum(depth, 1e4))[..., None]
            rgb = rgb * trans + np.asarray(self.haze_colour, np.float32) * (1.0 - trans)
        h, w = rgb.shape[:2]
        if self.kind == "rain":
            rgb = rgb * (1.0 - 0.25 * self.intensity)
        if self.streaks:
            rgb = _draw_streaks(rgb, rng, self.streaks, h, w)
        if self.flakes:
            ys = rng.integers(0, h, self.flakes)
            xs = rng.integers(0, w, self.flakes)
            bright = rng.uniform(0.6, 1.0, self.flakes)[:, None].astype(np.float32)
            for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                big = rng.random(self.flakes) < (1.0 if (dy, dx) == (0, 0) else 0.4)
                yy, xx = np.clip(ys + dy, 0, h - 1)[big], np.clip(xs + dx, 0, w - 1)[big]
                rgb[yy, xx] = 0.3 * rgb[yy, xx] + 0.7 * bright[big]
        return rgb


def _draw_streaks(rgb: np.ndarray, rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Thin, slanted, semi-transparent bright lines (rain drops in motion)."""
    length = rng.integers(8, 30, n)
    x0, y0 = rng.uniform(0, w, n), rng.uniform(-20, h, n)
    slant = rng.normal(0.15, 0.05)
    alpha = rng.uniform(0.08, 0.25, n).astype(np.float32)
    k = np.arange(30)[None, :]
    on = k < length[:, None]
    ys = (y0[:, None] + k).astype(np.int64)
    xs = (x0[:, None] + slant * k).astype(np.int64)
    on &= (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    a = np.broadcast_to(alpha[:, None], on.shape)[on][:, None]
    yy, xx = ys[on], xs[on]
    rgb[yy, xx] = rgb[yy, xx] * (1 - a) + 0.85 * a
    return rgb
