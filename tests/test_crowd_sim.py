"""Simulated crowd scenes: seeded, head points inside the image, hidden heads not counted, cache round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from perception.crowd.config import CrowdConfig
from perception.crowd.sim_scenes import (
    SimCrowdOptions,
    _Camera,
    _head_of,
    _Person,
    _visible_heads,
    render_crowd_scene,
    simulated_samples,
)
from perception.crowd.train import lr_factor, stage_lr_factor
from perception.errors import ConfigError
from perception.sim.materials import CONCRETE
from perception.sim.meshes import MeshBuilder, pedestrian_mesh

SMALL = SimCrowdOptions(width=160, height=120, people_min=20, people_max=40)


def test_scene_is_seeded_and_its_heads_lie_in_the_image() -> None:
    a = render_crowd_scene(np.random.default_rng(5), SMALL)
    b = render_crowd_scene(np.random.default_rng(5), SMALL)
    assert a.image.shape == (120, 160, 3) and a.image.dtype == np.float32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert np.array_equal(a.image, b.image) and np.array_equal(a.points, b.points)
    assert a.count == len(a.points) > 0
    assert np.all((a.points >= 0) & (a.points < [160, 120]))
    assert a.image.std() > 0.02  # not a flat colour


def _scene_with(parts: list[np.ndarray | tuple]) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    for verts, tris in parts:
        scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(tris.astype(np.uint32)))
    return scene


def test_a_head_behind_a_wall_is_not_counted() -> None:
    rng = np.random.default_rng(0)
    cam = _Camera(np.array([0.0, 0.0, 1.7]), yaw=0.0, pitch=0.0, hfov=np.deg2rad(60), width=160, height=120)
    wall = MeshBuilder().box((6.0, -1.5, 1.5), (0.2, 2.0, 3.0), CONCRETE).build(recentre=False)  # hides y < -0.5
    people, meshes = [], []
    for xy in ((10.0, 1.5), (10.0, -1.5)):  # left one visible, right one behind the wall
        m = pedestrian_mesh(rng, height=1.75)
        head, radius = _head_of(m)
        verts = m.vertices + np.array([xy[0], xy[1], 0.0], np.float32)
        meshes.append((verts, m.triangles))
        people.append(_Person(head + np.array([xy[0], xy[1], 0.0]), radius))
    scene = _scene_with([(wall.vertices, wall.triangles)] + meshes)
    heads = _visible_heads(scene, cam, people, first_geom=1)
    assert len(heads) == 1
    assert heads[0][0] < 80  # the visible person stands on the left (+y) of the image
    no_wall = _scene_with(meshes)
    assert len(_visible_heads(no_wall, cam, people, first_geom=0)) == 2


def test_head_of_finds_the_top_of_a_pedestrian() -> None:
    m = pedestrian_mesh(np.random.default_rng(1), height=1.8)
    head, radius = _head_of(m)
    assert radius == pytest.approx(0.108, abs=0.01)
    assert head[2] == pytest.approx(m.vertices[:, 2].max() - radius, abs=1e-6)
    assert abs(head[0]) < 0.1 and abs(head[1]) < 0.1


def test_cache_round_trip(tmp_path: Path) -> None:
    first = simulated_samples(2, seed=4, opts=SMALL, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("sim_crowd_*.npz"))) == 1
    again = simulated_samples(2, seed=4, opts=SMALL, cache_dir=tmp_path, progress=False)
    for a, b in zip(first, again):
        assert a.image.dtype == np.uint8 and np.array_equal(a.image, b.image)
        assert np.allclose(a.points, b.points) and a.count == b.count


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="width"):
        SimCrowdOptions(width=100).validate()
    with pytest.raises(ConfigError, match="people_min"):
        SimCrowdOptions(people_min=5, people_max=2).validate()


def test_learning_rate_warms_up_and_restarts_for_the_real_stage() -> None:
    cfg = CrowdConfig.from_dict({"sim": {"steps": 100, "lr": 0.001},
                                 "train": {"steps": 200, "lr": 0.002, "warmup_steps": 10}})
    f = [stage_lr_factor(s, cfg) for s in range(301)]
    assert f[0] == pytest.approx(0.5 * lr_factor(0, 100, 10))  # sim stage: sim.lr / train.lr, warming up
    assert max(f[:100]) == pytest.approx(0.5) and f[99] < 0.01
    assert f[100] == pytest.approx(lr_factor(0, 200, 10)) and f[100] < 0.1  # the real stage warms up again
    assert max(f[100:]) == pytest.approx(1.0) and f[300] == pytest.approx(0.0, abs=1e-9)
    assert f[109] < f[110] and all(a >= b for a, b in zip(f[110:], f[111:]))
