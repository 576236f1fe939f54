"""Meshes of the simulated world, built from Open3D primitives (boxes, cylinders, spheres) merged per object.

Every builder returns an :class:`ActorMesh` in the object's own frame: x forward, y left, z up, the
axis-aligned bounding box centred on x = y = 0 with its bottom at z = 0. Each triangle carries a
material id, a camera albedo and a LiDAR reflectance, so one actor can mix paint, glass and tyres.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import open3d as o3d

from perception.sim import materials as mat
from perception.sim.materials import MATERIAL_ID, Material

Vec = tuple[float, float, float] | np.ndarray | list[float]


@dataclass
class ActorMesh:
    """A triangle mesh with per-triangle material id, albedo (linear RGB) and LiDAR reflectance."""

    vertices: np.ndarray  # (V, 3) float32
    triangles: np.ndarray  # (F, 3) int32
    material: np.ndarray  # (F,) uint8, index into materials.MATERIALS
    albedo: np.ndarray  # (F, 3) float32
    reflectance: np.ndarray  # (F,) float32

    @property
    def extent(self) -> np.ndarray:
        """Size of the axis-aligned bounding box, (3,) float64."""
        return (self.vertices.max(0) - self.vertices.min(0)).astype(np.float64)

    def placed(self, yaw: float, translation: Vec) -> np.ndarray:
        """Vertices rotated by ``yaw`` about +z and translated, (V, 3) float32."""
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
        return self.vertices @ rot.T + np.asarray(translation, dtype=np.float32)

    @staticmethod
    def merge(meshes: list[ActorMesh]) -> ActorMesh:
        """Concatenate meshes (already in a common frame) into one."""
        if not meshes:
            return ActorMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.uint8),
                             np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return ActorMesh(
            vertices=np.concatenate([m.vertices for m in meshes]).astype(np.float32),
            triangles=np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]).astype(np.int32),
            material=np.concatenate([m.material for m in meshes]),
            albedo=np.concatenate([m.albedo for m in meshes]),
            reflectance=np.concatenate([m.reflectance for m in meshes]),
        )


# ---------------------------------------------------------------------- unit primitives (Open3D, cached)
@cache
def _unit_box() -> tuple[np.ndarray, np.ndarray]:
    m = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
    return np.asarray(m.vertices) - 0.5, np.asarray(m.triangles, dtype=np.int32)


@cache
def _unit_cylinder(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    m = o3d.geometry.TriangleMesh.create_cylinder(radius=1.0, height=1.0, resolution=resolution, split=1)
    return np.asarray(m.vertices), np.asarray(m.triangles, dtype=np.int32)  # along z, centred


@cache
def _unit_sphere(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    m = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=resolution)
    return np.asarray(m.vertices), np.asarray(m.triangles, dtype=np.int32)


def _rot(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    ry = np.array([[cp, 0, sp], [0, 1.0, 0], [-sp, 0, cp]])
    rx = np.array([[1.0, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def _align_z(direction: np.ndarray) -> np.ndarray:
    """Rotation taking +z onto ``direction`` (unit)."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, direction)
    c = float(np.dot(z, direction))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1.0 / (1.0 + c))


class MeshBuilder:
    """Accumulates primitives (each with a material) into one :class:`ActorMesh`."""

    def __init__(self) -> None:
        self._parts: list[ActorMesh] = []

    def _add(self, verts: np.ndarray, tris: np.ndarray, material: Material,
             colour: Vec | None, reflectance: float | None) -> None:
        n = len(tris)
        albedo = np.asarray(colour if colour is not None else material.albedo, dtype=np.float32)
        refl = material.reflectance if reflectance is None else reflectance
        self._parts.append(ActorMesh(
            vertices=np.asarray(verts, dtype=np.float32), triangles=np.asarray(tris, dtype=np.int32),
            material=np.full(n, MATERIAL_ID[material.name], dtype=np.uint8),
            albedo=np.tile(albedo, (n, 1)), reflectance=np.full(n, refl, dtype=np.float32)))

    def box(self, center: Vec, size: Vec, material: Material, yaw: float = 0.0, pitch: float = 0.0,
            roll: float = 0.0, taper: tuple[float, float] = (1.0, 1.0), colour: Vec | None = None,
            reflectance: float | None = None) -> MeshBuilder:
        """A box (optionally a frustum: the top face scaled by ``taper`` in x and y)."""
        v, f = _unit_box()
        v = v.copy()
        top = v[:, 2] > 0
        v[top, 0] *= taper[0]
        v[top, 1] *= taper[1]
        v = (v * np.asarray(size, dtype=np.float64)) @ _rot(yaw, pitch, roll).T + np.asarray(center, np.float64)
        self._add(v, f, material, colour, reflectance)
        return self

    def cylinder(self, p0: Vec, p1: Vec, radius: float, material: Material, resolution: int = 8,
                 colour: Vec | None = None, reflectance: float | None = None,
                 scale: tuple[float, float] = (1.0, 1.0)) -> MeshBuilder:
        """A (possibly elliptic) cylinder between two points."""
        p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        axis = p1 - p0
        length = float(np.linalg.norm(axis))
        v, f = _unit_cylinder(resolution)
        v = v * np.array([radius * scale[0], radius * scale[1], max(length, 1e-3)])
        v = v @ _align_z(axis / max(length, 1e-9)).T + (p0 + p1) / 2
        self._add(v, f, material, colour, reflectance)
        return self

    def sphere(self, center: Vec, radius: float, material: Material, resolution: int = 5,
               scale: Vec = (1.0, 1.0, 1.0), yaw: float = 0.0, pitch: float = 0.0,
               colour: Vec | None = None, reflectance: float | None = None) -> MeshBuilder:
        """A sphere or ellipsoid (``scale`` per axis)."""
        v, f = _unit_sphere(resolution)
        v = (v * radius * np.asarray(scale, np.float64)) @ _rot(yaw, pitch).T + np.asarray(center, np.float64)
        self._add(v, f, material, colour, reflectance)
        return self

    def extend(self, mesh: ActorMesh, yaw: float = 0.0, translation: Vec = (0.0, 0.0, 0.0)) -> MeshBuilder:
        """Add a finished mesh, rotated about z and translated."""
        self._parts.append(ActorMesh(mesh.placed(yaw, translation), mesh.triangles, mesh.material,
                                     mesh.albedo, mesh.reflectance))
        return self

    def build(self, recentre: bool = True) -> ActorMesh:
        """Merge the parts; with ``recentre`` the AABB is centred on x = y = 0 with its bottom at z = 0."""
        mesh = ActorMesh.merge(self._parts)
        if recentre and len(mesh.vertices):
            lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
            mesh.vertices = mesh.vertices - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], np.float32)
        return mesh


def _pick_colour(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    i = rng.choice(len(mat.CAR_COLOURS), p=np.asarray(mat.CAR_COLOUR_WEIGHTS) / sum(mat.CAR_COLOUR_WEIGHTS))
    colour, refl = mat.CAR_COLOURS[i]
    jitter = rng.uniform(0.85, 1.15)
    return np.clip(np.asarray(colour) * jitter, 0, 1), float(np.clip(refl * rng.uniform(0.7, 1.3), 0.03, 0.9))


def _clothes(rng: np.random.Generator) -> np.ndarray:
    base = rng.choice([0.03, 0.08, 0.2, 0.45, 0.7])
    tint = rng.uniform(0.5, 1.4, size=3) if rng.random() < 0.6 else np.ones(3)
    return np.clip(base * tint, 0.01, 0.9)


def _wheels(b: MeshBuilder, xs: list[float], half_track: float, radius: float, width: float) -> None:
    for x in xs:
        for side in (-1, 1):
            y = side * (half_track - width / 2)
            b.cylinder((x, y - width / 2, radius), (x, y + width / 2, radius), radius, mat.TYRE, resolution=10)
            b.cylinder((x, y + side * width * 0.45, radius), (x, y + side * width * 0.52, radius), radius * 0.55,
                       mat.METAL, resolution=8)


# ---------------------------------------------------------------------- vehicles
def car_mesh(rng: np.random.Generator, size: Vec | None = None) -> ActorMesh:
    """A passenger car (KITTI Car: l 3.9±0.4, w 1.6±0.1, h 1.5±0.1); ``size`` = (l, w, h) overrides."""
    if size is None:
        size = (np.clip(rng.normal(3.9, 0.4), 3.1, 5.0), np.clip(rng.normal(1.62, 0.1), 1.4, 1.9),
                np.clip(rng.normal(1.5, 0.1), 1.3, 1.85))
    l, w, h = (float(s) for s in size)
    paint, refl = _pick_colour(rng)
    b = MeshBuilder()
    r = 0.3 * h / 1.5
    belt = h * rng.uniform(0.55, 0.62)
    # body with bumpers, bonnet and boot
    b.box((0, 0, (0.2 + belt) / 2), (l, w, belt - 0.2), mat.CAR_PAINT, taper=(0.98, 0.97), colour=paint,
          reflectance=refl)
    b.box((0, 0, 0.28), (l * 0.985, w * 0.96, 0.22), mat.DARK_METAL)  # under-body / bumpers
    cab_len, cab_off = l * rng.uniform(0.48, 0.56), -l * rng.uniform(0.02, 0.1)
    b.box((cab_off, 0, (belt + h) / 2 - 0.02), (cab_len, w * 0.92, h - belt - 0.04), mat.CAR_GLASS,
          taper=(rng.uniform(0.55, 0.7), 0.84))
    b.box((cab_off - 0.02 * l, 0, h - 0.025), (cab_len * 0.6, w * 0.76, 0.05), mat.CAR_PAINT, colour=paint,
          reflectance=refl)
    b.box((cab_off, 0, (belt + h) / 2 - 0.05), (cab_len * 0.3, w * 0.93, h - belt - 0.1), mat.CAR_PAINT,
          colour=paint, reflectance=refl, taper=(1.0, 0.86))  # B-pillars
    for side in (-1, 1):  # lamps, plates
        b.box((l / 2 - 0.02, side * w * 0.36, belt - 0.12), (0.05, w * 0.18, 0.1), mat.LAMP,
              colour=(0.9, 0.9, 0.85))
        b.box((-l / 2 + 0.02, side * w * 0.38, belt - 0.12), (0.05, w * 0.16, 0.1), mat.LAMP,
              colour=(0.6, 0.02, 0.02))
    b.box((l / 2 + 0.005, 0, 0.38), (0.02, 0.5, 0.11), mat.PLATE)
    b.box((-l / 2 - 0.005, 0, 0.5), (0.02, 0.5, 0.11), mat.PLATE)
    _wheels(b, [l / 2 - 0.19 * l, -l / 2 + 0.19 * l], w / 2, r, 0.2)
    return b.build()


def van_mesh(rng: np.random.Generator, size: Vec | None = None) -> ActorMesh:
    """A van / minibus (KITTI Van: ~5.0 x 1.9 x 2.2)."""
    if size is None:
        size = (np.clip(rng.normal(5.0, 0.35), 4.2, 6.2), np.clip(rng.normal(1.9, 0.08), 1.75, 2.1),
                np.clip(rng.normal(2.2, 0.15), 1.9, 2.6))
    l, w, h = (float(s) for s in size)
    paint, refl = _pick_colour(rng) if rng.random() < 0.5 else (np.array([0.75, 0.75, 0.75]), 0.55)
    b = MeshBuilder()
    nose = rng.uniform(0.7, 1.0)
    b.box((-nose / 2, 0, (0.3 + h) / 2), (l - nose, w, h - 0.3), mat.CAR_PAINT, taper=(0.98, 0.96), colour=paint,
          reflectance=refl)
    b.box((l / 2 - nose / 2, 0, 0.3 + 0.35 * h / 2), (nose, w * 0.98, 0.35 * h), mat.CAR_PAINT, colour=paint,
          reflectance=refl, taper=(0.9, 0.97))
    b.box((l / 2 - nose - 0.05, 0, h * 0.68), (0.2, w * 0.92, h * 0.36), mat.CAR_GLASS, pitch=-0.35)
    for side in (-1, 1):
        b.box((l / 2 - nose - 0.6, side * (w / 2 + 0.01), h * 0.7), (0.9, 0.02, h * 0.3), mat.CAR_GLASS)
        b.box((l / 2 - 0.03, side * w * 0.38, 0.75), (0.05, 0.25, 0.12), mat.LAMP, colour=(0.9, 0.9, 0.85))
        b.box((-l / 2 + 0.03, side * w * 0.43, 0.9), (0.05, 0.15, 0.25), mat.LAMP, colour=(0.6, 0.02, 0.02))
    b.box((0, 0, 0.3), (l * 0.98, w * 0.96, 0.2), mat.DARK_METAL)
    b.box((-l / 2 - 0.005, 0, 0.55), (0.02, 0.5, 0.11), mat.PLATE)
    _wheels(b, [l / 2 - 0.8, -l / 2 + 0.85], w / 2, 0.34, 0.22)
    return b.build()


def truck_mesh(rng: np.random.Generator, size: Vec | None = None) -> ActorMesh:
    """A lorry: cab plus box / tanker / flat-bed body (KITTI Truck: ~10 x 2.6 x 3.2)."""
    if size is None:
        size = (np.clip(rng.normal(10.0, 1.8), 6.5, 14.0), np.clip(rng.normal(2.55, 0.1), 2.3, 2.8),
                np.clip(rng.normal(3.3, 0.3), 2.7, 4.0))
    l, w, h = (float(s) for s in size)
    cab_colour = np.clip(rng.uniform(0.05, 0.8, size=3), 0, 1)
    b = MeshBuilder()
    cab_l, cab_h = 2.2, min(h, rng.uniform(2.8, 3.2))
    b.box((l / 2 - cab_l / 2, 0, (0.6 + cab_h) / 2), (cab_l, w * 0.98, cab_h - 0.6), mat.CAR_PAINT,
          colour=cab_colour, reflectance=0.45, taper=(0.95, 0.97))
    b.box((l / 2 - 0.06, 0, cab_h * 0.72), (0.1, w * 0.88, cab_h * 0.3), mat.CAR_GLASS)
    body_l = l - cab_l - 0.3
    kind = rng.choice(["box", "box", "tank", "flat"])
    body_x = -l / 2 + body_l / 2
    if kind == "box":
        b.box((body_x, 0, (1.0 + h) / 2), (body_l, w, h - 1.0), mat.CAR_PAINT,
              colour=np.clip(rng.uniform(0.3, 0.85) * np.ones(3) * rng.uniform(0.8, 1.2, 3), 0, 1), reflectance=0.5)
    elif kind == "tank":
        rad = min(w / 2, (h - 1.0) / 2)
        b.cylinder((body_x - body_l / 2, 0, h - rad), (body_x + body_l / 2, 0, h - rad), rad, mat.METAL,
                   resolution=14)
        b.box((body_x, 0, 1.0), (body_l, w * 0.9, 0.3), mat.DARK_METAL)
    else:
        b.box((body_x, 0, 1.1), (body_l, w, 0.25), mat.WOOD)
        n = int(rng.integers(0, 4))
        for i in range(n):
            cl = body_l / max(n, 1) * 0.8
            b.box((body_x - body_l / 2 + (i + 0.5) * body_l / n, 0, 1.2 + (h - 1.25) / 2), (cl, w * 0.9, h - 1.25),
                  mat.WOOD, colour=(0.35, 0.25, 0.15))
        b.box((l / 2 - cab_l - 0.15, 0, h / 2 + 0.4), (0.1, w, h - 0.8), mat.DARK_METAL)  # headboard to full height
    b.box((0, 0, 0.8), (l * 0.97, w * 0.7, 0.35), mat.DARK_METAL)  # chassis
    _wheels(b, [l / 2 - 1.3, -l / 2 + 1.4, -l / 2 + 2.7], w / 2, 0.5, 0.35)
    b.box((-l / 2 - 0.005, 0, 0.9), (0.02, 0.5, 0.11), mat.PLATE)
    return b.build()


# ---------------------------------------------------------------------- people
def pedestrian_mesh(rng: np.random.Generator, height: float | None = None, stride: float | None = None,
                    phase: float | None = None) -> ActorMesh:
    """A person facing +x: legs, torso, arms, head, optional bag (KITTI Pedestrian: 0.8 x 0.6 x 1.75±0.1).

    ``stride`` is the foot separation in metres (0 = standing; default random), ``phase`` in [0, 1)
    selects which leg is forward.
    """
    h = float(np.clip(rng.normal(1.74, 0.1), 1.0, 2.05) if height is None else height)
    s = h / 1.75
    stride = float(rng.choice([0.0, rng.uniform(0.3, 0.75)], p=[0.3, 0.7]) if stride is None else stride) * s
    sign = 1.0 if (rng.random() if phase is None else phase) < 0.5 else -1.0
    top, trousers = _clothes(rng), _clothes(rng)
    skin = np.clip(np.asarray(mat.SKIN.albedo) * rng.uniform(0.35, 1.25), 0, 1)
    b = MeshBuilder()
    hip_z, knee_z, shoulder_z = 0.53 * h, 0.28 * h, 0.815 * h
    hip_y, shoulder_y = 0.09 * s * rng.uniform(0.95, 1.1), 0.19 * s * rng.uniform(0.9, 1.1)
    for side, fwd in ((1, sign), (-1, -sign)):
        foot = np.array([fwd * stride / 2, side * hip_y, 0.06 * s])
        knee = np.array([fwd * stride * 0.3 + 0.03 * s * (fwd > 0), side * hip_y, knee_z])
        hip = np.array([0.0, side * hip_y, hip_z])
        b.cylinder(hip, knee, 0.075 * s, mat.CLOTH, 6, colour=trousers)
        b.cylinder(knee, foot, 0.06 * s, mat.CLOTH, 6, colour=trousers)
        b.box(foot + np.array([0.05 * s, 0, -0.03 * s]), (0.25 * s, 0.1 * s, 0.07 * s), mat.PLASTIC,
              colour=(0.05, 0.05, 0.05))
        swing = -fwd * stride * 0.45
        shoulder = np.array([0.0, side * shoulder_y, shoulder_z])
        elbow = np.array([swing * 0.5, side * (shoulder_y + 0.03 * s), 0.63 * h])
        hand = np.array([swing + 0.05 * s * (swing > 0), side * (shoulder_y + 0.05 * s), 0.47 * h])
        b.cylinder(shoulder, elbow, 0.045 * s, mat.CLOTH, 6, colour=top)
        b.cylinder(elbow, hand, 0.04 * s, mat.SKIN, 6, colour=skin if rng.random() < 0.5 else top)
    b.box((0, 0, (hip_z + shoulder_z + 0.04 * h) / 2), (0.24 * s, 0.36 * s, shoulder_z + 0.04 * h - hip_z + 0.04),
          mat.CLOTH, taper=(1.0, 1.15), colour=top)
    b.cylinder((0, 0, shoulder_z), (0, 0, 0.875 * h), 0.05 * s, mat.SKIN, 6, colour=skin)
    head_r = 0.105 * s
    b.sphere((0.01 * s, 0, h - head_r), head_r, mat.SKIN, 5, scale=(1.0, 0.85, 1.05), colour=skin)
    b.sphere((-0.01 * s, 0, h - head_r * 0.85), head_r * 0.98, mat.HAIR, 4, scale=(1.0, 0.88, 0.9))
    r = rng.random()
    if r < 0.25:  # backpack
        b.box((-0.19 * s, 0, 0.68 * h), (0.16 * s, 0.3 * s, 0.4 * s), mat.CLOTH, colour=_clothes(rng))
    elif r < 0.4:  # hand bag
        b.box((0.0, 0.28 * s, 0.42 * h), (0.3 * s, 0.12 * s, 0.25 * s), mat.PLASTIC, colour=_clothes(rng))
    return b.build()


def cyclist_mesh(rng: np.random.Generator, height: float | None = None) -> ActorMesh:
    """A person riding a bicycle, facing +x (KITTI Cyclist: 1.75 x 0.6 x 1.75)."""
    h = float(np.clip(rng.normal(1.75, 0.08), 1.5, 2.0) if height is None else height)
    s = h / 1.75
    wr = 0.34
    frame_colour = np.clip(rng.uniform(0.02, 0.8, 3), 0, 1)
    top, trousers = _clothes(rng), _clothes(rng)
    skin = np.clip(np.asarray(mat.SKIN.albedo) * rng.uniform(0.35, 1.25), 0, 1)
    b = MeshBuilder()
    rear, front = np.array([-0.53, 0, wr]), np.array([0.53, 0, wr])
    for c in (rear, front):
        b.cylinder(c - [0, 0.02, 0], c + [0, 0.02, 0], wr, mat.TYRE, 14)
        b.cylinder(c - [0, 0.025, 0], c + [0, 0.025, 0], 0.05, mat.METAL, 6)
    bracket, seat, head_tube = np.array([-0.05, 0, 0.3]), np.array([-0.25, 0, 0.88 * s]), np.array([0.4, 0, 0.86 * s])
    bar = np.array([0.36, 0, 1.0 * s])
    for p0, p1 in ((rear, bracket), (rear, seat), (bracket, seat), (bracket, head_tube), (seat, head_tube),
                   (head_tube, front), (head_tube, bar)):
        b.cylinder(p0, p1, 0.02, mat.METAL, 5, colour=frame_colour)
    b.cylinder(bar + [0, -0.28, 0], bar + [0, 0.28, 0], 0.015, mat.DARK_METAL, 5)
    b.box(seat + [0, 0, 0.03], (0.25, 0.12, 0.05), mat.PLASTIC, colour=(0.05, 0.05, 0.05))
    crank = rng.uniform(0, 2 * np.pi)
    hip = seat + np.array([0.02, 0, 0.1])
    shoulder_c = np.array([0.12, 0, 1.45 * s])
    for side, ph in ((1, 0.0), (-1, np.pi)):
        pedal = bracket + np.array([0.17 * np.cos(crank + ph), side * 0.12, 0.17 * np.sin(crank + ph)])
        hip_s = hip + [0, side * 0.1, 0]
        mid = (hip_s + pedal) / 2
        knee = mid + np.array([0.22, 0, 0.1]) * s
        b.cylinder(hip_s, knee, 0.07 * s, mat.CLOTH, 6, colour=trousers)
        b.cylinder(knee, pedal, 0.055 * s, mat.CLOTH, 6, colour=trousers)
        shoulder = shoulder_c + [0, side * 0.19 * s, 0]
        hand = bar + [0, side * 0.24, 0]
        elbow = (shoulder + hand) / 2 + np.array([0, side * 0.05, 0.05])
        b.cylinder(shoulder, elbow, 0.045 * s, mat.CLOTH, 6, colour=top)
        b.cylinder(elbow, hand, 0.04 * s, mat.SKIN, 6, colour=skin)
    torso_c = (hip + shoulder_c) / 2
    lean = np.arctan2(shoulder_c[0] - hip[0], shoulder_c[2] - hip[2])
    b.box(torso_c, (0.24 * s, 0.36 * s, np.linalg.norm(shoulder_c - hip) + 0.05), mat.CLOTH, pitch=lean,
          colour=top, taper=(1.0, 1.12))
    head = shoulder_c + np.array([0.1, 0, 0.19]) * s
    b.sphere(head, 0.105 * s, mat.SKIN, 5, scale=(1.0, 0.85, 1.05), colour=skin)
    if rng.random() < 0.6:  # helmet
        b.sphere(head + [0, 0, 0.03 * s], 0.125 * s, mat.PLASTIC, 5, scale=(1.15, 0.95, 0.75), colour=_clothes(rng))
    return b.build()


# ---------------------------------------------------------------------- out-of-distribution objects
def animal_mesh(rng: np.random.Generator, kind: str | None = None) -> ActorMesh:
    """A quadruped facing +x: ``"deer"`` (~1.5 x 0.45 x 1.5) or ``"dog"`` (~0.8 x 0.3 x 0.65)."""
    kind = kind or str(rng.choice(["deer", "dog"]))
    sc = rng.uniform(0.85, 1.15) * (1.0 if kind == "deer" else 0.48)
    fur = np.clip(np.asarray(mat.FUR.albedo) * rng.uniform(0.4, 1.6), 0, 1)
    b = MeshBuilder()
    body_z, body_l = 0.95 * sc, 1.05 * sc
    b.sphere((0, 0, body_z), 0.5 * body_l, mat.FUR, 6, scale=(1.0, 0.36, 0.42), colour=fur)
    for fx in (0.36, -0.36):
        for side in (-1, 1):
            top = np.array([fx * body_l, side * 0.1 * sc, body_z - 0.05 * sc])
            knee = top + np.array([rng.uniform(-0.08, 0.08) * sc, 0, -0.42 * sc])
            b.cylinder(top, knee, 0.05 * sc, mat.FUR, 5, colour=fur)
            b.cylinder(knee, [knee[0] + rng.uniform(-0.05, 0.05) * sc, knee[1], 0.0], 0.03 * sc, mat.FUR, 5,
                       colour=fur * 0.6)
    neck_top = np.array([0.62 * body_l, 0, body_z + (0.45 if kind == "deer" else 0.25) * sc])
    b.cylinder((0.4 * body_l, 0, body_z + 0.05 * sc), neck_top, 0.09 * sc, mat.FUR, 6, colour=fur)
    b.sphere(neck_top + np.array([0.1, 0, 0]) * sc, 0.13 * sc, mat.FUR, 5, scale=(1.5, 0.75, 0.8), colour=fur)
    if kind == "deer" and rng.random() < 0.6:  # antlers
        for side in (-1, 1):
            base = neck_top + np.array([0.0, side * 0.06, 0.1]) * sc
            b.cylinder(base, base + np.array([-0.1, side * 0.2, 0.35]) * sc, 0.015 * sc, mat.BARK, 4)
    else:  # ears
        for side in (-1, 1):
            b.box(neck_top + np.array([0.0, side * 0.07, 0.12]) * sc, (0.04, 0.05, 0.14), mat.FUR, colour=fur)
    b.cylinder((-0.5 * body_l, 0, body_z + 0.05 * sc), (-0.6 * body_l, 0, body_z - 0.15 * sc * (kind == "dog") +
                                                         0.05 * sc), 0.04 * sc, mat.FUR, 5, colour=fur)
    return b.build()


def debris_mesh(rng: np.random.Generator) -> ActorMesh:
    """Irregular low clutter lying on the road: boxes, planks, a tyre, rocks (0.5-2.5 m wide, < 0.5 m high)."""
    b = MeshBuilder()
    spread = rng.uniform(0.4, 1.2)
    for _ in range(int(rng.integers(3, 9))):
        x, y = rng.uniform(-spread, spread, 2)
        kind = rng.integers(0, 4)
        if kind == 0:  # cardboard / crate
            sz = rng.uniform([0.2, 0.2, 0.1], [0.6, 0.5, 0.45])
            b.box((x, y, sz[2] / 2), sz, mat.WOOD, yaw=rng.uniform(0, np.pi), roll=rng.uniform(-0.2, 0.2),
                  colour=np.clip(np.asarray(mat.WOOD.albedo) * rng.uniform(0.6, 1.4), 0, 1))
        elif kind == 1:  # plank / pipe
            ln = rng.uniform(0.6, 1.6)
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a), 0]) * ln / 2
            b.cylinder(np.array([x, y, 0.05]) - d, np.array([x, y, 0.05]) + d, rng.uniform(0.03, 0.08),
                       mat.METAL if rng.random() < 0.5 else mat.WOOD, 6)
        elif kind == 2:  # tyre lying flat
            r = rng.uniform(0.28, 0.4)
            b.cylinder((x, y, 0.0), (x, y, 0.2), r, mat.TYRE, 12)
        else:  # rock / bag
            r = rng.uniform(0.1, 0.3)
            b.sphere((x, y, r * 0.6), r, mat.CONCRETE if rng.random() < 0.5 else mat.PLASTIC, 4,
                     scale=rng.uniform(0.6, 1.4, 3), yaw=rng.uniform(0, np.pi))
    return b.build()


def stroller_mesh(rng: np.random.Generator) -> ActorMesh:
    """A baby stroller facing +x (~0.9 x 0.6 x 1.05)."""
    colour = _clothes(rng)
    b = MeshBuilder()
    for x in (0.3, -0.3):
        for side in (-1, 1):
            c = np.array([x, side * 0.27, 0.1])
            b.cylinder(c - [0, 0.02, 0], c + [0, 0.02, 0], 0.1, mat.TYRE, 10)
    b.box((0, 0, 0.2), (0.7, 0.5, 0.03), mat.METAL)
    for side in (-1, 1):
        b.cylinder((0.3, side * 0.25, 0.1), (-0.1, side * 0.25, 0.55), 0.015, mat.METAL, 5)
        b.cylinder((-0.3, side * 0.25, 0.1), (-0.45, side * 0.25, 1.02), 0.015, mat.METAL, 5)
    b.cylinder((-0.45, -0.25, 1.02), (-0.45, 0.25, 1.02), 0.02, mat.PLASTIC, 6, colour=(0.05, 0.05, 0.05))
    b.box((0.02, 0, 0.62), (0.62, 0.44, 0.25), mat.CLOTH, taper=(1.1, 1.05), colour=colour)
    b.sphere((-0.15, 0, 0.78), 0.27, mat.CLOTH, 6, scale=(1.0, 0.82, 0.7), colour=colour)
    return b.build()


def construction_machine_mesh(rng: np.random.Generator) -> ActorMesh:
    """A tracked excavator facing +x with its boom forward (~8 x 2.8 x 3.2)."""
    paint = np.clip(np.asarray(mat.MACHINE_PAINT.albedo) * rng.uniform(0.8, 1.15, 3), 0, 1)
    b = MeshBuilder()
    track_l, w = rng.uniform(3.6, 4.4), rng.uniform(2.5, 3.0)
    for side in (-1, 1):
        b.box((0, side * (w / 2 - 0.3), 0.45), (track_l, 0.6, 0.9), mat.DARK_METAL, taper=(0.85, 1.0))
    b.box((0, 0, 1.0), (2.0, 1.6, 0.3), mat.DARK_METAL)
    swing = rng.uniform(-0.4, 0.4)
    up = MeshBuilder()
    up.box((-0.4, 0, 1.6), (3.0, 2.4, 0.9), mat.MACHINE_PAINT, colour=paint)
    up.box((-1.8, 0, 1.5), (0.5, 2.4, 0.8), mat.DARK_METAL)  # counterweight
    up.box((0.4, 0.65, 2.8), (1.0, 0.9, 1.5), mat.CAR_GLASS)  # cab
    up.box((0.4, 0.65, 3.58), (1.05, 0.95, 0.06), mat.MACHINE_PAINT, colour=paint)
    boom_angle = rng.uniform(0.5, 0.9)
    boom_root = np.array([0.9, -0.3, 2.0])
    boom_len = rng.uniform(2.8, 3.4)
    boom_tip = boom_root + boom_len * np.array([np.cos(boom_angle), 0, np.sin(boom_angle)])
    up.box((boom_root + boom_tip) / 2, (boom_len, 0.45, 0.5), mat.MACHINE_PAINT, pitch=-boom_angle, colour=paint)
    arm_angle = -rng.uniform(1.0, 1.5)
    arm_tip = boom_tip + 2.3 * np.array([np.cos(arm_angle), 0, np.sin(arm_angle)])
    arm_tip[2] = max(arm_tip[2], 0.6)
    arm_vec = arm_tip - boom_tip
    up.box((boom_tip + arm_tip) / 2, (np.linalg.norm(arm_vec), 0.35, 0.4), mat.MACHINE_PAINT,
           pitch=-np.arctan2(arm_vec[2], arm_vec[0]), colour=paint)
    up.box(arm_tip + np.array([0.2, 0, -0.3]), (0.8, 1.0, 0.6), mat.DARK_METAL, taper=(0.5, 1.0))
    b.extend(up.build(recentre=False), yaw=swing)
    return b.build()


# ---------------------------------------------------------------------- static scenery
def tree_mesh(rng: np.random.Generator, height: float | None = None, crown_base: float | None = None) -> ActorMesh:
    """A tree: trunk plus one to three foliage ellipsoids (``crown_base``: lowest foliage height)."""
    h = float(rng.uniform(4.0, 11.0) if height is None else height)
    b = MeshBuilder()
    crown_base = h * rng.uniform(0.3, 0.5) if crown_base is None else min(crown_base, h - 1.0)
    b.cylinder((0, 0, 0), (0, 0, crown_base + 0.5), rng.uniform(0.1, 0.25), mat.BARK, 6)
    crown_r = (h - crown_base) / 2
    leaf = np.clip(np.asarray(mat.FOLIAGE.albedo) * rng.uniform(0.6, 1.5, 3), 0, 1)
    for _ in range(int(rng.integers(1, 4))):
        off = rng.uniform(-0.3, 0.3, 3) * crown_r
        b.sphere((off[0], off[1], crown_base + crown_r + off[2] * 0.5), crown_r * rng.uniform(0.7, 1.0), mat.FOLIAGE,
                 6, scale=(rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), 1.0), colour=leaf)
    return b.build()


def pole_mesh(rng: np.random.Generator, kind: str | None = None) -> ActorMesh:
    """A street lamp, a traffic sign or a bollard; the lamp arm points along +y (towards the road)."""
    kind = kind or str(rng.choice(["lamp", "sign", "sign", "bollard"]))
    b = MeshBuilder()
    if kind == "lamp":
        h = rng.uniform(5.5, 8.0)
        b.cylinder((0, 0, 0), (0, 0, h), 0.08, mat.METAL, 6)
        b.cylinder((0, 0, h), (0, 1.4, h + 0.2), 0.05, mat.METAL, 5)
        b.box((0, 1.5, h + 0.12), (0.25, 0.5, 0.12), mat.LAMP, colour=(0.7, 0.7, 0.6))
    elif kind == "sign":
        h = rng.uniform(2.2, 3.0)
        b.cylinder((0, 0, 0), (0, 0, h), 0.04, mat.METAL, 6)
        colour = [(0.7, 0.05, 0.05), (0.05, 0.1, 0.5), (0.8, 0.7, 0.05)][int(rng.integers(3))]
        if rng.random() < 0.5:
            b.cylinder((0, 0.02, h - 0.05), (0, 0.05, h - 0.05), 0.32, mat.SIGN, 12, colour=colour)
        else:
            b.box((0, 0.04, h - 0.1), (0.6, 0.03, 0.6), mat.SIGN, colour=colour)
    else:
        b.cylinder((0, 0, 0), (0, 0, 0.9), 0.08, mat.METAL, 6, colour=(0.6, 0.6, 0.6))
    return b.build()


def building_mesh(rng: np.random.Generator, width: float, depth: float, height: float,
                  style: str = "city") -> ActorMesh:
    """A building: walls, windows and a door on the facade at y = 0 (facing -y), flat or gabled roof.

    Not re-centred: x in [-width/2, width/2], y in [0, depth], z from 0.
    """
    b = MeshBuilder()
    tint = 1.0 + rng.uniform(-0.25, 0.25, 3) * rng.uniform(0.0, 1.0)
    wall = np.clip(np.asarray(mat.WALL.albedo) * tint * rng.uniform(0.5, 1.4), 0.03, 0.95)
    b.box((0, depth / 2, height / 2), (width, depth, height), mat.WALL, colour=wall,
          reflectance=float(rng.uniform(0.18, 0.42)))
    if style == "residential" and rng.random() < 0.7:
        roof_h = rng.uniform(1.5, 3.5)
        b.box((0, depth / 2, height + roof_h / 2), (width + 0.3, depth + 0.3, roof_h), mat.ROOF, taper=(1.0, 0.02),
              colour=np.clip(np.asarray(mat.ROOF.albedo) * rng.uniform(0.5, 1.5, 3), 0, 1))
    floor_h = rng.uniform(2.8, 3.6)
    n_floors = max(1, int((height - 0.5) / floor_h))
    win_w = rng.uniform(0.9, 1.6)
    n_cols = max(1, int(width / (win_w * rng.uniform(1.8, 2.6))))
    pitch = width / n_cols
    door_col = int(rng.integers(n_cols))
    for fl in range(n_floors):
        z = fl * floor_h + floor_h * 0.55
        for c in range(n_cols):
            x = -width / 2 + (c + 0.5) * pitch
            if fl == 0 and c == door_col:
                b.box((x, -0.03, 1.1), (1.1, 0.08, 2.2), mat.WOOD, colour=np.clip(rng.uniform(0.05, 0.4, 3), 0, 1))
                continue
            if fl == 0 and style == "city" and rng.random() < 0.5:  # shop window
                b.box((x, -0.03, 1.5), (pitch * 0.8, 0.06, 2.2), mat.WINDOW)
                continue
            b.box((x, -0.03, z), (win_w, 0.06, floor_h * 0.45), mat.WINDOW)
    return b.build(recentre=False)


def hedge_mesh(rng: np.random.Generator, length: float) -> ActorMesh:
    """A hedge or a garden wall along x (``length`` long)."""
    b = MeshBuilder()
    if rng.random() < 0.6:
        h = rng.uniform(0.8, 1.8)
        b.box((0, 0, h / 2), (length, rng.uniform(0.5, 1.0), h), mat.HEDGE,
              colour=np.clip(np.asarray(mat.HEDGE.albedo) * rng.uniform(0.7, 1.4, 3), 0, 1))
    else:
        h = rng.uniform(0.5, 1.3)
        b.box((0, 0, h / 2), (length, 0.25, h), mat.CONCRETE,
              colour=np.clip(np.asarray(mat.CONCRETE.albedo) * rng.uniform(0.6, 1.3), 0, 1))
    return b.build()


#: Builders of the labelled object classes (KITTI and out-of-distribution names).
ACTOR_BUILDERS = {
    "Car": car_mesh,
    "Van": van_mesh,
    "Truck": truck_mesh,
    "Pedestrian": pedestrian_mesh,
    "Cyclist": cyclist_mesh,
    "Animal": animal_mesh,
    "Debris": debris_mesh,
    "Stroller": stroller_mesh,
    "ConstructionMachine": construction_machine_mesh,
}
