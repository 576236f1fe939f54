"""The simulated world: determinism, shapes, labels consistent with the sensors, options and faults."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.frame import DETECTION_CLASSES, KNOWN_CLASSES, OOD_CLASSES, boxes_to_array, points_in_boxes
from perception.rig import Rig
from perception.sim import (
    ACTOR_BUILDERS,
    SPLIT_SEEDS,
    SceneOptions,
    drive_seed,
    iter_split,
    pedestrian_mesh,
    simulate_drive,
)

SMALL_LIDAR = {"channels": 32, "horizontal_resolution_deg": 0.4}


@pytest.fixture(scope="module")
def small_rig(sim_rig: Rig) -> Rig:
    """The default rig with a 400x120 camera and a 32-beam LiDAR (fast to render)."""
    doc = sim_rig.to_dict()
    scale = 400 / sim_rig.width
    k = np.array(doc["camera"]["K"]) * scale
    k[2, 2] = 1.0
    doc["camera"].update(width=400, height=int(round(sim_rig.height * scale)), K=k.tolist())
    doc["lidar"]["model"] = {**doc["lidar"].get("model", {}), **SMALL_LIDAR}
    return Rig.from_dict(doc, source="small_rig")


def _frames(rig: Rig, n: int = 2, seed: int = 3, **kw) -> list:
    return list(simulate_drive(rig, n, seed, SceneOptions(**kw) if kw else None))


def test_drive_is_deterministic_and_seed_dependent(small_rig: Rig) -> None:
    a, b, c = _frames(small_rig), _frames(small_rig), _frames(small_rig, seed=4)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.points, fb.points)
        assert np.array_equal(fa.image, fb.image)
        assert np.array_equal(boxes_to_array(fa.boxes), boxes_to_array(fb.boxes))
        assert [x.num_points for x in fa.boxes] == [x.num_points for x in fb.boxes]
    assert not np.array_equal(a[0].points[:100], c[0].points[:100]) or len(a[0].points) != len(c[0].points)


def test_frame_shapes_stamps_and_labels(small_rig: Rig) -> None:
    frames = _frames(small_rig, n=3)
    for i, f in enumerate(frames):
        assert f.points.dtype == np.float32 and f.points.ndim == 2 and f.points.shape[1] == 4
        assert len(f.points) > 5000 and np.isfinite(f.points).all()
        assert f.points[:, 3].min() >= 0 and f.points[:, 3].max() <= 1
        assert f.image.dtype == np.uint8 and f.image.shape == (small_rig.height, small_rig.width, 3)
        assert f.rig is small_rig
        assert f.stamp_ns == frames[0].stamp_ns + i * 100_000_000
        assert len(f.boxes) >= 3, "every frame should have several labelled objects"
        for box in f.boxes:
            assert box.label in KNOWN_CLASSES
            assert np.all(box.size > 0.1) and -np.pi <= box.yaw < np.pi
            assert np.hypot(*box.center[:2]) <= 80.0
            assert box.occlusion in (0, 1, 2, 3) and 0.0 <= box.truncation <= 1.0
            assert box.bbox2d is not None and box.velocity is not None and box.track_id >= 0
    # track ids persist across frames and moving objects move consistently with their velocity
    by_id = [{b.track_id: b for b in f.boxes} for f in frames]
    common = set(by_id[0]) & set(by_id[1])
    assert common
    ego_speed = frames[0].meta["ego_speed"]
    for tid in common:
        b0, b1 = by_id[0][tid], by_id[1][tid]
        assert b0.label == b1.label
        # relative motion in the LiDAR frame: own velocity minus ego velocity (straight-ish roads)
        predicted = b0.center[:2] + 0.1 * (b0.velocity - np.array([ego_speed, 0.0]))
        assert np.linalg.norm(predicted - b1.center[:2]) < 0.25 + 0.02 * np.hypot(*b0.center[:2])


def test_num_points_match_points_in_boxes(small_rig: Rig) -> None:
    f = _frames(small_rig, n=1)[0]
    counts = points_in_boxes(f.points, boxes_to_array(f.boxes)).sum(1)
    assert [b.num_points for b in f.boxes] == counts.tolist()
    near = [b for b in f.boxes if b.occlusion == 0 and np.hypot(*b.center[:2]) < 25]
    assert near and all(b.num_points > 0 for b in near)


def test_objects_project_into_the_image(small_rig: Rig) -> None:
    f = _frames(small_rig, n=1, seed=5)[0]
    checked = 0
    for box in f.boxes:
        l, t, r, b = box.bbox2d
        assert 0 <= l < r <= small_rig.width and 0 <= t < b <= small_rig.height
        if box.truncation == 0.0:
            uv, depth, visible = small_rig.project(box.center[None])
            assert visible[0] and l - 1 <= uv[0, 0] <= r + 1 and t - 1 <= uv[0, 1] <= b + 1
            checked += 1
    assert checked >= 2


def test_scene_contents_resemble_kitti(small_rig: Rig) -> None:
    frames = [next(simulate_drive(small_rig, 1, seed)) for seed in range(6)]
    labels = [b.label for f in frames for b in f.boxes]
    assert set(labels) <= set(KNOWN_CLASSES)
    assert labels.count("Car") / len(frames) >= 3
    assert labels.count("Pedestrian") / len(frames) >= 1
    assert "Cyclist" in labels
    sizes = np.array([b.size for f in frames for b in f.boxes if b.label == "Car"])
    assert np.allclose(sizes.mean(0), [3.9, 1.6, 1.5], atol=[0.35, 0.12, 0.12])


def test_weather_reduces_and_perturbs_points(small_rig: Rig) -> None:
    clear = _frames(small_rig, n=1)[0]
    fog = _frames(small_rig, n=1, weather="fog", weather_intensity=1.0)[0]
    snow = _frames(small_rig, n=1, weather="snow", weather_intensity=1.0)[0]
    rng_of = [np.linalg.norm(f.points[:, :3], axis=1) for f in (clear, fog, snow)]
    far = [np.sum(r > 30) for r in rng_of]
    assert far[1] < 0.5 * far[0] and far[2] < far[0]
    near = [np.sum(r < 3) for r in rng_of]
    assert near[1] > near[0] and near[2] > near[0]  # spurious returns from droplets / flakes
    assert fog.image.std() < 0.7 * clear.image.std()  # contrast loss
    assert np.array_equal(boxes_to_array(clear.boxes), boxes_to_array(fog.boxes))  # same world


def test_night_darkens_the_image_only(small_rig: Rig) -> None:
    day, night = _frames(small_rig, n=1)[0], _frames(small_rig, n=1, night=True)[0]
    assert night.image.mean() < 0.5 * day.image.mean()
    assert np.array_equal(day.points, night.points)


def test_unknown_objects_appear_with_their_labels(small_rig: Rig) -> None:
    counts = dict.fromkeys(OOD_CLASSES, 1)
    frames = _frames(small_rig, n=1, seed=11, unknown_objects=counts)
    labels = {b.label for b in frames[0].boxes}
    assert set(OOD_CLASSES) <= labels
    assert not set(OOD_CLASSES) & set(DETECTION_CLASSES)


def test_beam_override_and_sensor_faults(small_rig: Rig) -> None:
    base = _frames(small_rig, n=1)[0]
    sparse = _frames(small_rig, n=1, lidar_model={"channels": 8})[0]
    assert len(sparse.points) < 0.4 * len(base.points)
    elev = np.round(np.degrees(np.arctan2(sparse.points[:, 2], np.hypot(*sparse.points[:, :2].T))), 1)
    assert len(np.unique(elev)) < 40  # a few rings (ranges are noisy, so elevations scatter slightly)
    faulty = _frames(small_rig, n=1, camera_missing=True, lidar_blackout_deg=(-30.0, 60.0))[0]
    assert faulty.image is None and not faulty.has_camera
    az = np.degrees(np.arctan2(faulty.points[:, 1], faulty.points[:, 0]))
    assert not np.any((az > -29.5) & (az < 59.5))
    assert np.any((az > 65) | (az < -35))
    assert np.array_equal(boxes_to_array(base.boxes), boxes_to_array(faulty.boxes))


@pytest.mark.parametrize("kw", [
    {"weather": "hail"}, {"weather_intensity": 1.5}, {"unknown_objects": {"Unicorn": 1}}, {"cars": (5, 2)},
    {"lidar_model": {"bogus": 1}}, {"lidar_blackout_deg": (0.0,)}, {"ego_speed": (5.0, 1.0)},
])
def test_bad_options_raise_config_error(kw: dict) -> None:
    with pytest.raises(ConfigError, match="SceneOptions"):
        SceneOptions(**kw)


def test_bad_beam_pattern_and_arguments_raise(small_rig: Rig) -> None:
    with pytest.raises(ConfigError, match="channels"):
        next(simulate_drive(small_rig, 1, 0, SceneOptions(lidar_model={"channels": 0})))
    with pytest.raises(ConfigError, match="n_frames"):
        next(simulate_drive(small_rig, 0, 0))
    with pytest.raises(ConfigError, match="split"):
        next(iter_split(small_rig, "nope", 2))


def test_iter_split_is_ordered_reproducible_and_parallel_safe(small_rig: Rig) -> None:
    serial = list(iter_split(small_rig, "val", 3, seed=1, frames_per_drive=2, workers=1))
    assert [f.frame_id for f in serial] == ["val_s1_d000_f00", "val_s1_d000_f01", "val_s1_d001_f00"]
    assert all(np.diff([f.stamp_ns for f in serial]) > 0)
    parallel = list(iter_split(small_rig, "val", 3, seed=1, frames_per_drive=2, workers=2))
    for a, b in zip(serial, parallel, strict=True):
        assert a.frame_id == b.frame_id and np.array_equal(a.points, b.points) and np.array_equal(a.image, b.image)
        assert b.rig is not None


def test_split_seeds_are_disjoint() -> None:
    assert {"train", "val", "calib", "test", "ood"} <= set(SPLIT_SEEDS)
    seeds = {drive_seed(split, s, d) for split in SPLIT_SEEDS for s in range(3) for d in range(50)}
    assert len(seeds) == len(SPLIT_SEEDS) * 3 * 50


def test_mesh_builders_fit_their_boxes() -> None:
    rng = np.random.default_rng(0)
    for name, build in ACTOR_BUILDERS.items():
        mesh = build(rng)
        lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
        assert len(mesh.triangles) > 10 and mesh.triangles.max() < len(mesh.vertices), name
        assert np.allclose([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], 0.0, atol=1e-4), name
        assert len(mesh.material) == len(mesh.albedo) == len(mesh.reflectance) == len(mesh.triangles)
    heights = [pedestrian_mesh(rng, height=1.6).extent[2] for _ in range(5)]
    assert np.allclose(heights, 1.6, atol=0.02)


def test_lidar_statistics_resemble_the_real_kitti_sample(kitti_root, sim_rig: Rig) -> None:
    real = [np.fromfile(p, dtype=np.float32).reshape(-1, 4) for p in sorted((kitti_root / "training" / "velodyne")
                                                                           .glob("*.bin"))]
    doc = sim_rig.to_dict()
    doc["camera"].update(width=200, height=60, K=[[114.0, 0, 100.0], [0, 114.0, 29.0], [0, 0, 1]])
    rig = Rig.from_dict(doc, source="hdl64_small_camera")  # full HDL-64E-like LiDAR, tiny camera
    sim = [next(simulate_drive(rig, 1, seed)).points for seed in (21, 22)]
    n_real, n_sim = np.mean([len(p) for p in real]), np.mean([len(p) for p in sim])
    assert abs(n_sim / n_real - 1) < 0.2
    i_real, i_sim = np.concatenate(real)[:, 3].mean(), np.concatenate(sim)[:, 3].mean()
    assert abs(i_sim - i_real) < 0.06
    r_real = np.median(np.linalg.norm(np.concatenate(real)[:, :3], axis=1))
    r_sim = np.median(np.linalg.norm(np.concatenate(sim)[:, :3], axis=1))
    assert abs(r_sim - r_real) < 3.0
