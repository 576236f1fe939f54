"""Rotated IoU against hand-computed overlaps and an independent scalar Sutherland-Hodgman clipper."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import DataError
from perception.eval.iou import bev_distance, bev_iou, iou_3d
from perception.frame import box_corners


def _box(x=0.0, y=0.0, z=0.0, l=1.0, w=1.0, h=1.0, yaw=0.0) -> np.ndarray:
    return np.array([[x, y, z, l, w, h, yaw]], dtype=np.float64)


def _random_boxes(rng: np.random.Generator, n: int, spread: float = 1.5) -> np.ndarray:
    return np.column_stack([
        rng.normal(0.0, spread, (n, 2)), rng.normal(0.0, 0.3, n),
        rng.uniform(0.2, 5.0, (n, 3)), rng.uniform(-4.0, 4.0, n),
    ])


def _clip(subject: list[np.ndarray], clipper: list[np.ndarray]) -> list[np.ndarray]:
    """Reference Sutherland-Hodgman: clip a polygon by a counter-clockwise convex polygon, one pair at a time."""
    out = list(subject)
    for i in range(len(clipper)):
        c0, c1 = clipper[i], clipper[(i + 1) % len(clipper)]
        inp, out = out, []
        for j in range(len(inp)):
            cur, prv = inp[j], inp[j - 1]
            sc = (c1[0] - c0[0]) * (cur[1] - c0[1]) - (c1[1] - c0[1]) * (cur[0] - c0[0])
            sp = (c1[0] - c0[0]) * (prv[1] - c0[1]) - (c1[1] - c0[1]) * (prv[0] - c0[0])
            if (sc >= 0) != (sp >= 0):
                out.append(prv + sp / (sp - sc) * (cur - prv))
            if sc >= 0:
                out.append(cur)
    return out


def _reference_bev_iou(a: np.ndarray, b: np.ndarray) -> float:
    poly = _clip(list(box_corners(a[None])[0, :4, :2]), list(box_corners(b[None])[0, :4, :2]))
    if len(poly) < 3:
        return 0.0
    p = np.array(poly)
    inter = 0.5 * abs(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - p[:, 1] * np.roll(p[:, 0], -1)))
    return inter / (a[3] * a[4] + b[3] * b[4] - inter)


def test_identical_boxes_have_iou_one():
    boxes = _random_boxes(np.random.default_rng(0), 10)
    np.testing.assert_allclose(np.diag(bev_iou(boxes, boxes)), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(iou_3d(boxes, boxes)), 1.0, atol=1e-12)


def test_disjoint_and_touching_boxes_have_iou_zero():
    assert bev_iou(_box(), _box(x=3.0))[0, 0] == 0.0
    assert bev_iou(_box(), _box(x=1.0))[0, 0] == pytest.approx(0.0, abs=1e-12)  # shared edge only
    assert bev_iou(_box(), _box(x=1.0, y=1.0))[0, 0] == pytest.approx(0.0, abs=1e-12)  # shared corner
    assert iou_3d(_box(), _box(z=1.5))[0, 0] == 0.0  # same footprint, stacked apart


def test_unit_squares_shifted_by_half_give_one_third():
    # intersection 0.5, union 1 + 1 - 0.5 = 1.5
    assert bev_iou(_box(), _box(x=0.5))[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    assert bev_iou(_box(), _box(y=-0.5, yaw=np.pi / 2))[0, 0] == pytest.approx(1 / 3, abs=1e-12)


def test_square_rotated_45_degrees_over_itself_is_an_octagon():
    # Each corner of the square pokes out of the rotated one by a right isosceles triangle of
    # height sqrt(2)/2 - 1/2, area h^2; intersection = 1 - 4 h^2 = 2 (sqrt 2 - 1).
    h = np.sqrt(2) / 2 - 0.5
    octagon = 1.0 - 4 * h * h
    assert octagon == pytest.approx(2 * (np.sqrt(2) - 1))
    expected = octagon / (2.0 - octagon)
    assert bev_iou(_box(), _box(yaw=np.pi / 4))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_rotated_square_fully_inside_a_larger_one():
    # 1x1 square at 45 degrees (diagonal 1.41) lies inside a 2x2 square: IoU = 1 / 4
    assert bev_iou(_box(l=2, w=2), _box(yaw=np.pi / 4))[0, 0] == pytest.approx(0.25, abs=1e-12)
    assert bev_iou(_box(yaw=np.pi / 4), _box(l=2, w=2))[0, 0] == pytest.approx(0.25, abs=1e-12)


def test_rectangle_crossing_itself_at_right_angles():
    # 4x2 and the same turned 90 degrees: a 2x2 overlap, union 8 + 8 - 4
    assert bev_iou(_box(l=4, w=2), _box(l=4, w=2, yaw=np.pi / 2))[0, 0] == pytest.approx(4 / 12, abs=1e-12)


def test_3d_with_half_z_overlap():
    # same footprint, height 2, shifted 1 up: intersection 1, union 2 + 2 - 1
    assert iou_3d(_box(h=2), _box(z=1.0, h=2))[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    # also shifted half a metre in x: intersection 0.5 * 1 = 0.5, union 2 + 2 - 0.5
    assert iou_3d(_box(h=2), _box(x=0.5, z=1.0, h=2))[0, 0] == pytest.approx(0.5 / 3.5, abs=1e-12)
    # BEV ignores z
    assert bev_iou(_box(h=2), _box(z=1.0, h=2))[0, 0] == pytest.approx(1.0)


def test_symmetry_and_yaw_pi_invariance():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 12), _random_boxes(rng, 9)
    np.testing.assert_allclose(bev_iou(a, b), bev_iou(b, a).T, atol=1e-12)
    np.testing.assert_allclose(iou_3d(a, b), iou_3d(b, a).T, atol=1e-12)
    flipped = b.copy()
    flipped[:, 6] += np.where(rng.random(len(b)) < 0.5, np.pi, -np.pi)
    np.testing.assert_allclose(bev_iou(a, flipped), bev_iou(a, b), atol=1e-12)
    np.testing.assert_allclose(iou_3d(a, flipped), iou_3d(a, b), atol=1e-12)
    assert (bev_iou(a, b) > 0).sum() > 10  # the sample has real overlaps


def test_matches_reference_clipper_on_random_and_degenerate_boxes():
    rng = np.random.default_rng(2)
    a = _random_boxes(rng, 40)
    # degenerate cases: axis-aligned, on a half-metre grid (collinear edges, corners on edges)
    snap = rng.random(40) < 0.4
    a[snap, 6] = rng.integers(-4, 5, snap.sum()) * np.pi / 2
    a[snap, :2] = np.round(a[snap, :2] * 2) / 2
    a[snap, 3:5] = np.round(a[snap, 3:5] * 2) / 2 + 0.5
    b = a[::-1].copy()
    expected = np.array([[_reference_bev_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(bev_iou(a, b), expected, atol=1e-10)


def test_3d_equals_bev_when_heights_coincide():
    rng = np.random.default_rng(3)
    a, b = _random_boxes(rng, 6), _random_boxes(rng, 7)
    b[:, 5] = 1.0
    a[:, 5] = 1.0
    a[:, 2] = b[:, 2] = 0.0
    np.testing.assert_allclose(iou_3d(a, b), bev_iou(a, b), atol=1e-12)


def test_far_apart_boxes_at_large_coordinates():
    a = _box(x=80.0, y=-35.0, l=4.2, w=1.8, yaw=0.3)
    assert bev_iou(a, a)[0, 0] == pytest.approx(1.0, abs=1e-9)
    assert bev_iou(a, _box(x=80.0 + 2.1, y=-35.0, l=4.2, w=1.8, yaw=0.3))[0, 0] < 1.0


def test_shapes_and_validation():
    a = _random_boxes(np.random.default_rng(4), 3)
    assert bev_iou(a, np.zeros((0, 7))).shape == (3, 0)
    assert iou_3d([], a).shape == (0, 3)
    assert bev_distance(a, a).shape == (3, 3)
    with pytest.raises(DataError):
        bev_iou(np.zeros((3, 6)), a)
    with pytest.raises(DataError):
        iou_3d(a, np.zeros(7))


def test_zero_size_box_has_iou_zero():
    assert bev_iou(_box(l=0.0), _box(l=0.0))[0, 0] == 0.0
    assert iou_3d(_box(h=0.0), _box())[0, 0] == 0.0


def test_bev_distance_is_planar_centre_distance():
    d = bev_distance(np.vstack([_box(), _box(x=1.0)]), _box(x=3.0, y=4.0, z=10.0))
    np.testing.assert_allclose(d[:, 0], [5.0, np.hypot(2.0, 4.0)])
