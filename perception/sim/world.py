"""Scene generation: a road with scenery (static mesh, built once per drive) and moving labelled actors.

Actors move along *lines* (driving lanes, bike lanes, parking lanes, sidewalk walkways, lots) at one
speed per line, so objects sharing a line never collide; static obstacles reserve the stretch of
their line that moving objects would sweep during the drive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from perception.sim import meshes as M
from perception.sim.meshes import ActorMesh
from perception.sim.options import SceneOptions
from perception.sim.road import CURB_HEIGHT, Road, RoadSide

logger = logging.getLogger(__name__)

FRAME_DT = 0.1  # seconds between frames (10 Hz)
FORWARD_ZONE = (5.0, 60.0)  # metres ahead of the ego start where the option counts apply
#: KITTI-like label box sizes (mean, std of l, w, h) used to pad tight mesh boxes of small classes.
LABEL_SIZE = {
    "Pedestrian": ((0.8, 0.6, 1.75), (0.1, 0.06, 0.0)),
    "Cyclist": ((1.76, 0.6, 1.74), (0.1, 0.05, 0.0)),
    "Stroller": ((0.9, 0.62, 1.05), (0.05, 0.03, 0.0)),
}


@dataclass
class Track:
    """Motion in road coordinates: ``s(t) = s0 + vs t``, ``d(t) = d0 + vd t``; yaw = road heading + offset."""

    s0: float
    d0: float
    vs: float = 0.0
    vd: float = 0.0
    yaw_offset: float = 0.0
    z: float = 0.0

    def pose(self, road: Road, t: float) -> tuple[np.ndarray, float]:
        """World position of the object's ground point and its yaw at time ``t``."""
        s, d = self.s0 + self.vs * t, self.d0 + self.vd * t
        x, y = road.to_world(s, d)
        return np.array([float(x), float(y), self.z]), float(road.heading(s) + self.yaw_offset)

    def velocity(self, road: Road, t: float, dt: float = 0.05) -> np.ndarray:
        """World (vx, vy) by central difference."""
        p0, _ = self.pose(road, t - dt)
        p1, _ = self.pose(road, t + dt)
        return (p1[:2] - p0[:2]) / (2 * dt)


@dataclass
class Actor:
    """A labelled, possibly moving object."""

    label: str
    mesh: ActorMesh  # local frame, AABB bottom-centred at the origin
    track: Track
    track_id: int
    box_size: np.ndarray  # label box (l, w, h)
    box_centre: np.ndarray  # label box centre in the local frame

    def world_vertices(self, road: Road, t: float) -> np.ndarray:
        """Mesh vertices in the world frame at time ``t``."""
        pos, yaw = self.track.pose(road, t)
        return self.mesh.placed(yaw, pos)


@dataclass
class World:
    """One drive's world: road, static mesh, actors, ego motion and lighting."""

    road: Road
    static: ActorMesh
    actors: list[Actor]
    ego: Track
    sun: np.ndarray  # unit vector towards the sun (world frame)
    scene_type: str
    exposure: float = 1.0
    sky_tint: np.ndarray = field(default_factory=lambda: np.ones(3))


@dataclass
class _Line:
    d: float
    z: float
    vs: float  # signed speed along s
    yaw_offset: float
    occupied: list[tuple[float, float]] = field(default_factory=list)

    def free(self, lo: float, hi: float) -> bool:
        return all(hi <= a or lo >= b for a, b in self.occupied)

    def reserve(self, lo: float, hi: float) -> None:
        self.occupied.append((lo, hi))


class _Populator:
    """Places actors on lines without overlaps."""

    def __init__(self, rng: np.random.Generator, road: Road, opts: SceneOptions, duration: float) -> None:
        self.rng, self.road, self.opts, self.duration = rng, road, opts, duration
        self.actors: list[Actor] = []
        self.lines: dict[str, _Line] = {}
        self.building_lines = {-1: _Line(0, 0, 0, 0), 1: _Line(0, 0, 0, 0)}

    def add_line(self, name: str, d: float, z: float, vs: float, yaw_offset: float) -> _Line:
        self.lines[name] = _Line(d, z, vs, yaw_offset)
        return self.lines[name]

    def lines_of(self, prefix: str) -> list[_Line]:
        return [v for k, v in self.lines.items() if k.startswith(prefix)]

    def _sweep(self, line: _Line, s: float, length: float, gap: float, vs: float) -> tuple[float, float]:
        """Interval of ``line`` an object at ``s`` with its own speed must keep free of the line's movers."""
        rel = (vs - line.vs) * self.duration
        lo, hi = s - length / 2 - gap, s + length / 2 + gap
        return min(lo, lo + rel), max(hi, hi + rel)

    def place(self, label: str, mesh: ActorMesh, line: _Line, s_range: tuple[float, float], gap: float = 1.0,
              yaw_offset: float | None = None, vs: float | None = None, along: float | None = None,
              tries: int = 12, s_fixed: float | None = None, d_offset: float = 0.0) -> Actor | None:
        """Put ``mesh`` on ``line`` at a free s in ``s_range``; returns the actor or None when full."""
        yaw = line.yaw_offset if yaw_offset is None else yaw_offset
        speed = line.vs if vs is None else vs
        length = along if along is not None else abs(np.cos(yaw)) * mesh.extent[0] + abs(np.sin(yaw)) * mesh.extent[1]
        for _ in range(1 if s_fixed is not None else tries):
            s = s_fixed if s_fixed is not None else float(self.rng.uniform(*s_range))
            lo, hi = self._sweep(line, s, length, gap, speed)
            if line.free(lo, hi):
                line.reserve(lo, hi)
                return self.add_actor(label, mesh, Track(s, line.d + d_offset, speed, 0.0, yaw, line.z))
        return None

    def add_actor(self, label: str, mesh: ActorMesh, track: Track) -> Actor:
        ext = mesh.extent
        size = ext.copy()
        if label in LABEL_SIZE:
            mean, std = LABEL_SIZE[label]
            target = np.asarray(mean) + np.asarray(std) * self.rng.normal(size=3)
            size = np.maximum(size, target)
        actor = Actor(label, mesh, track, len(self.actors), size, np.array([0.0, 0.0, size[2] / 2]))
        actor.box_size[2] = ext[2]  # height stays the true height
        actor.box_centre[2] = ext[2] / 2
        self.actors.append(actor)
        return actor


def _make_road(rng: np.random.Generator, opts: SceneOptions, scene: str, s_range: tuple[float, float]) -> Road:
    def side() -> RoadSide:
        lanes = int(rng.choice([1, 2], p=[0.6, 0.4] if scene != "residential" else [0.9, 0.1]))
        parking = bool(rng.random() < {"city": 0.75, "residential": 0.85, "road": 0.1}[scene])
        sidewalk = float(rng.uniform(1.8, 3.0) if scene == "road" else rng.uniform(2.6, 5.0))
        return RoadSide(lanes=lanes, bike_lane=float(rng.uniform(1.2, 1.8)), parking=parking, sidewalk=sidewalk)

    k = 0.0 if rng.random() < 0.4 or opts.max_curvature == 0 else float(
        rng.choice([-1, 1]) * rng.uniform(0.15, 1.0) * opts.max_curvature)
    return Road(curvature=k, lane_width=float(rng.uniform(3.0, 3.7)), right=side(), left=side(), s_range=s_range)


def generate_world(rng: np.random.Generator, opts: SceneOptions, n_frames: int) -> World:
    """Build the world of one drive of ``n_frames`` frames."""
    scene = str(rng.choice(list(opts.scene_types)))
    duration = max(n_frames - 1, 0) * FRAME_DT
    ego_speed = 0.0 if rng.random() < 0.12 else float(rng.uniform(*opts.ego_speed))
    travel = ego_speed * duration
    s_range = (-90.0, travel + 130.0)
    road = _make_road(rng, opts, scene, s_range)
    pop = _Populator(rng, road, opts, duration)

    # ---- lines
    ego_lane = int(rng.integers(road.right.lanes))
    for sg in (-1, 1):
        side = road.side(sg)
        direction, yaw0 = -sg, (0.0 if sg < 0 else np.pi)
        for i in range(side.lanes):
            speed = ego_speed if (sg < 0 and i == ego_lane) else float(rng.uniform(4.0, 14.0))
            if sg < 0 and ego_speed == 0 and rng.random() < 0.5:
                speed = 0.0  # queue at a light
            pop.add_line(f"lane{sg}_{i}", road.lane_centre(sg, i), 0.0, direction * speed, yaw0)
        pop.add_line(f"bike{sg}", road.bike_centre(sg), 0.0, direction * float(rng.uniform(3.0, 7.0)), yaw0)
        if side.parking:
            pop.add_line(f"park{sg}", road.parking_centre(sg), 0.0, 0.0, yaw0)
        curb = road.curb(sg)
        for j, off in enumerate((0.85, 1.65, side.sidewalk - 0.45)):
            if off > side.sidewalk - 0.35 or (j == 2 and side.sidewalk < 3.3):
                continue
            speed = 0.0 if (j == 2 or rng.random() < 0.15) else float(rng.uniform(0.8, 1.7))
            pop.add_line(f"walk{sg}_{j}", curb + sg * off, CURB_HEIGHT, float(rng.choice([-1, 1])) * speed,
                         float(rng.uniform(-np.pi, np.pi)) if j == 2 else (0.0 if rng.random() < 0.5 else np.pi))
        if scene != "road" and rng.random() < 0.45:  # perpendicular / angled parking lot behind the sidewalk
            lot = pop.add_line(f"lot{sg}", curb + sg * (side.sidewalk + 3.2), CURB_HEIGHT, 0.0,
                               sg * np.pi / 2 * (1 if rng.random() < 0.7 else 0.5))
            a = float(rng.uniform(s_range[0] + 10, FORWARD_ZONE[1]))
            b = a + float(rng.uniform(12, 40))
            lot.occupied += [(-1e9, a), (b, 1e9)]
            pop.building_lines[sg].reserve(a - 1, b + 1)
    ego_line = pop.lines[f"lane-1_{ego_lane}"]
    ego_line.reserve(-6.0, 6.0)
    ego = Track(0.0, ego_line.d + float(np.clip(rng.normal(0, 0.15), -0.4, 0.4)), ego_speed, 0.0, 0.0, 0.0)

    # ---- unknown (OOD) objects first (they reserve their lines), from their own random stream so that
    # the rest of the world stays as it would be without them
    ood_rng = np.random.default_rng(int(rng.integers(2**62)))
    pop.rng = ood_rng
    for label, count in sorted(opts.unknown_objects.items()):
        for _ in range(count):
            _place_unknown(pop, ood_rng, label, travel, scene)
    pop.rng = rng

    # ---- traffic: forward zone with the option counts, background with the same density
    zones = [(FORWARD_ZONE, 1.0, False), ((s_range[0] + 5, FORWARD_ZONE[0]), opts.background_density, True),
             ((FORWARD_ZONE[1], s_range[1] - 10), opts.background_density, True)]
    fwd_len = FORWARD_ZONE[1] - FORWARD_ZONE[0]
    for (lo, hi), density, poisson in zones:
        for label, rng_count in (("Truck", opts.trucks), ("Van", opts.vans), ("Car", opts.cars),
                                 ("Cyclist", opts.cyclists), ("Pedestrian", opts.pedestrians)):
            if poisson:
                n = int(rng.poisson(density * np.mean(rng_count) * (hi - lo) / fwd_len))
            else:
                n = int(rng.integers(rng_count[0], rng_count[1] + 1))
            _populate(pop, rng, label, n, (lo, hi))

    static = _scenery(rng, road, pop, scene, opts)
    sun_el, sun_az = np.deg2rad(rng.uniform(20, 65)), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    return World(road=road, static=static, actors=pop.actors, ego=ego, sun=sun, scene_type=scene,
                 exposure=float(rng.uniform(0.5, 0.9)), sky_tint=rng.uniform(0.9, 1.1, 3))


def _populate(pop: _Populator, rng: np.random.Generator, label: str, n: int, s_range: tuple[float, float]) -> None:
    """Place ``n`` actors of a KITTI class on suitable lines within ``s_range``."""
    placed = 0
    for _ in range(n * 3):
        if placed >= n:
            return
        if label in ("Car", "Van", "Truck"):
            choices = [("lane", 0.45), ("park", 0.45 if label != "Truck" else 0.2),
                       ("lot", 0.2 if label == "Car" else 0)]
            choices = [(k, w) for k, w in choices if w > 0 and pop.lines_of(k)]
            weights = np.array([w for _, w in choices])
            kind = choices[rng.choice(len(choices), p=weights / weights.sum())][0]
            lines = pop.lines_of(kind)
            line = lines[int(rng.integers(len(lines)))]
            mesh = M.ACTOR_BUILDERS[label](rng)
            yaw, d_off = None, 0.0
            if kind == "lane":  # drivers are not perfectly centred
                yaw = line.yaw_offset + float(rng.normal(0, 0.015))
                d_off = float(np.clip(rng.normal(0, 0.2), -0.5, 0.5))
            elif kind == "park":
                yaw = line.yaw_offset + float(rng.normal(0, 0.04))
            elif kind == "lot":
                yaw = line.yaw_offset + float(rng.choice([0.0, np.pi])) + float(rng.normal(0, 0.05))
            gap = float(rng.uniform(0.8, 6.0)) if kind != "lane" else float(rng.uniform(3.0, 15.0))
            ok = pop.place(label, mesh, line, s_range, gap=gap, yaw_offset=yaw, d_offset=d_off) is not None
        elif label == "Cyclist":
            line = pop.lines_of("bike")[int(rng.integers(2))]
            yaw = line.yaw_offset + (np.pi if rng.random() < 0.1 else 0.0)
            vs = line.vs if yaw == line.yaw_offset else -line.vs * 0.7
            if rng.random() < 0.15:  # waiting / standing with the bike
                vs = 0.0
            ok = pop.place(label, M.cyclist_mesh(rng), line, s_range, gap=float(rng.uniform(1.0, 6.0)),
                           yaw_offset=yaw, vs=vs) is not None
        else:  # pedestrians, often in groups
            walks = pop.lines_of("walk")
            park = pop.lines_of("park")
            if park and rng.random() < 0.08:  # standing between parked cars
                line = park[int(rng.integers(len(park)))]
            else:
                line = walks[int(rng.integers(len(walks)))]
            group = min(int(rng.choice([1, 1, 1, 2, 2, 3, 4])), n - placed)
            walking = line.vs != 0.0
            spacing = float(rng.uniform(0.9, 1.4))
            s0 = float(rng.uniform(*s_range))
            lo, hi = pop._sweep(line, s0 + spacing * (group - 1) / 2, spacing * group, 0.4, line.vs)
            ok = line.free(lo, hi)
            if ok:
                line.reserve(lo, hi)
                heading = line.yaw_offset
                if walking:
                    heading = 0.0 if line.vs > 0 else np.pi
                for g in range(group):
                    yaw = heading if walking else float(rng.uniform(-np.pi, np.pi))
                    mesh = M.pedestrian_mesh(rng, stride=None if walking else float(rng.choice([0.0, 0.25])))
                    pop.add_actor("Pedestrian", mesh, Track(s0 + g * spacing, line.d + float(rng.normal(0, 0.08)),
                                                            line.vs, 0.0, yaw, line.z))
                placed += group - 1
        placed += int(ok)


def _place_unknown(pop: _Populator, rng: np.random.Generator, label: str, travel: float, scene: str) -> None:
    """Place one out-of-distribution object in or near the drive's view."""
    road = pop.road
    ahead = (max(12.0, travel + 10.0), max(40.0, travel + 35.0))
    ahead_far = (max(22.0, travel + 15.0), max(42.0, travel + 40.0))  # off-road objects: far enough to be in view
    sg = int(rng.choice([-1, 1]))
    side = road.side(sg)
    terrain = _Line(road.curb(sg) + sg * (side.sidewalk + float(rng.uniform(1.5, 4.0))), CURB_HEIGHT, 0.0, 0.0)
    for _ in range(6):
        if label == "Debris":
            lines = [ln for k, ln in pop.lines.items() if k.startswith(("lane-1", "bike", "park"))]
            line = lines[int(rng.integers(len(lines)))]
            mesh = M.debris_mesh(rng)
            if pop.place(label, mesh, line, ahead, gap=2.0, vs=0.0, yaw_offset=float(rng.uniform(-np.pi, np.pi))):
                return
        elif label == "Animal":
            r = rng.random()
            mesh = M.animal_mesh(rng)
            yaw = float(rng.uniform(-np.pi, np.pi))
            if r < 0.55:
                lines = [ln for k, ln in pop.lines.items() if k.startswith(("lane", "bike", "park", "walk"))]
                line = lines[int(rng.integers(len(lines)))]
                if pop.place(label, mesh, line, ahead, gap=2.0, vs=0.0, yaw_offset=yaw):
                    return
            else:
                s = float(rng.uniform(*ahead_far))
                if pop.building_lines[sg].free(s - 3, s + 3):
                    pop.building_lines[sg].reserve(s - 3, s + 3)
                    pop.add_actor(label, mesh, Track(s, terrain.d, 0.0, 0.0, yaw, CURB_HEIGHT))
                    return
        elif label == "Stroller":
            walks = pop.lines_of("walk")
            line = walks[int(rng.integers(len(walks)))]
            s = float(rng.uniform(*ahead))
            forward = 1.0 if line.vs >= 0 else -1.0
            lo, hi = pop._sweep(line, s - forward * 0.6, 2.6, 0.5, line.vs)
            if line.free(lo, hi):
                line.reserve(lo, hi)
                yaw = 0.0 if forward > 0 else np.pi
                pop.add_actor(label, M.stroller_mesh(rng), Track(s, line.d, line.vs, 0.0, yaw, line.z))
                pop.add_actor("Pedestrian", M.pedestrian_mesh(rng, stride=0.35 if line.vs else 0.0),
                              Track(s - forward * 1.05, line.d, line.vs, 0.0, yaw, line.z))
                return
        elif label == "ConstructionMachine":
            mesh = M.construction_machine_mesh(rng)
            parks = pop.lines_of("park")
            yaw = float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.3))
            if parks and rng.random() < 0.4:
                line = parks[int(rng.integers(len(parks)))]
                if pop.place(label, mesh, line, ahead, gap=1.5, yaw_offset=line.yaw_offset):
                    return
            else:
                s = float(rng.uniform(*ahead_far))
                half = mesh.extent[0] / 2 + 1
                depth = mesh.extent[1] / 2 + 0.5
                d = road.curb(sg) + sg * (side.sidewalk + depth + 0.5)
                if pop.building_lines[sg].free(s - half, s + half):
                    pop.building_lines[sg].reserve(s - half, s + half)
                    pop.add_actor(label, mesh, Track(s, d, 0.0, 0.0, yaw if depth < 2 else 0.0, CURB_HEIGHT))
                    return
    logger.debug("no room for a %s in a %s scene", label, scene)


def _scenery(rng: np.random.Generator, road: Road, pop: _Populator, scene: str, opts: SceneOptions) -> ActorMesh:
    """Ground, buildings, trees, hedges and poles as one world-frame mesh."""
    parts = [road.ground_mesh(rng=rng)]
    s0, s1 = road.s_range

    def put(mesh: ActorMesh, s: float, d: float, yaw_off: float, z: float = CURB_HEIGHT) -> None:
        x, y = road.to_world(s, d)
        parts.append(ActorMesh(mesh.placed(float(road.heading(s)) + yaw_off, (float(x), float(y), z)),
                               mesh.triangles, mesh.material, mesh.albedo, mesh.reflectance))

    for sg in (-1, 1):
        side = road.side(sg)
        outer = road.curb(sg) + sg * side.sidewalk
        bl = pop.building_lines[sg]
        # buildings / vegetation belt
        s = s0
        while s < s1:
            if scene == "city":
                width, gap = float(rng.uniform(10, 28)), float(rng.choice([0.0, 0.0, rng.uniform(2, 8)]))
                setback, height = float(rng.uniform(0.0, 1.5)), float(rng.uniform(8, 24))
                depth = float(rng.uniform(10, 20))
            elif scene == "residential":
                width, gap = float(rng.uniform(8, 15)), float(rng.uniform(4, 12))
                setback, height, depth = float(rng.uniform(3, 10)), float(rng.uniform(5, 9)), float(rng.uniform(8, 12))
            else:
                width, gap = float(rng.uniform(8, 20)), float(rng.uniform(30, 120))
                setback, height, depth = float(rng.uniform(15, 40)), float(rng.uniform(4, 8)), float(rng.uniform(8, 14))
            mid = s + width / 2
            if bl.free(s - 1, s + width + 1):
                bmesh = M.building_mesh(rng, width, depth, height, style=scene)
                put(bmesh, mid, outer + sg * setback, 0.0 if sg > 0 else np.pi, z=CURB_HEIGHT)
                if scene == "residential" and setback > 2.5 and rng.random() < 0.6 * opts.vegetation:
                    put(M.hedge_mesh(rng, width + gap * 0.8), mid + gap * 0.4, outer + sg * 0.6, 0.0)
            s += width + gap
        # trees: street trees on the sidewalk strip, more in the gardens / along country roads
        spacing = {"city": 22.0, "residential": 11.0, "road": 6.0}[scene] / max(opts.vegetation, 1e-3)
        s = s0 + float(rng.uniform(0, spacing))
        while s < s1 and opts.vegetation > 0:
            if scene == "road":
                d = outer + sg * float(rng.uniform(1.0, 25.0))
                put(M.tree_mesh(rng), s, d, 0.0, z=CURB_HEIGHT + 0.1)
            elif rng.random() < 0.7:
                put(M.tree_mesh(rng, height=float(rng.uniform(5, 10)), crown_base=2.6), s,
                    road.curb(sg) + sg * 0.3, 0.0)
            s += spacing * float(rng.uniform(0.6, 1.4))
        # poles: lamps at regular spacing, signs scattered
        s = s0 + float(rng.uniform(0, 30))
        while s < s1:
            kind = "lamp" if rng.random() < 0.6 else str(rng.choice(["sign", "bollard"]))
            put(M.pole_mesh(rng, kind), s + 0.5, road.curb(sg) + sg * 0.35, 0.0 if sg < 0 else np.pi)
            s += float(rng.uniform(18, 40))
    return ActorMesh.merge(parts)
