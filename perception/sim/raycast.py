"""The world at one instant as an Open3D ``RaycastingScene``, with per-triangle surface attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from perception.sim.world import World

INVALID = o3d.t.geometry.RaycastingScene.INVALID_ID
_THREADS = {"n": 0}  # Open3D ray-casting threads (0 = all cores)


def set_ray_threads(n: int) -> None:
    """Threads Open3D may use per ray cast (0 = all cores; 1 = single-core rendering)."""
    _THREADS["n"] = int(n)


def rotate(v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``v @ r.T`` for (N, 3) arrays without BLAS (threaded BLAS on thin shapes is very slow on a busy machine)."""
    r = np.asarray(r, dtype=v.dtype)
    if r[2, 2] == 1 and not r[2, :2].any() and not r[:2, 2].any():  # rotation about z only
        out = np.empty_like(v)
        x, y = v[:, 0], v[:, 1]
        out[:, 0] = x * r[0, 0] + y * r[0, 1]
        out[:, 1] = x * r[1, 0] + y * r[1, 1]
        out[:, 2] = v[:, 2]
        return out
    return np.einsum("ij,kj->ik", v, r)


def dot3(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (N, 3) ``v`` with a 3-vector ``u`` (no BLAS)."""
    u = np.asarray(u, dtype=v.dtype)
    return v[:, 0] * u[0] + v[:, 1] * u[1] + v[:, 2] * u[2]


@dataclass
class Hits:
    """Result of casting N rays: ``geom`` is -1 on a miss, 0 for the static world, 1 + i for actor i."""

    t: np.ndarray  # (N,) float32 distance along the (unit) ray, inf on a miss
    geom: np.ndarray  # (N,) int32
    tri: np.ndarray  # (N,) int64 global triangle index into the attribute tables, -1 on a miss
    normal: np.ndarray  # (N, 3) float32 unit normal facing the ray origin

    @property
    def hit(self) -> np.ndarray:
        """(N,) bool, True where the ray hit something."""
        return self.geom >= 0


class SceneAttributes:
    """Per-triangle material tables for a drive: static world first, then every actor (constant per drive)."""

    def __init__(self, world: World) -> None:
        meshes = [world.static] + [a.mesh for a in world.actors]
        counts = np.array([len(m.triangles) for m in meshes])
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.material = np.concatenate([m.material for m in meshes])
        self.albedo = np.concatenate([m.albedo for m in meshes]).astype(np.float32)
        self.reflectance = np.concatenate([m.reflectance for m in meshes]).astype(np.float32)
        self.static_vertices = o3d.core.Tensor(np.ascontiguousarray(world.static.vertices, dtype=np.float32))
        self.static_triangles = o3d.core.Tensor(np.ascontiguousarray(world.static.triangles, dtype=np.uint32))
        self.actor_triangles = [o3d.core.Tensor(np.ascontiguousarray(a.mesh.triangles, dtype=np.uint32))
                                for a in world.actors]


class FrameScene:
    """Ray-castable snapshot: the static world plus the actors placed at time ``t``."""

    def __init__(self, world: World, attrs: SceneAttributes, t: float) -> None:
        self.world, self.attrs, self.t = world, attrs, t
        self.actor_vertices = [a.world_vertices(world.road, t) for a in world.actors]
        self.scene = o3d.t.geometry.RaycastingScene()
        ids = [self.scene.add_triangles(attrs.static_vertices, attrs.static_triangles)]
        for verts, tris in zip(self.actor_vertices, attrs.actor_triangles):
            ids.append(self.scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(verts, np.float32)), tris))
        self._lut = np.full(max(ids) + 1, -1, dtype=np.int32)
        self._lut[ids] = np.arange(len(ids), dtype=np.int32)
        self._actors_only: o3d.t.geometry.RaycastingScene | None = None
        self._actors_only_lut: np.ndarray | None = None

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> Hits:
        """Cast rays (origins (N, 3) or (3,), unit dirs (N, 3)) in the world frame."""
        dirs = np.asarray(dirs, dtype=np.float32)
        rays = np.empty((len(dirs), 6), dtype=np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        out = self.scene.cast_rays(o3d.core.Tensor(rays), nthreads=_THREADS["n"])
        t = out["t_hit"].numpy()
        gid = out["geometry_ids"].numpy()
        hit = gid != INVALID
        geom = np.full(len(dirs), -1, dtype=np.int32)
        geom[hit] = self._lut[gid[hit]]
        tri = np.full(len(dirs), -1, dtype=np.int64)
        tri[hit] = self.attrs.offsets[geom[hit]] + out["primitive_ids"].numpy()[hit]
        n = out["primitive_normals"].numpy()
        flip = np.einsum("ij,ij->i", n, dirs) > 0
        n[flip] *= -1
        return Hits(t=t, geom=geom, tri=tri, normal=n)

    def occluded(self, origins: np.ndarray, dirs: np.ndarray, max_t: float = np.inf) -> np.ndarray:
        """(N,) bool: does anything lie along each ray closer than ``max_t``?"""
        rays = np.empty((len(dirs), 6), dtype=np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        return self.scene.test_occlusions(o3d.core.Tensor(rays), tfar=float(max_t),
                                          nthreads=_THREADS["n"]).numpy().astype(bool)

    def actor_coverage(self, origin: np.ndarray, dirs: np.ndarray, actor_index: np.ndarray) -> np.ndarray:
        """(N,) bool: does ray i pass through actor ``actor_index[i]`` at all (ignoring every occluder)?"""
        if self._actors_only is None:
            self._actors_only = o3d.t.geometry.RaycastingScene()
            ids = [self._actors_only.add_triangles(o3d.core.Tensor(np.ascontiguousarray(v, np.float32)), tris)
                   for v, tris in zip(self.actor_vertices, self.attrs.actor_triangles)]
            self._actors_only_lut = np.full(max(ids, default=0) + 1, -1, dtype=np.int64)
            self._actors_only_lut[ids] = np.arange(len(ids))
        if len(dirs) == 0:
            return np.zeros(0, dtype=bool)
        rays = np.empty((len(dirs), 6), dtype=np.float32)
        rays[:, :3] = origin
        rays[:, 3:] = dirs
        out = self._actors_only.list_intersections(o3d.core.Tensor(rays), nthreads=_THREADS["n"])
        ray_ids = out["ray_ids"].numpy().astype(np.int64)
        actor = self._actors_only_lut[out["geometry_ids"].numpy().astype(np.int64)]
        covered = np.zeros(len(dirs), dtype=bool)
        covered[ray_ids[actor == actor_index[ray_ids]]] = True
        return covered
