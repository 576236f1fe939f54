"""Pinhole camera by ray casting: per-material albedo and procedural textures, Lambert shading with sun
shadows, sky gradient, weather, night, sensor noise."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from perception.rig import Rig
from perception.sim import materials as mat
from perception.sim.raycast import FrameScene, Hits, dot3, rotate
from perception.sim.texture import texture_noise
from perception.sim.weather import WeatherModel
from perception.sim.world import World

SKY_HORIZON = np.array([1.15, 1.2, 1.3], np.float32)
SKY_ZENITH = np.array([0.35, 0.55, 1.0], np.float32)
NIGHT_SKY = np.array([0.004, 0.005, 0.010], np.float32)
_NOISE_SLACK = 65536


@dataclass
class CameraImage:
    """A rendered image plus the per-pixel geometry used for labels."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    geom: np.ndarray  # (H, W) int32: -1 sky, 0 static world, 1 + i actor i
    depth: np.ndarray  # (H, W) float32 ray length (inf for sky)


class CameraModel:
    """Pixel rays of a rig's camera and the per-size tables (cached per process, shared by drives)."""

    def __init__(self, rig: Rig) -> None:
        self.height, self.width = rig.height, rig.width
        key = (rig.width, rig.height, rig.K.tobytes(), rig.lidar_to_camera.tobytes())
        if key not in _RAY_CACHE:
            _RAY_CACHE.clear()
            _RAY_CACHE[key] = rig.camera_rays().reshape(-1, 3).astype(np.float32)
        self.dirs = _RAY_CACHE[key]  # LiDAR frame, read-only use
        self.origin = rig.camera_to_lidar[:3, 3].copy()
        self.forward = rig.camera_to_lidar[:3, 2].copy()  # optical axis in the LiDAR frame
        self._grid = _grid(self.height, self.width)
        self.noise_bank = _noise_bank(self.height * self.width * 3 + _NOISE_SLACK)


_RAY_CACHE: dict[tuple, np.ndarray] = {}


@lru_cache(maxsize=2)
def _noise_bank(size: int) -> np.ndarray:
    """Gaussian noise shared by all frames (each frame reads it at a random offset)."""
    return np.random.default_rng(7).standard_normal(size, dtype=np.float32)


@lru_cache(maxsize=2)
def _grid(h: int, w: int) -> _CoarseGrid:
    return _CoarseGrid(h, w)


def _sky(dirs: np.ndarray, sun: np.ndarray, tint: np.ndarray) -> np.ndarray:
    el = np.clip(dirs[:, 2] * 2.5, 0.0, 1.0)[:, None] ** 0.7
    sky = SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * el.astype(np.float32)
    glow = np.clip(dot3(dirs, sun), 0.0, 1.0) ** 32
    return (sky + 1.5 * glow[:, None].astype(np.float32)) * tint.astype(np.float32)


# Texture per material kind: (cell size in metres, contrast); kinds not listed are untextured.
_TEX_CELL = np.full(16, 0.5, np.float32)
_TEX_AMP = np.zeros(16, np.float32)
for _k, _cell, _amp in ((mat.KIND_ROAD, 0.06, 0.35), (mat.KIND_SIDEWALK, 0.3, 0.3), (mat.KIND_TERRAIN, 0.12, 0.9),
                        (mat.KIND_WALL, 0.5, 0.15), (mat.KIND_FOLIAGE, 0.12, 1.1)):
    _TEX_CELL[_k], _TEX_AMP[_k] = _cell, _amp


def _textured_albedo(world: World, fs: FrameScene, tri: np.ndarray, p: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Per-pixel albedo: material colour times world-space value noise, lane paint on the road."""
    albedo = fs.attrs.albedo[tri]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    vertical = (kind == mat.KIND_WALL) | (kind == mat.KIND_FOLIAGE)
    u = np.where(vertical, x + y, x)
    v = np.where(vertical, z, y)
    amp = _TEX_AMP[kind]
    albedo *= (1.0 - amp / 2 + amp * texture_noise(u / _TEX_CELL[kind], v / _TEX_CELL[kind], 1.0))[:, None]
    road = np.flatnonzero(kind == mat.KIND_ROAD)
    if len(road):
        xr, yr = x[road], y[road]
        albedo[road] *= (0.85 + 0.3 * texture_noise(xr + 1000.0, yr, 1.5))[:, None]
        s, d = world.road.to_road(xr, yr)
        albedo[road[world.road.paint_mask(s, d)]] = (0.62, 0.62, 0.6)
    return albedo


class _CoarseGrid:
    """Index tables for casting every second row / column and filling the pixels in between."""

    def __init__(self, h: int, w: int) -> None:
        rs = np.unique(np.r_[np.arange(0, h, 2), h - 1])
        cs = np.unique(np.r_[np.arange(0, w, 2), w - 1])
        self.coarse = (rs[:, None] * w + cs[None, :]).ravel()
        is_coarse = np.zeros(h * w, dtype=bool)
        is_coarse[self.coarse] = True
        ri0 = np.minimum(np.searchsorted(rs, np.arange(h), side="right") - 1, len(rs) - 1)
        ci0 = np.minimum(np.searchsorted(cs, np.arange(w), side="right") - 1, len(cs) - 1)
        ri1, ci1 = np.minimum(ri0 + 1, len(rs) - 1), np.minimum(ci0 + 1, len(cs) - 1)
        nc = len(cs)
        self.fine = np.flatnonzero(~is_coarse)
        corners = [(ri0[:, None] * nc + ci0[None, :]), (ri0[:, None] * nc + ci1[None, :]),
                   (ri1[:, None] * nc + ci0[None, :]), (ri1[:, None] * nc + ci1[None, :])]
        self.corners = [c.ravel()[self.fine].astype(np.int32) for c in corners]
        #: for every pixel, the coarse sample at the top-left of its block (index into ``coarse``)
        self.block = np.empty(h * w, dtype=np.int32)
        self.block[self.coarse] = np.arange(len(self.coarse))
        self.block[self.fine] = self.corners[0]


def cast_image(fs: FrameScene, origin: np.ndarray, dirs: np.ndarray, grid: _CoarseGrid) -> Hits:
    """Primary hits of every pixel, casting only where needed.

    Every second row and column is cast; a pixel whose four enclosing samples hit the same triangle lies
    on that triangle's plane and is intersected analytically, one whose samples all miss is sky, and all
    others are cast. Features thinner than two pixels between samples on one triangle can be missed.
    """
    n = len(dirs)
    hc = fs.cast(origin, dirs[grid.coarse])
    t = np.full(n, np.inf, np.float32)
    geom = np.full(n, -1, np.int32)
    tri = np.full(n, -1, np.int64)
    normal = np.zeros((n, 3), np.float32)
    t[grid.coarse], geom[grid.coarse], tri[grid.coarse], normal[grid.coarse] = hc.t, hc.geom, hc.tri, hc.normal
    c00, c01, c10, c11 = grid.corners
    tri00 = hc.tri[c00]
    same = (tri00 == hc.tri[c01]) & (tri00 == hc.tri[c10]) & (tri00 == hc.tri[c11])
    sel = np.flatnonzero(same & (tri00 >= 0))
    pix, src = grid.fine[sel], c00[sel]
    n_src = hc.normal[src]
    d_pix = dirs[pix]
    # the pixel ray meets the corner triangle's plane: t = n.(p_src - o) / n.d, where n.(p_src - o) = t_src n.d_src
    num = hc.t[src] * np.einsum("ij,ij->i", n_src, dirs[grid.coarse[src]])
    denom = np.einsum("ij,ij->i", n_src, d_pix)
    ok = denom < -1e-4
    t_plane = num / np.where(ok, denom, -1.0)
    ok &= t_plane > 0
    pix, src, t_plane = pix[ok], src[ok], t_plane[ok]
    t[pix], geom[pix], tri[pix], normal[pix] = t_plane, hc.geom[src], hc.tri[src], hc.normal[src]
    done = same.copy()
    done[sel[~ok]] = False
    rest = grid.fine[~done]
    hr = fs.cast(origin, dirs[rest])
    t[rest], geom[rest], tri[rest], normal[rest] = hr.t, hr.geom, hr.tri, hr.normal
    return Hits(t=t, geom=geom, tri=tri, normal=normal)


def render_camera(world: World, fs: FrameScene, cam: CameraModel, world_from_lidar: np.ndarray,
                  rng: np.random.Generator, weather: WeatherModel, night: bool = False, noise_std: float = 2.0,
                  shadows: bool = True) -> CameraImage:
    """Render the camera image of one frame."""
    rot, trans = world_from_lidar[:3, :3], world_from_lidar[:3, 3]
    dirs = rotate(cam.dirs, rot)
    origin = (rot @ cam.origin + trans).astype(np.float32)
    h, w = cam.height, cam.width
    hits = cast_image(fs, origin, dirs, cam._grid)
    n = h * w
    idx = np.flatnonzero(hits.hit)
    tri = hits.tri[idx]
    t = hits.t[idx]
    d_hit = dirs[idx]
    p = origin + d_hit * t[:, None]
    normal = hits.normal[idx]
    kind = mat.MATERIAL_KIND[fs.attrs.material[tri]]
    albedo = _textured_albedo(world, fs, tri, p, kind)
    if weather.snow_cover > 0:
        up = np.clip((normal[:, 2] - 0.6) / 0.4, 0, 1) * np.float32(weather.snow_cover)
        albedo = albedo * (1 - up[:, None]) + 0.85 * up[:, None]
    sun = world.sun.astype(np.float32)
    rgb = np.empty((n, 3), np.float32)
    if night:
        light = 0.0025 * (0.6 + 0.4 * normal[:, 2])  # moonlight / city glow
        cone = np.clip((dot3(d_hit, rot @ cam.forward) - 0.93) / 0.07, 0, 1) ** 2  # ego headlights
        head = 5.0 * cone * np.abs(np.einsum("ij,ij->i", normal, d_hit)) / np.maximum(t, 3.0) ** 2
        col = albedo * (light + head)[:, None]
        lamp = fs.attrs.material[tri] == mat.MATERIAL_ID[mat.LAMP.name]  # street and vehicle lamps glow
        col[lamp] += 2.0 * fs.attrs.albedo[tri[lamp]]
        retro = kind == mat.KIND_RETRO  # signs and plates shine back in the headlights
        col[retro] += (4.0 * head[retro])[:, None] * fs.attrs.albedo[tri[retro]]
        rgb[:] = NIGHT_SKY
    else:
        ndl = np.clip(dot3(normal, sun), 0.0, None)
        lit = ndl > 0
        if shadows and weather.sun_scale > 0.2:
            lit = _sun_visibility(fs, hits, origin, dirs, sun, cam._grid)[idx] & lit
        ambient = np.float32(0.24 * (1.0 + 1.2 * (1 - weather.sun_scale))) * (0.65 + 0.35 * normal[:, 2])
        direct = np.float32(1.6 * weather.sun_scale) * ndl * lit
        col = albedo * (ambient + direct)[:, None]
        glass = kind == mat.KIND_GLASS
        if glass.any():
            d, nn = d_hit[glass], normal[glass]
            cos_i = np.einsum("ij,ij->i", d, nn)
            refl_dir = d - 2 * cos_i[:, None] * nn
            fresnel = 0.04 + 0.5 * (1.0 - np.abs(cos_i)) ** 5  # Schlick-like: stronger at grazing angles
            col[glass] += (0.6 * fresnel)[:, None] * _sky(refl_dir, sun, world.sky_tint)
        miss = ~hits.hit
        rgb[miss] = _sky(dirs[miss], sun, world.sky_tint)
    rgb[idx] = col
    rgb *= np.float32(world.exposure)
    depth = np.full(n, np.inf, np.float32)
    depth[idx] = t
    rgb = weather.apply_camera(rgb.reshape(h, w, 3), depth.reshape(h, w), rng)
    img = _develop(rgb, rng, noise_std, night, cam.noise_bank)
    return CameraImage(image=img, geom=hits.geom.reshape(h, w), depth=depth.reshape(h, w))


def _sun_visibility(fs: FrameScene, hits: Hits, origin: np.ndarray, dirs: np.ndarray, sun: np.ndarray,
                    grid: _CoarseGrid) -> np.ndarray:
    """(N,) bool sun visibility per pixel: shadow rays from the coarse samples, shared by their 2x2 blocks."""
    c = grid.coarse
    normal = hits.normal[c]
    probe = np.flatnonzero(hits.hit[c] & (dot3(normal, sun) > 0))
    lit_c = np.ones(len(c), dtype=bool)
    if len(probe):
        pc = c[probe]
        origins = origin + dirs[pc] * hits.t[pc][:, None] + normal[probe] * np.float32(0.03)
        lit_c[probe] = ~fs.occluded(origins, np.broadcast_to(sun, origins.shape), max_t=200.0)
    return lit_c[grid.block]


_GAMMA_LUT_SIZE = 4096


def _tone_lut(night: bool) -> np.ndarray:
    """Radiance -> 8-bit value (filmic shoulder, night gain, gamma 2.2), indexed by sqrt(radiance / 4)
    so that dark values are finely quantised."""
    x = 4.0 * (np.arange(_GAMMA_LUT_SIZE, dtype=np.float64) / _GAMMA_LUT_SIZE) ** 2
    y = 1.0 - np.exp(-1.6 * x)
    if night:
        y = np.clip(y * 4.0, 0.0, 1.0)
    return (np.power(y, 1.0 / 2.2) * 255.0).astype(np.float32)


_LUTS = {False: _tone_lut(False), True: _tone_lut(True)}


def _develop(rgb: np.ndarray, rng: np.random.Generator, noise_std: float, night: bool,
             bank: np.ndarray) -> np.ndarray:
    """Tone-map, gamma, slight optical blur, sensor noise (from ``bank`` at a random offset), quantise to uint8."""
    q = np.sqrt(np.clip(rgb, 0.0, 4.0) * np.float32(0.25))
    q = np.minimum(q * np.float32(_GAMMA_LUT_SIZE) + np.float32(0.5), _GAMMA_LUT_SIZE - 1).astype(np.int32)
    x = _LUTS[night][q]
    x[1:-1] = 0.5 * x[1:-1] + 0.25 * (x[:-2] + x[2:])
    x[:, 1:-1] = 0.5 * x[:, 1:-1] + 0.25 * (x[:, :-2] + x[:, 2:])
    sigma = noise_std * (4.0 if night else 1.0)
    if sigma > 0:
        off = int(rng.integers(_NOISE_SLACK))
        noise = bank[off:off + x.size].reshape(x.shape)
        if night:  # shot noise grows with the signal
            x += noise * (np.float32(sigma) + np.sqrt(np.clip(x, 0, None)))
        else:
            x += noise * np.float32(sigma)
    x += 0.5
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)
