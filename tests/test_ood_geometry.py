"""Point-geometry descriptors of detected boxes (perception.ood.geometry)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import DataError
from perception.ood.geometry import GEOMETRY_DIM, box_point_descriptors


def _column(centre_xy: tuple[float, float], height: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of a thin upright column standing on the ground (z = -1.73 in the LiDAR frame)."""
    z = rng.uniform(0.2, height, n) - 1.73
    xy = np.asarray(centre_xy) + rng.normal(0.0, 0.05, (n, 2))
    return np.column_stack([xy, z, np.full(n, 0.4)])


def test_descriptor_describes_the_points_inside_each_box() -> None:
    rng = np.random.default_rng(0)
    person = _column((10.0, 2.0), 1.7, 300, rng)
    clutter = rng.uniform([0, -20, -2], [40, 20, 1], (5000, 3))
    clutter = np.column_stack([clutter, np.full(len(clutter), 0.1)])
    far = np.array([[30.0, -5.0, -1.0, 0.2]])
    nan = np.array([[10.0, 2.0, np.nan, 0.5]])
    points = np.vstack([person, clutter[np.hypot(clutter[:, 0] - 10, clutter[:, 1] - 2) > 2], far, nan])
    # a pedestrian-sized box on the column (centre z: half its height above the ground), one on nothing
    boxes = np.array([[10.0, 2.0, -1.73 + 0.9, 0.8, 0.6, 1.8, 0.3],
                      [20.0, 10.0, -1.73 + 0.9, 0.8, 0.6, 1.8, 0.0]])
    d = box_point_descriptors(points.astype(np.float32), boxes)
    assert d.shape == (2, GEOMETRY_DIM) and d.dtype == np.float32 and np.isfinite(d).all()
    r = np.hypot(10.0, 2.0)
    assert d[0, 0] == pytest.approx(np.log1p(300) + 2 * np.log(r), rel=1e-4)  # every column point, no NaN one
    heights = person[:, 2] + 1.73  # above the box bottom (the ground)
    assert d[0, 1:4] == pytest.approx(np.percentile(heights, [10, 50, 90]) / 1.8, abs=1e-4)
    assert d[0, 4] == pytest.approx(1.7 / 1.8, abs=0.02)  # the top of the column
    assert d[0, 5] < 0.1 and d[0, 6] < 0.15  # a narrow column, not spread along the box
    assert d[0, 9] == pytest.approx(0.4)
    assert d[1, 0] == pytest.approx(2 * np.log(np.hypot(20.0, 10.0)), abs=1.5)  # a few clutter points at most


def test_descriptor_handles_no_boxes_no_points_and_rejects_bad_shapes() -> None:
    assert box_point_descriptors(np.zeros((10, 4)), np.zeros((0, 7))).shape == (0, GEOMETRY_DIM)
    d = box_point_descriptors(np.zeros((0, 4)), np.array([[5.0, 0, 0, 4, 2, 1.5, 0]]))
    assert d[0, 0] == pytest.approx(2 * np.log(5.0)) and not d[0, 1:].any()
    with pytest.raises(DataError, match="points"):
        box_point_descriptors(np.zeros((10, 3)), np.zeros((1, 7)))
