"""Object-level augmentation: points move with their box, drops touch only object points, neighbours don't turn."""

import numpy as np

from perception.detector.object_augment import object_augment
from perception.frame import points_in_boxes


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([[10.0, 0.0, -0.9, 4.0, 1.8, 1.5, 0.0], [30.0, 5.0, -0.9, 4.0, 1.8, 1.5, 1.0]], np.float32)
    obj = []
    for b in boxes:
        local = rng.uniform(-0.5, 0.5, (300, 3)) * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        obj.append(b[:3] + np.c_[c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]])
    ground = np.c_[rng.uniform(0, 60, (500, 2)) + [0, -30], np.full(500, -2.0)]
    pts = np.concatenate([*obj, ground]).astype(np.float32)
    return np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32), boxes


def test_rotation_carries_the_points_with_the_box() -> None:
    rng = np.random.default_rng(0)
    pts, boxes = _scene(rng)
    new_pts, new_boxes = object_augment(pts, boxes, np.random.default_rng(1), rotation=0.8, point_drop=0.0)
    assert len(new_pts) == len(pts)
    assert not np.allclose(new_boxes[:, 6], boxes[:, 6])  # both boxes turned
    assert np.allclose(new_boxes[:, :6], boxes[:, :6])
    inside = points_in_boxes(new_pts, new_boxes)
    assert inside.sum(axis=1).min() == 300  # every object point is inside its rotated box
    assert np.allclose(new_pts[600:], pts[600:])  # the ground did not move


def test_point_drop_removes_only_object_points() -> None:
    rng = np.random.default_rng(0)
    pts, boxes = _scene(rng)
    dropped = 0
    for seed in range(6):
        new_pts, new_boxes = object_augment(pts, boxes, np.random.default_rng(seed), rotation=0.0, point_drop=0.9)
        assert np.allclose(new_boxes, boxes)
        ground_left = (~points_in_boxes(new_pts, boxes).any(axis=0)).sum()
        assert ground_left == 500
        dropped += len(pts) - len(new_pts)
    assert dropped > 0


def test_overlapping_neighbours_are_not_rotated() -> None:
    rng = np.random.default_rng(0)
    pts, boxes = _scene(rng)
    boxes[1, :2] = [12.5, 0.0]  # parked right behind the first car
    _, new_boxes = object_augment(pts, boxes, np.random.default_rng(2), rotation=0.8, point_drop=0.0)
    assert np.allclose(new_boxes[:, 6], boxes[:, 6])
