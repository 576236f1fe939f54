"""The corruption suite on real KITTI frames and simulated frames: determinism, severity order, errors."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.robustness import CORRUPTIONS, SEVERITIES, NotApplicable, corrupt
from perception.robustness.lidar import beam_index, reduce_beams
from perception.trust.health import frame_checks, frame_flagged, image_metrics


@pytest.fixture(scope="module")
def kitti_frames(kitti_root):
    from perception.io import KittiDataset

    ds = KittiDataset(kitti_root)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def sim_frames(sim_rig):
    from perception.sim import simulate_drive

    return list(simulate_drive(sim_rig, n_frames=4, seed=3))


def _signature(frame) -> tuple:
    img = None if frame.image is None else frame.image.tobytes()
    return (frame.points.tobytes(), img, None if frame.rig is None else frame.rig.lidar_to_camera.tobytes(),
            frame.image_stamp_ns)


@pytest.mark.parametrize("source", ["kitti", "sim"])
def test_every_corruption_is_deterministic_changes_the_frame_and_leaves_the_input(source, request):
    frames = request.getfixturevalue(f"{source}_frames")
    frame, history = frames[-1], frames[:-1] if source == "sim" else []
    before = _signature(frame)
    for name in CORRUPTIONS:
        for sev in SEVERITIES:
            if name == "temporal_misalignment" and source == "kitti":
                with pytest.raises(NotApplicable, match="earlier frame"):
                    corrupt(frame, name, sev, history=history)
                continue
            a = corrupt(frame, name, sev, seed=1, history=history)
            b = corrupt(frame, name, sev, seed=1, history=history)
            assert _signature(a) == _signature(b), (name, sev)
            assert _signature(a) != before, f"{name} {sev} left the {source} frame unchanged"
            assert a.meta["corruption"] == {"name": name, "severity": sev, "seed": 1,
                                            "level": CORRUPTIONS[name].levels[sev - 1]}
            assert a.boxes is frame.boxes and a.frame_id == frame.frame_id and a.stamp_ns == frame.stamp_ns
            assert a.points.dtype == np.float32 and np.isfinite(a.points).all()
    assert _signature(frame) == before
    assert "corruption" not in frame.meta


def test_random_corruptions_depend_on_the_seed(kitti_frames):
    f = kitti_frames[0]
    for name in ("point_drop", "sector_drop", "crosstalk", "fog", "spatial_misalignment"):
        assert _signature(corrupt(f, name, 2, seed=0)) != _signature(corrupt(f, name, 2, seed=1)), name


def test_beam_reduction_from_elevation_on_real_and_simulated_scans(kitti_frames, sim_frames):
    sim = sim_frames[0]
    # The simulator casts exactly the rig's beams: elevation recovers them.
    assert len(np.unique(beam_index(sim.points, sim.rig.lidar_model))) == 64
    for beams in (32, 16, 8):
        kept = reduce_beams(sim.points, beams, sim.rig.lidar_model)
        assert len(np.unique(beam_index(kept, sim.rig.lidar_model))) == beams
    # KITTI scans carry no ring field: the HDL-64E pattern's elevations stand in for it.
    real = kitti_frames[1]
    counts = [len(corrupt(real, "beam_reduction", s).points) for s in SEVERITIES]
    share = np.array(counts) / len(real.points)
    assert 0.35 < share[0] < 0.65 and 0.15 < share[1] < 0.35 and 0.06 < share[2] < 0.2, share


def test_severity_orders_the_damage(kitti_frames):
    f = kitti_frames[1]
    n = [len(corrupt(f, "point_drop", s).points) for s in SEVERITIES]
    assert n[0] > n[1] > n[2]
    n = [len(corrupt(f, "sector_drop", s).points) for s in SEVERITIES]
    assert len(f.points) > n[0] > n[1] > n[2]
    n = [len(corrupt(f, "crosstalk", s).points) for s in SEVERITIES]
    assert len(f.points) < n[0] < n[1] < n[2]
    bright = [image_metrics(corrupt(f, "darkness", s).image)["brightness"] for s in SEVERITIES]
    assert bright[0] > bright[1] > bright[2]
    bright = [image_metrics(corrupt(f, "brightness", s).image)["brightness"] for s in SEVERITIES]
    assert image_metrics(f.image)["brightness"] < bright[0] < bright[1] < bright[2]
    sharp = [image_metrics(corrupt(f, "motion_blur", s).image)["sharpness"] for s in SEVERITIES]
    assert image_metrics(f.image)["sharpness"] > sharp[0] > sharp[1] > sharp[2]
    for kind in ("fog", "snow"):  # haze lifts the image towards the haze colour: less contrast
        contrast = [corrupt(f, kind, s).image.astype(np.float32).std() for s in SEVERITIES]
        assert f.image.astype(np.float32).std() > contrast[0] > contrast[2], kind
    far = [(np.linalg.norm(corrupt(f, "fog", s).points[:, :3], axis=1) > 30).sum() for s in SEVERITIES]
    assert (np.linalg.norm(f.points[:, :3], axis=1) > 30).sum() > far[0] > far[1] > far[2]


def test_sector_drop_removes_one_contiguous_front_sector(kitti_frames):
    f = kitti_frames[2]
    out = corrupt(f, "sector_drop", 3)
    az = np.sort(np.rad2deg(np.arctan2(out.points[:, 1], out.points[:, 0])))
    front = az[(az > -80) & (az < 80)]
    assert np.diff(front).max() >= 89.0


def test_misalignment_moves_the_projection_and_temporal_takes_an_earlier_camera(sim_frames, kitti_frames):
    f = kitti_frames[1]
    uv0, _, vis = f.rig.project(f.points[:, :3].astype(np.float64))
    shifts = []
    for s in SEVERITIES:
        g = corrupt(f, "spatial_misalignment", s)
        assert np.array_equal(g.points, f.points) and g.image is f.image
        uv, _, _ = g.rig.project(f.points[:, :3].astype(np.float64))
        shifts.append(np.median(np.linalg.norm(uv[vis] - uv0[vis], axis=1)))
    assert 1.0 < shifts[0] < shifts[1] < shifts[2]
    frame, history = sim_frames[-1], sim_frames[:-1]
    for lag in SEVERITIES:
        g = corrupt(frame, "temporal_misalignment", lag, history=history)
        assert np.array_equal(g.image, history[-lag].image) and np.array_equal(g.points, frame.points)
        assert g.image_stamp_ns == history[-lag].stamp_ns
        skew = [c for c in frame_checks(g) if c.metric == "skew_s"][0]
        assert skew.value == pytest.approx(lag * 0.1, abs=1e-3) and skew.level >= 1


def test_health_checks_flag_clear_faults_but_not_clean_frames(kitti_frames, sim_frames):
    for f in (*kitti_frames, sim_frames[0]):
        assert not frame_flagged(f), [c.message for c in frame_checks(f)]
    f = kitti_frames[0]
    assert corrupt(f, "missing_camera", 3).image is None
    assert frame_flagged(corrupt(f, "missing_camera", 3))
    assert frame_flagged(corrupt(f, "point_drop", 3))
    assert frame_flagged(corrupt(f, "darkness", 3))


def test_unknown_names_and_severities_list_the_valid_ones(kitti_frames):
    f = kitti_frames[0]
    with pytest.raises(ConfigError, match="valid: beam_reduction, point_drop.*temporal_misalignment"):
        corrupt(f, "hail", 1)
    for bad in (0, 4, True):
        with pytest.raises(ConfigError, match="valid: 1, 2, 3"):
            corrupt(f, "fog", bad)
