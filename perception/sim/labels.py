"""Ground truth for a simulated frame: KITTI-style boxes with points, occlusion, truncation, 2D box, velocity."""

from __future__ import annotations

import numpy as np

from perception.frame import Box3D, boxes_to_array, points_in_boxes
from perception.rig import Rig, invert_transform, transform_points
from perception.sim.camera import CameraImage, CameraModel
from perception.sim.raycast import FrameScene, rotate
from perception.sim.world import World

MAX_LABEL_RANGE = 80.0  # metres (horizontal distance from the LiDAR), like KITTI
VISIBLE_SHARE_LEVELS = (0.8, 0.4)  # visible share >= 0.8 -> occlusion 0, >= 0.4 -> 1, else 2
OCCLUSION_RAYS_PER_OBJECT = 1500  # pixel rays sampled per object to measure its unoccluded silhouette


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def ground_truth(world: World, fs: FrameScene, rig: Rig, cam: CameraModel, world_from_lidar: np.ndarray,
                 image: CameraImage, points: np.ndarray) -> tuple[list[Box3D], list[float]]:
    """Boxes (LiDAR frame) of the actors in the camera's field of view within 80 m, and their visible shares."""
    lidar_from_world = invert_transform(world_from_lidar)
    rot_lw = lidar_from_world[:3, :3]
    t = fs.t
    boxes: list[Box3D] = []
    actor_ids: list[int] = []
    clipped: list[tuple[int, int, int, int]] = []
    for i, actor in enumerate(world.actors):
        pos, yaw = actor.track.pose(world.road, t)
        c, s = np.cos(yaw), np.sin(yaw)
        off = actor.box_centre
        centre_w = pos + np.array([c * off[0] - s * off[1], s * off[0] + c * off[1], off[2]])
        centre = transform_points(lidar_from_world, centre_w[None])[0]
        if np.hypot(centre[0], centre[1]) > MAX_LABEL_RANGE:
            continue
        verts = transform_points(lidar_from_world, fs.actor_vertices[i])
        uv, depth, _ = rig.project(verts)
        front = depth > 0.1
        if not front.any():
            continue
        lo, hi = uv[front].min(0), uv[front].max(0)
        cl = np.clip(lo, 0, [rig.width, rig.height]), np.clip(hi, 0, [rig.width, rig.height])
        area_full = max((hi[0] - lo[0]) * (hi[1] - lo[1]), 1e-6)
        area_clip = (cl[1][0] - cl[0][0]) * (cl[1][1] - cl[0][1])
        if area_clip <= 0:
            continue
        truncation = max(1.0 - area_clip / area_full, 1.0 - front.mean())
        heading = rot_lw @ np.array([c, s, 0.0])
        vel = rot_lw[:2, :2] @ actor.track.velocity(world.road, t)
        boxes.append(Box3D(label=actor.label, center=centre, size=actor.box_size.copy(),
                           yaw=_wrap(np.arctan2(heading[1], heading[0])), truncation=float(np.clip(truncation, 0, 1)),
                           track_id=actor.track_id, bbox2d=np.array([cl[0][0], cl[0][1], cl[1][0], cl[1][1]]),
                           velocity=vel))
        actor_ids.append(i)
        clipped.append((int(cl[0][0]), int(cl[0][1]), int(np.ceil(cl[1][0])), int(np.ceil(cl[1][1]))))
    shares = _visible_shares(fs, cam, world_from_lidar, image, actor_ids, clipped)
    for box, share in zip(boxes, shares):
        if share is None:
            box.occlusion = 3
        else:
            box.occlusion = 0 if share >= VISIBLE_SHARE_LEVELS[0] else 1 if share >= VISIBLE_SHARE_LEVELS[1] else 2
    for box, k in zip(boxes, count_points(points, boxes_to_array(boxes))):
        box.num_points = int(k)
    return boxes, [-1.0 if s is None else float(s) for s in shares]


def count_points(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Points inside each (N, 7) box; equals ``points_in_boxes(points, boxes).sum(1)`` but crops first (fast)."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    if len(boxes) == 0 or len(points) == 0:
        return counts
    order = np.argsort(points[:, 0], kind="stable")
    xs = points[order, 0]
    for k, box in enumerate(boxes):
        r = 0.5 * float(np.linalg.norm(box[3:6])) + 1e-3
        lo, hi = np.searchsorted(xs, [box[0] - r, box[0] + r])
        cand = points[order[lo:hi]]
        cand = cand[np.abs(cand[:, 1] - box[1]) <= r]
        counts[k] = int(points_in_boxes(cand, box[None]).sum())
    return counts


def _visible_shares(fs: FrameScene, cam: CameraModel, world_from_lidar: np.ndarray, image: CameraImage,
                    actor_ids: list[int], rects: list[tuple[int, int, int, int]]) -> list[float | None]:
    """Share of each actor's silhouette pixels where it is the first surface hit (None: no pixel sampled)."""
    if not actor_ids:
        return []
    width = cam.width
    pix, owner = [], []
    for k, (u0, v0, u1, v1) in enumerate(rects):
        area = max((u1 - u0) * (v1 - v0), 1)
        step = max(1, int(np.ceil(np.sqrt(area / OCCLUSION_RAYS_PER_OBJECT))))
        vv, uu = np.meshgrid(np.arange(v0, v1, step), np.arange(u0, u1, step), indexing="ij")
        p = (vv * width + uu).ravel()
        pix.append(p)
        owner.append(np.full(len(p), k))
    pix_a, owner_a = np.concatenate(pix), np.concatenate(owner)
    rot, trans = world_from_lidar[:3, :3], world_from_lidar[:3, 3]
    dirs = rotate(cam.dirs[pix_a], rot)
    actor_of_ray = np.asarray(actor_ids)[owner_a]
    covered = fs.actor_coverage(rot @ cam.origin + trans, dirs, actor_of_ray)
    visible = image.geom.ravel()[pix_a] == actor_of_ray + 1
    total = np.bincount(owner_a[covered], minlength=len(actor_ids))
    seen = np.bincount(owner_a[covered & visible], minlength=len(actor_ids))
    return [None if total[k] == 0 else float(seen[k] / total[k]) for k in range(len(actor_ids))]
