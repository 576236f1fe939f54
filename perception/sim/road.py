"""Road geometry: a constant-curvature centre line with lanes, bike lanes, parking lanes, curbs and sidewalks.

Road coordinates ``(s, d)``: arc length ``s`` along the centre line and lateral offset ``d`` (left
positive). Traffic drives on the right: lanes with ``d < 0`` run towards +s. The world frame is
the road frame at ``s = 0`` (x along the road, y left, z up, ground at z = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.sim import materials as mat
from perception.sim.meshes import ActorMesh

PARKING_WIDTH = 2.2
CURB_HEIGHT = 0.14
PAINT_WIDTH = 0.14


@dataclass
class RoadSide:
    """Cross-section of one side of the road, from the centre line outwards."""

    lanes: int  # driving lanes
    bike_lane: float  # width (0 = none)
    parking: bool  # parallel-parking lane along the curb
    sidewalk: float  # sidewalk width beyond the curb

    def edge(self, lane_width: float) -> float:
        """Distance from the centre line to the curb."""
        return self.lanes * lane_width + self.bike_lane + (PARKING_WIDTH if self.parking else 0.0)


@dataclass
class Road:
    """A constant-curvature road with a right (``d < 0``) and a left side."""

    curvature: float  # 1/m, positive turns left
    lane_width: float
    right: RoadSide
    left: RoadSide
    s_range: tuple[float, float]

    # ------------------------------------------------------------------ road <-> world
    def heading(self, s: np.ndarray | float) -> np.ndarray:
        """Heading of the centre line at ``s`` (radians)."""
        return np.asarray(s, dtype=np.float64) * self.curvature

    def to_world(self, s: np.ndarray | float, d: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) of road coordinates."""
        s, d = np.asarray(s, np.float64), np.asarray(d, np.float64)
        k = self.curvature
        if abs(k) < 1e-9:
            return s + 0.0 * d, d + 0.0 * s
        th = k * s
        return np.sin(th) * (1.0 / k - d), 1.0 / k - np.cos(th) * (1.0 / k - d)

    def to_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, d) of world points (exact inverse of :meth:`to_world`)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        k = self.curvature
        if abs(k) < 1e-9:
            return x, y
        sg = np.sign(k)
        vx, vy = x, y - 1.0 / k
        r = np.hypot(vx, vy)
        return np.arctan2(vx * sg, -vy * sg) / k, 1.0 / k - sg * r

    def side(self, sign: int) -> RoadSide:
        """The right (``sign = -1``) or left (``+1``) side."""
        return self.right if sign < 0 else self.left

    def curb(self, sign: int) -> float:
        """Signed lateral offset of the curb on one side."""
        return sign * self.side(sign).edge(self.lane_width)

    def lane_centre(self, sign: int, lane: int) -> float:
        """Signed offset of the centre of driving lane ``lane`` (0 = next to the centre line)."""
        return sign * (lane + 0.5) * self.lane_width

    def bike_centre(self, sign: int) -> float:
        """Signed offset of the bike lane (or the outer part of the outer lane without one)."""
        side = self.side(sign)
        inner = side.lanes * self.lane_width
        return sign * (inner + side.bike_lane / 2 if side.bike_lane > 0 else inner - 0.7)

    def parking_centre(self, sign: int) -> float:
        """Signed offset of the parking lane's centre."""
        return self.curb(sign) - sign * PARKING_WIDTH / 2

    # ------------------------------------------------------------------ surface appearance
    def paint_mask(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """True where road coordinates fall on lane paint (centre, lane dividers, edge and bike lines)."""
        lw = self.lane_width
        dash = np.mod(s, 9.0) < 3.0
        half = PAINT_WIDTH / 2
        centre = np.abs(d) < half
        centre &= dash if (self.right.lanes + self.left.lanes) > 2 else np.ones_like(dash)
        ad, sign = np.abs(d), np.sign(d)
        mask = centre
        for sg in (-1, 1):
            side = self.side(sg)
            on_side = sign == sg
            for i in range(1, side.lanes):
                mask |= on_side & (np.abs(ad - i * lw) < half) & dash
            mask |= on_side & (np.abs(ad - side.lanes * lw) < half)
            if side.bike_lane > 0:
                mask |= on_side & (np.abs(ad - side.lanes * lw - side.bike_lane) < half) & (np.mod(s, 2.0) < 1.0)
        return mask

    # ------------------------------------------------------------------ ground mesh
    def ground_mesh(self, far: float = 90.0, step: float = 2.0, rng: np.random.Generator | None = None) -> ActorMesh:
        """Road surface, curbs, sidewalks and terrain out to ``far`` metres on each side, in world coordinates."""
        s = np.arange(self.s_range[0], self.s_range[1] + step, step)
        profile: list[tuple[float, float, int]] = []  # (d, z, material of the strip that ends here)
        for sg in (-1, 1):
            side = self.side(sg)
            e = side.edge(self.lane_width)
            sw = e + side.sidewalk
            pts = [(0.0, 0.0, -1), (e / 2, 0.0, 0), (e, 0.0, 0), (e, CURB_HEIGHT, 1), (sw, CURB_HEIGHT, 2),
                   (sw + 0.01, CURB_HEIGHT - 0.02, 2)]
            # terrain in short strips: long thin triangles make ray casting slow
            for dd in (2.0, 5.0, 9.0, 14.0, 20.0, 28.0, 38.0, 50.0, 65.0, far):
                if sw + dd <= far:
                    pts.append((sw + dd, CURB_HEIGHT - 0.02 + 0.3 * dd / far, 3))
            pts = [(sg * d, z, m) for d, z, m in pts]
            profile += pts[::-1] if sg < 0 else pts[1:]
        # Strip materials by id: 0 asphalt, 1 curb, 2 sidewalk, 3 terrain
        mats = [mat.ASPHALT, mat.CURB, mat.SIDEWALK, mat.GRASS if rng is None or rng.random() < 0.6 else mat.DIRT]
        d_prof = np.array([p[0] for p in profile])
        z_prof = np.array([p[1] for p in profile])
        strip_mat = []
        for i in range(len(profile) - 1):  # material of strip between profile[i] and profile[i+1]
            a, b = profile[i], profile[i + 1]
            m = b[2] if b[0] > 0 else a[2]
            strip_mat.append(max(m, 0))
        ns, nd = len(s), len(d_prof)
        ss, dd = np.meshgrid(s, d_prof, indexing="ij")
        x, y = self.to_world(ss, dd)
        verts = np.stack([x, y, np.broadcast_to(z_prof, (ns, nd))], -1).reshape(-1, 3).astype(np.float32)
        idx = np.arange(ns * nd).reshape(ns, nd)
        a, b, c, e = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
        tris = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, e], -1)], axis=0).reshape(-1, 3)
        strip = np.concatenate([np.broadcast_to(np.arange(nd - 1), (ns - 1, nd - 1))] * 2).reshape(-1)
        mat_of_strip = np.array([mat.MATERIAL_ID[mats[m].name] for m in strip_mat], dtype=np.uint8)
        material = mat_of_strip[strip]
        albedo = np.array([mat.MATERIALS[m].albedo for m in material], dtype=np.float32)
        refl = np.array([mat.MATERIALS[m].reflectance for m in material], dtype=np.float32)
        return ActorMesh(verts, tris.astype(np.int32), material, albedo, refl)
