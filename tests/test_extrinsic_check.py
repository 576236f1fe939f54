"""LiDAR-camera extrinsic consistency check (perception.trust.extrinsics) on real KITTI frames, in the sensor-health
grading, and in the sensor_health node over real DDS (a knocked camera is reported on /diagnostics)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, PointCloud2

from perception.io import open_frames
from perception.rig import make_transform, rpy_to_matrix
from perception.robustness.corruptions import corrupt
from perception.trust.extrinsics import ZERO, combine, depth_edge_points, extrinsic_consistency
from perception.trust.health import DEFAULT_LIMITS, HealthMonitor, Level, frame_checks, parse_limits
from ros_nodes import convert
from ros_nodes.paths import dds_env
from ros_nodes.probe import Probe, stop_process
from ros_nodes.qos import output_qos

REPO = Path(__file__).resolve().parents[1]
WARN_ABOVE = DEFAULT_LIMITS["calibration"]["extrinsic_gain"]["warn_above"]


@pytest.fixture(scope="module")
def frames(kitti_root):
    return list(open_frames(kitti_root))


def _rotated(rig, deg: tuple[float, float, float]):
    """The rig with its extrinsic rotated by ``deg`` about the camera's axes (a knocked camera)."""
    error = make_transform(rpy_to_matrix(*np.deg2rad(deg)), np.zeros(3))
    return dataclasses.replace(rig, lidar_to_camera=error @ rig.lidar_to_camera)


def test_calibrated_real_frames_pass_and_a_2_degree_error_is_seen(frames):
    for f in frames:
        clean = extrinsic_consistency(f.points, f.image, f.rig)
        assert clean.valid and clean.edge_points > 300, clean
        assert clean.gain <= WARN_ABOVE, (f.frame_id, clean)
        knocked = extrinsic_consistency(f.points, f.image, _rotated(f.rig, (0.0, 2.0, 0.0)))
        assert knocked.gain > 2 * WARN_ABOVE, (f.frame_id, knocked)
        assert knocked.score < clean.score
        suite = corrupt(f, "spatial_misalignment", 3)  # the robustness suite's 2° / 10 cm error
        assert extrinsic_consistency(suite.points, suite.image, suite.rig).gain > WARN_ABOVE, f.frame_id
    # where the frame has clear silhouettes, the best rotation tried is the one that undoes the error
    f = frames[0]
    assert extrinsic_consistency(f.points, f.image, _rotated(f.rig, (0.0, 2.0, 0.0))).best_offset_deg == (0, -2, 0)


def test_depth_edges_are_object_silhouettes_not_ground_or_scatter(frames):
    f = frames[0]
    xyz, weight = depth_edge_points(f.points, f.rig.lidar_model)
    assert 0 < len(xyz) < 0.1 * len(f.points) and np.all(weight >= np.sqrt(0.5))
    rng = np.random.default_rng(0)
    scatter = rng.uniform(-30, 30, size=(20000, 3))  # no surfaces: no solid edges
    assert len(depth_edge_points(scatter)[0]) < 0.01 * len(scatter)


def test_too_few_edges_is_not_judged_and_not_an_alarm(frames):
    f = frames[0]
    check = extrinsic_consistency(f.points[:50], f.image, f.rig)
    assert not check.valid and "edge points" in check.reason and np.isnan(check.gain)
    empty = combine([])
    assert not empty.valid and empty.reason == "no frame checked yet"
    monitor = HealthMonitor()
    monitor.observe_extrinsics(check)
    calib = [c for c in monitor.checks(0.0) if c.sensor == "calibration"]
    assert calib and calib[0].level == Level.OK and "not judged" in calib[0].message


def test_frame_checks_and_the_monitor_window_grade_the_extrinsics(frames):
    f = frames[0]
    ok = [c for c in frame_checks(f) if c.sensor == "calibration"]
    assert len(ok) == 1 and ok[0].level == Level.OK, ok
    knocked = dataclasses.replace(f, rig=_rotated(f.rig, (0.0, 2.0, 0.0)))
    bad = [c for c in frame_checks(knocked) if c.sensor == "calibration"]
    assert bad[0].level >= Level.WARN and "check the LiDAR-camera calibration" in bad[0].message, bad
    limits = {k: v for k, v in DEFAULT_LIMITS.items() if k != "calibration"}
    assert not [c for c in frame_checks(f, parse_limits(limits)) if c.sensor == "calibration"]  # check off
    # the node's window: scores averaged over frames, the gain of the average graded
    checks = [extrinsic_consistency(g.points, g.image, _rotated(g.rig, (0.0, 2.0, 0.0))) for g in frames]
    window = combine(checks)
    assert window.edge_points == sum(c.edge_points for c in checks) and window.gain > WARN_ABOVE
    assert combine([checks[0]]).gain == pytest.approx(checks[0].gain)
    monitor = HealthMonitor(extrinsic_window=2)
    for c in checks:
        monitor.observe_extrinsics(c)
    graded = [c for c in monitor.checks(0.0) if c.sensor == "calibration"][0]
    assert graded.level >= Level.WARN and "over 2 frames" in graded.message
    clean = combine([extrinsic_consistency(g.points, g.image, g.rig) for g in frames])
    assert clean.best_offset_deg == ZERO and clean.gain == 0.0


# ---------------------------------------------------------------------- the node, over real DDS
def _start_health(name: str, rig_file: Path, domain: str, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "ros_nodes.sensor_health", "--ros-args", "-r", f"__node:={name}",
            "-r", "__ns:=/perception", "-r", "~/input/pointcloud:=/sensing/lidar/points",
            "-r", "~/input/image:=/sensing/camera/image_raw", "-p", f"calibration_file:={rig_file}",
            "-p", "extrinsic_period_s:=0.2", "-p", "extrinsic_window:=3", "-p", "publish_period_s:=0.5",
            "-p", "reliable_input:=true"]
    env = {**dds_env(), "ROS_DOMAIN_ID": domain, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


def test_sensor_health_node_reports_a_knocked_camera_on_diagnostics(frames, tmp_path):
    f = frames[0]
    good, knocked = tmp_path / "good.yaml", tmp_path / "knocked.yaml"
    f.rig.to_yaml(good)
    _rotated(f.rig, (0.0, 2.0, 0.0)).to_yaml(knocked)
    domain = str(150 + os.getpid() % 50)
    procs = [_start_health("health_good", good, domain, tmp_path / "good.log"),
             _start_health("health_knocked", knocked, domain, tmp_path / "knocked.log")]
    try:
        with Probe({"/diagnostics": DiagnosticArray}, domain_id=int(domain)) as probe:
            cloud_pub = probe.publisher(PointCloud2, "/sensing/lidar/points", output_qos(depth=5))
            image_pub = probe.publisher(Image, "/sensing/camera/image_raw", output_qos(depth=5))

            def calibration(node: str) -> list[tuple[int, str]]:
                """The node's judged calibration statuses (a finite extrinsic_gain: not "no checks" / "not judged")."""
                out = []
                for m in probe.messages("/diagnostics"):
                    for s in m.status:
                        gain = {kv.key: kv.value for kv in s.values}.get("extrinsic_gain")
                        if s.name == f"{node}: calibration" and gain is not None and np.isfinite(float(gain)):
                            out.append((s.level[0], s.message))
                return out

            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (calibration("health_good") and calibration("health_knocked")):
                stamp = time.time_ns()
                cloud_pub.publish(convert.points_to_pointcloud(f.points, convert.make_header(stamp, "velodyne")))
                image_pub.publish(convert.array_to_image(f.image, convert.make_header(stamp, "camera2_optical")))
                time.sleep(0.1)
            logs = {p: (tmp_path / f"{p}.log").read_text() for p in ("good", "knocked")}
            assert calibration("health_good") and calibration("health_knocked"), logs
            assert all(level == 0 for level, _ in calibration("health_good")), calibration("health_good")
            worst, message = max(calibration("health_knocked"))
            assert worst >= 1 and "check the LiDAR-camera calibration" in message, calibration("health_knocked")
    finally:
        assert [stop_process(p, 15) for p in procs] == [0, 0]


def test_latest_worker_keeps_the_newest_item_rate_limits_and_counts_failures():
    from ros_nodes.worker import LatestWorker

    done: list[int] = []

    def work(item: int) -> None:
        if item < 0:
            raise ValueError("bad item")
        done.append(item)

    worker = LatestWorker(work, period_s=0.2, name="test")
    try:
        assert worker.offer(1) and not worker.offer(2) and not worker.due()  # within the period: dropped
        time.sleep(0.3)
        assert worker.due() and worker.offer(-1)
        time.sleep(0.3)
        assert done == [1] and worker.errors == 1 and "bad item" in worker.last_error
    finally:
        worker.stop()
    off = LatestWorker(work, period_s=0.0, name="off")
    assert not off.offer(3) and not off.due()
