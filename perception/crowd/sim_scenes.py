"""Simulated crowd photos for pre-training: pedestrians on platforms / squares / sidewalks, ray cast with Open3D.

A scene is a paved ground (tiles, a platform edge or a kerb and road), backdrop buildings, clutter (poles, trees,
benches, kiosks) and 0-``people_max`` pedestrians (``perception.sim.meshes.pedestrian_mesh``) standing alone, in
groups and in queues. A pinhole camera at a random height (a cabin camera near 2.5 m up to a surveillance mast) and
pitch looks down at them. Each pixel is one ray of an ``open3d.t.geometry.RaycastingScene``; shading is Lambert
with a sun (shadow rays) and sky light, then exposure, colour cast, blur and sensor noise. A head point is the
projected head centre of every pedestrian whose head is actually seen (the ray to the head centre first hits that
pedestrian's head), so occluded people are not counted.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
from PIL import Image, ImageFilter
from tqdm import tqdm

from perception.crowd.data import CrowdSample
from perception.errors import ConfigError, DataError
from perception.sim import materials as mat
from perception.sim.meshes import ActorMesh, MeshBuilder, building_mesh, pedestrian_mesh, pole_mesh, tree_mesh
from perception.sim.texture import texture_noise

log = logging.getLogger(__name__)

_INVALID = o3d.t.geometry.RaycastingScene.INVALID_ID
# texture kinds (per triangle)
_PLAIN, _TILES, _ROAD, _NOISY = 0, 1, 2, 3


@dataclass
class SimCrowdOptions:
    """Ranges of the simulated crowd scenes (uniform draws unless noted)."""

    width: int = 512
    height: int = 384
    people_min: int = 0
    people_max: int = 120
    cam_height: tuple[float, float] = (2.5, 14.0)  # metres above the ground
    pitch_deg: tuple[float, float] = (12.0, 55.0)  # downward tilt of the optical axis
    hfov_deg: tuple[float, float] = (50.0, 85.0)
    max_range: float = 25.0  # people and clutter stand at most this far from the camera (ground distance)

    def validate(self, where: str = "sim") -> None:
        """Raise ConfigError on inconsistent ranges."""
        if self.width < 64 or self.height < 64 or self.width % 8 or self.height % 8:
            raise ConfigError("width and height must be multiples of 8 and >= 64", f"{where}.width")
        if not 0 <= self.people_min <= self.people_max:
            raise ConfigError("need 0 <= people_min <= people_max", f"{where}.people_min")
        for name in ("cam_height", "pitch_deg", "hfov_deg"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError("need 0 < low <= high", f"{where}.{name}")


@dataclass
class _Part:
    mesh: ActorMesh
    kind: int  # texture kind for every triangle of this part


@dataclass
class _Person:
    head: np.ndarray  # (3,) world position of the head centre
    radius: float  # head radius (m)


def _ground(rng: np.random.Generator, layout: str, yaw: float) -> list[_Part]:
    """Ground slabs around the origin for a ``platform``, ``square`` or ``street`` layout."""
    b_tiles, parts = MeshBuilder(), []
    paving = np.clip(np.asarray(mat.SIDEWALK.albedo) * rng.uniform(0.6, 1.8, 3) ** 0.5 * rng.uniform(0.7, 1.5),
                     0.05, 0.9)
    b_tiles.box((0, 0, -0.05), (120.0, 120.0, 0.1), mat.SIDEWALK, yaw=yaw, colour=paving)
    parts.append(_Part(b_tiles.build(recentre=False), _TILES))
    c, s = np.cos(yaw), np.sin(yaw)
    if layout == "street":  # a road strip beside the sidewalk, one kerb step lower
        off = rng.uniform(6.0, 25.0) * rng.choice([-1, 1])
        road = MeshBuilder().box((-s * off, c * off, 0.0), (160.0, rng.uniform(7.0, 14.0), 0.12), mat.ASPHALT,
                                 yaw=yaw, colour=np.asarray(mat.ASPHALT.albedo) * rng.uniform(0.7, 1.6))
        parts.append(_Part(road.build(recentre=False), _ROAD))
    elif layout == "platform":  # track bed in front of the platform edge, with a yellow safety line
        off = rng.uniform(5.0, 20.0) * rng.choice([-1, 1])
        sign = np.sign(off)
        bed = MeshBuilder().box((-s * (off + sign * 3.0), c * (off + sign * 3.0), -0.6), (160.0, 6.0, 1.1),
                                mat.DIRT, yaw=yaw, colour=np.asarray(mat.DIRT.albedo) * rng.uniform(0.5, 1.3))
        for rail in (-0.75, 0.75):
            o = off + sign * 3.0 + rail
            bed.box((-s * o, c * o, -0.0), (160.0, 0.08, 0.15), mat.METAL, yaw=yaw)
        parts.append(_Part(bed.build(recentre=False), _NOISY))
        line = MeshBuilder().box((-s * (off - sign * 0.4), c * (off - sign * 0.4), 0.002), (160.0, 0.25, 0.01),
                                 mat.PLASTIC, yaw=yaw, colour=(0.75, 0.6, 0.05))
        parts.append(_Part(line.build(recentre=False), _PLAIN))
    return parts


def _place(mesh: ActorMesh, yaw: float, xy: np.ndarray) -> ActorMesh:
    return ActorMesh(mesh.placed(yaw, (float(xy[0]), float(xy[1]), 0.0)), mesh.triangles, mesh.material,
                     mesh.albedo, mesh.reflectance)


def _bench_or_kiosk(rng: np.random.Generator) -> ActorMesh:
    b = MeshBuilder()
    colour = np.clip(rng.uniform(0.05, 0.8, 3), 0, 1)
    if rng.random() < 0.5:  # bench
        b.box((0, 0, 0.45), (1.8, 0.45, 0.06), mat.WOOD, colour=colour)
        b.box((0, 0.2, 0.75), (1.8, 0.05, 0.4), mat.WOOD, colour=colour)
        for x in (-0.8, 0.8):
            b.box((x, 0, 0.22), (0.06, 0.4, 0.44), mat.METAL)
    else:  # kiosk / stall with an awning
        w, d, h = rng.uniform(1.5, 4.0), rng.uniform(1.2, 2.5), rng.uniform(2.0, 2.8)
        b.box((0, 0, h / 2), (w, d, h), mat.PLASTIC, colour=colour)
        b.box((0, -d / 2 - 0.5, h + 0.05), (w + 0.4, 1.2, 0.06), mat.CLOTH, pitch=0.0,
              colour=np.clip(rng.uniform(0.1, 0.9, 3), 0, 1))
    return b.build()


def _head_of(mesh: ActorMesh) -> tuple[np.ndarray, float]:
    """Head centre (in the mesh frame) and radius of a pedestrian mesh (its head is its top sphere)."""
    v = mesh.vertices.astype(np.float64)
    top = float(v[:, 2].max())
    radius = 0.105 * top / 1.75
    near = v[v[:, 2] > top - radius]
    return np.array([near[:, 0].mean(), near[:, 1].mean(), top - radius]), radius


def _sample_positions(rng: np.random.Generator, n: int, ground_pts: np.ndarray, min_sep: float) -> np.ndarray:
    """``n`` ground positions (x, y) in the camera's footprint: singles, groups and queues, ``min_sep`` apart."""
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n and tries < 40 * n + 100:
        tries += 1
        anchor = ground_pts[int(rng.integers(len(ground_pts)))]
        mode = rng.random()
        if mode < 0.45:
            cand = [anchor]
        elif mode < 0.8:  # group around the anchor
            k = int(rng.integers(2, 7))
            cand = list(anchor + rng.normal(0.0, rng.uniform(0.5, 1.5), size=(k, 2)))
        else:  # queue / line along a random direction
            k = int(rng.integers(3, 9))
            d = rng.normal(size=2)
            d /= np.linalg.norm(d) + 1e-9
            gap = rng.uniform(0.6, 1.0)
            cand = [anchor + d * gap * i + rng.normal(0, 0.08, 2) for i in range(k)]
        for p in cand:
            if len(out) >= n:
                break
            if all(np.hypot(*(p - q)) >= min_sep for q in out):
                out.append(np.asarray(p))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


class _Camera:
    """Pinhole camera at ``origin`` with yaw (about +z) and downward pitch; image x right, y down."""

    def __init__(self, origin: np.ndarray, yaw: float, pitch: float, hfov: float, width: int, height: int) -> None:
        self.origin = origin
        self.w, self.h = width, height
        self.f = (width / 2) / np.tan(hfov / 2)
        fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.cross(fwd, right)
        self.rot = np.stack([right, down, fwd], axis=1)  # camera -> world (columns: x, y, z axes)

    def rays(self) -> np.ndarray:
        """(H, W, 6) float32 rays through pixel centres (unit directions)."""
        u, v = np.meshgrid(np.arange(self.w) + 0.5, np.arange(self.h) + 0.5)
        d = np.stack([(u - self.w / 2) / self.f, (v - self.h / 2) / self.f, np.ones_like(u)], axis=-1)
        d = d @ self.rot.T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = np.broadcast_to(self.origin, d.shape)
        return np.concatenate([o, d], axis=-1).astype(np.float32)

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depth (N,) of world points."""
        c = (pts - self.origin) @ self.rot
        z = c[:, 2]
        safe = np.where(z > 1e-6, z, 1e-6)
        return np.stack([c[:, 0] / safe * self.f + self.w / 2, c[:, 1] / safe * self.f + self.h / 2], axis=1), z


def _footprint(cam: _Camera, rng: np.random.Generator, max_range: float, n: int = 400) -> np.ndarray:
    """Ground points (x, y) seen by random pixels of the camera, within ``max_range`` of it."""
    u = rng.uniform(0, cam.w, n)
    v = rng.uniform(0, cam.h, n)
    d = np.stack([(u - cam.w / 2) / cam.f, (v - cam.h / 2) / cam.f, np.ones(n)], axis=1) @ cam.rot.T
    ok = d[:, 2] < -1e-3
    t = -cam.origin[2] / d[ok, 2]
    g = cam.origin[None, :2] + d[ok, :2] * t[:, None]
    g = g[np.hypot(*(g - cam.origin[:2]).T) < max_range]
    if len(g) == 0:
        raise DataError("camera sees no ground within range", "sim_scenes.camera")
    return g


def render_crowd_scene(rng: np.random.Generator, opts: SimCrowdOptions | None = None) -> CrowdSample:
    """Render one simulated crowd photo with its visible head points (float RGB in [0, 1])."""
    opts = opts or SimCrowdOptions()
    cam_h = float(rng.uniform(*opts.cam_height) if rng.random() < 0.7 else rng.uniform(opts.cam_height[0], 4.0))
    pitch = np.deg2rad(rng.uniform(*opts.pitch_deg))
    if cam_h < 4.0:  # a cabin / street-level camera looks more horizontally
        pitch = np.deg2rad(rng.uniform(opts.pitch_deg[0] * 0.5, min(30.0, opts.pitch_deg[1])))
    yaw = rng.uniform(-np.pi, np.pi)
    cam = _Camera(np.array([0.0, 0.0, cam_h]), yaw, pitch, np.deg2rad(rng.uniform(*opts.hfov_deg)),
                  opts.width, opts.height)
    layout = str(rng.choice(["platform", "square", "street"]))
    parts = _ground(rng, layout, rng.uniform(-np.pi, np.pi))
    ground_pts = _footprint(cam, rng, opts.max_range)

    # backdrop buildings (facade towards the camera) on a ring beyond the people, clutter among them
    for _ in range(int(rng.integers(2, 7))):
        ang = yaw + rng.uniform(-1.2, 1.2)
        dist = opts.max_range + rng.uniform(2.0, 30.0)
        bm = building_mesh(rng, rng.uniform(8, 30), rng.uniform(6, 15), rng.uniform(4, 25),
                           style=str(rng.choice(["city", "residential"])))
        parts.append(_Part(_place(bm, ang - np.pi / 2, np.array([np.cos(ang), np.sin(ang)]) * dist), _NOISY))
    for _ in range(int(rng.integers(0, 12))):
        xy = ground_pts[int(rng.integers(len(ground_pts)))] + rng.normal(0, 2.0, 2)
        r = rng.random()
        m = tree_mesh(rng) if r < 0.25 else pole_mesh(rng) if r < 0.6 else _bench_or_kiosk(rng)
        parts.append(_Part(_place(m, rng.uniform(-np.pi, np.pi), xy), _NOISY if r < 0.25 else _PLAIN))

    n_people = int(rng.integers(opts.people_min, opts.people_max + 1))
    # denser scenes concentrate people nearer the middle of the footprint
    positions = _sample_positions(rng, n_people, ground_pts, min_sep=0.55)
    people: list[_Person] = []
    first_person = len(parts)
    for xy in positions:
        pm = pedestrian_mesh(rng)
        pyaw = rng.uniform(-np.pi, np.pi)
        head, radius = _head_of(pm)
        c, s = np.cos(pyaw), np.sin(pyaw)
        people.append(_Person(np.array([c * head[0] - s * head[1] + xy[0], s * head[0] + c * head[1] + xy[1],
                                        head[2]]), radius))
        parts.append(_Part(_place(pm, pyaw, xy), _PLAIN))

    scene = o3d.t.geometry.RaycastingScene()
    for p in parts:
        scene.add_triangles(o3d.core.Tensor(p.mesh.vertices.astype(np.float32)),
                            o3d.core.Tensor(p.mesh.triangles.astype(np.uint32)))
    offsets = np.cumsum([0] + [len(p.mesh.triangles) for p in parts])
    albedo = np.concatenate([p.mesh.albedo for p in parts]).astype(np.float32)
    kind = np.concatenate([np.full(len(p.mesh.triangles), p.kind, np.int8) for p in parts])

    rays = cam.rays().reshape(-1, 6)
    hits = scene.cast_rays(o3d.core.Tensor(rays), nthreads=1)
    geom = hits["geometry_ids"].numpy().astype(np.int64)
    hit = geom != _INVALID
    prim = hits["primitive_ids"].numpy().astype(np.int64)
    t = hits["t_hit"].numpy()
    normal = hits["primitive_normals"].numpy()
    pts = rays[:, :3] + rays[:, 3:] * np.where(hit, t, 0.0)[:, None]
    normal = np.where((np.sum(normal * rays[:, 3:], axis=1) > 0)[:, None], -normal, normal)

    tri = np.where(hit, offsets[np.where(hit, geom, 0)] + prim, 0)
    base = albedo[tri]
    k = np.where(hit, kind[tri], -1)
    tex = np.ones(len(rays), np.float32)
    tiles = k == _TILES
    if tiles.any():
        cell = rng.uniform(0.3, 0.8)
        gx, gy = pts[tiles, 0] / cell, pts[tiles, 1] / cell
        grout = (np.abs(gx - np.round(gx)) < 0.04) | (np.abs(gy - np.round(gy)) < 0.04)
        tex[tiles] = (0.85 + 0.3 * texture_noise(pts[tiles, 0], pts[tiles, 1], cell)) * np.where(grout, 0.6, 1.0)
    noisy = (k == _NOISY) | (k == _ROAD)
    if noisy.any():
        tex[noisy] = 0.7 + 0.6 * texture_noise(pts[noisy, 0] + pts[noisy, 2], pts[noisy, 1] - pts[noisy, 2], 0.15)

    sun = np.array([np.cos(rng.uniform(0, 2 * np.pi)), np.sin(rng.uniform(0, 2 * np.pi)), rng.uniform(0.4, 2.0)])
    sun /= np.linalg.norm(sun)
    lit = np.ones(len(rays), np.float32)
    if rng.random() < 0.7:  # sunny: cast shadow rays
        idx = np.flatnonzero(hit)
        srays = np.concatenate([pts[idx] + normal[idx] * 1e-3, np.broadcast_to(sun, (len(idx), 3))], axis=1)
        shadow = scene.test_occlusions(o3d.core.Tensor(srays.astype(np.float32)), nthreads=1).numpy()
        lit[idx[shadow]] = 0.0
        direct, ambient = rng.uniform(0.6, 1.0), rng.uniform(0.25, 0.45)
    else:  # overcast / indoor: soft light only
        direct, ambient = rng.uniform(0.0, 0.2), rng.uniform(0.6, 0.9)
    lambert = np.clip(normal @ sun, 0, 1) * lit
    sky_term = 0.5 + 0.5 * np.clip(normal[:, 2], -1, 1)
    radiance = base * tex[:, None] * (direct * lambert + ambient * sky_term)[:, None]
    sky = np.array([0.55, 0.7, 0.9]) * rng.uniform(0.6, 1.2)
    radiance[~hit] = sky
    radiance *= rng.uniform(1.4, 2.6) * rng.uniform(0.85, 1.15, 3)  # exposure and white balance
    rgb = np.clip(radiance, 0, 1) ** (1 / 2.2)
    img = Image.fromarray((rgb.reshape(opts.height, opts.width, 3) * 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = np.clip(arr + rng.normal(0, rng.uniform(0.005, 0.025), arr.shape).astype(np.float32), 0, 1)

    heads = _visible_heads(scene, cam, people, first_person)
    return CrowdSample(name="sim", image=arr, points=heads, count=len(heads), scale=1.0)


def _visible_heads(scene: o3d.t.geometry.RaycastingScene, cam: _Camera, people: list[_Person],
                   first_geom: int) -> np.ndarray:
    """Projected head centres of the people whose head is the first surface on the ray to it."""
    if not people:
        return np.zeros((0, 2))
    heads = np.stack([p.head for p in people])
    radii = np.array([p.radius for p in people])
    uv, depth = cam.project(heads)
    inside = (depth > 0.3) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.w) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.h)
    d = heads - cam.origin
    dist = np.linalg.norm(d, axis=1)
    rays = np.concatenate([np.broadcast_to(cam.origin, d.shape), d / dist[:, None]], axis=1).astype(np.float32)
    res = scene.cast_rays(o3d.core.Tensor(rays), nthreads=1)
    geom = res["geometry_ids"].numpy().astype(np.int64)
    t = res["t_hit"].numpy()
    own = geom == first_geom + np.arange(len(people))
    seen = inside & own & (t >= dist - 1.6 * radii)
    return uv[seen].astype(np.float64)


def simulated_samples(n: int, seed: int, opts: SimCrowdOptions | None = None, cache_dir: str | Path | None = None,
                      progress: bool = True) -> list[CrowdSample]:
    """``n`` seeded simulated scenes (uint8 images); with ``cache_dir`` they are stored as one ``.npz`` keyed by
    the options and seed and re-used."""
    opts = opts or SimCrowdOptions()
    opts.validate()
    key = hashlib.sha256(repr((sorted(asdict(opts).items()), n, seed, 2)).encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"sim_crowd_{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache) as z:
                imgs, pts, splits = z["images"], z["points"], z["splits"]
            return [CrowdSample(f"sim_{i:04d}", imgs[i], p, len(p), 1.0) for i, p in enumerate(np.split(pts, splits))]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable sim cache %s: %s", cache, exc)
    out = []
    for i in tqdm(range(n), desc="sim crowd scenes", disable=not progress):
        s = render_crowd_scene(np.random.default_rng([seed, i]), opts)
        out.append(CrowdSample(f"sim_{i:04d}", (s.image * 255).round().astype(np.uint8), s.points, s.count, 1.0))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=np.stack([s.image for s in out]),
                            points=np.concatenate([s.points for s in out]).reshape(-1, 2),
                            splits=np.cumsum([len(s.points) for s in out])[:-1])
        tmp.replace(cache)
    return out
