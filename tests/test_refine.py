"""Geometric box refinement (perception.detector.refine): heading, footprint and ground height from a box's points."""

from __future__ import annotations

import numpy as np
import pytest

from perception.detector.config import DetectorConfig
from perception.detector.refine import PillarIndex, RefineConfig, refine_box, refine_detections
from perception.detector.voxelize import voxelize
from perception.frame import Box3D, Detection
from perception.io import open_frames

GROUND_Z = -1.73


def _car_scan(centre: tuple[float, float], yaw: float, size=(4.0, 1.7, 1.5), step: float = 0.05) -> np.ndarray:
    """Points a sensor at the origin sees of a box car (its two faces toward the sensor) on flat ground around it."""
    l, w, h = size
    c, s = np.cos(yaw), np.sin(yaw)
    faces = []
    for a in np.arange(-l / 2, l / 2, step):
        faces.append((a, -w / 2 if np.dot([-s, c], centre) > 0 else w / 2))  # the long side facing the sensor
    for b in np.arange(-w / 2, w / 2, step):
        faces.append((-l / 2 if np.dot([c, s], centre) > 0 else l / 2, b))  # the short side facing the sensor
    uv = np.array(faces)
    xy = np.asarray(centre) + uv @ np.array([[c, s], [-s, c]])
    z = np.linspace(GROUND_Z + 0.3, GROUND_Z + h, 5)
    body = np.array([[x, y, zz] for x, y in xy for zz in z])
    g = np.mgrid[-6:6:0.25, -6:6:0.25].reshape(2, -1).T + centre
    rel = (g - centre) @ np.array([[c, -s], [s, c]])
    ground = g[(np.abs(rel[:, 0]) > l / 2 + 0.1) | (np.abs(rel[:, 1]) > w / 2 + 0.1)]
    ground = np.c_[ground, np.full(len(ground), GROUND_Z)]
    return np.vstack([body, ground])


def test_refine_box_recovers_heading_ground_height_and_footprint():
    truth_yaw, centre = 0.3, (15.0, 4.0)
    points = _car_scan(centre, truth_yaw)
    network = Box3D("Car", [15.3, 4.2, GROUND_Z + 0.75 - 0.25], [4.0, 1.7, 1.5], 0.05)  # off in x, y, z and yaw
    refined = refine_box(points, network)
    assert refined is not None and refined.label == "Car"
    assert abs(refined.yaw - truth_yaw) < np.deg2rad(1.5)
    assert abs(refined.center[2] - (GROUND_Z + 0.75)) < 0.03
    assert np.hypot(*(refined.center[:2] - centre)) < 0.1 < np.hypot(*(network.center[:2] - centre))
    np.testing.assert_allclose(refined.size, network.size)  # the network's size is kept


def test_too_few_points_or_other_classes_keep_the_network_box():
    points = _car_scan((15.0, 4.0), 0.3)
    box = Box3D("Car", [15.0, 4.0, -1.0], [4.0, 1.7, 1.5], 0.3)
    assert refine_box(points[points[:, 2] <= GROUND_Z + 0.01], box) is None  # ground only: nothing to fit
    assert refine_box(np.zeros((0, 3)), box) is None
    cfg = DetectorConfig().model
    pillars = voxelize(np.c_[points, np.zeros(len(points))].astype(np.float32), cfg)
    ped = Detection(Box3D("Pedestrian", [15.0, 4.0, -1.0], [0.8, 0.6, 1.7], 0.0), 0.9, 0.9, np.eye(7))
    assert refine_detections([ped], PillarIndex(pillars, cfg)) == 0 and ped.box.yaw == 0.0
    car = Detection(Box3D("Car", [15.2, 4.1, -1.2], [4.0, 1.7, 1.5], 0.1), 0.9, 0.9, np.eye(7))
    assert refine_detections([car], PillarIndex(pillars, cfg), RefineConfig()) == 1
    assert abs(car.box.yaw - 0.3) < np.deg2rad(2)


def test_pillar_index_returns_the_points_of_the_window(kitti_root):
    frame = next(iter(open_frames(kitti_root)))
    cfg = DetectorConfig().model
    pillars = voxelize(frame.points, cfg)
    index = PillarIndex(pillars, cfg)
    near = index.near(20.0, 0.0, 3.0)
    assert len(near) > 100
    assert np.all(np.abs(near[:, 0] - 20.0) <= 3.0 + cfg.pillar_size[0])
    assert np.all(np.abs(near[:, 1]) <= 3.0 + cfg.pillar_size[1])
    # every point the pillars hold in the window's inner part is returned
    p = pillars.features[:, :, :3][np.arange(pillars.features.shape[1])[None] < pillars.num_points[:, None]]
    inner = p[(np.abs(p[:, 0] - 20.0) < 2.5) & (np.abs(p[:, 1]) < 2.5)]
    assert len(inner) == int(((np.abs(near[:, 0] - 20.0) < 2.5) & (np.abs(near[:, 1]) < 2.5)).sum())
    assert len(index.near(500.0, 0.0, 3.0)) == 0  # outside the grid


@pytest.mark.parametrize("yaw", [-1.2, 0.0, 0.7, 2.5])
def test_refined_heading_stays_within_the_search_of_the_network(yaw):
    points = _car_scan((12.0, -5.0), yaw)
    box = Box3D("Car", [12.0, -5.0, -1.0], [4.0, 1.7, 1.5], yaw + 0.2)
    refined = refine_box(points, box)
    turn = (refined.yaw - box.yaw + np.pi) % (2 * np.pi) - np.pi
    assert abs(turn) <= np.deg2rad(RefineConfig().max_turn_deg) + 1e-6
    assert abs(((refined.yaw - yaw) + np.pi / 2) % np.pi - np.pi / 2) < np.deg2rad(1.5)
