"""The fusion_detector node in a subprocess with real rclpy on a real KITTI frame: the XAI pictures come
after the detections, from their own thread (rate-limited), with modality shares on the detections and in
the markers; without the camera the detections say 100 % LiDAR and the picture says LiDAR-only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from trustworthy_perception_msgs.msg import Detection3D, Detection3DArray  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from perception.io import KittiDataset  # noqa: E402
from ros_nodes.convert import array_to_image, image_to_array, make_header, points_to_pointcloud  # noqa: E402
from ros_nodes.paths import dds_env  # noqa: E402
from ros_nodes.probe import Probe, stop_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NODE = f"fusion_xai_test_{os.getpid()}"
NS = f"/xai_test_{os.getpid()}"
OUT = f"/{NODE}/output"


@pytest.fixture(scope="module")
def kitti_frame(kitti_root):
    return KittiDataset(kitti_root)[1]


@pytest.fixture(scope="module")
def node(kitti_frame, tmp_path_factory):
    rig = tmp_path_factory.mktemp("rig") / "kitti.yaml"
    kitti_frame.rig.to_yaml(rig)
    os.environ["ROS_DOMAIN_ID"] = str(20 + os.getpid() % 40)  # keep clear of other tests' graphs
    cmd = [sys.executable, "-m", "ros_nodes.fusion_detector", "--ros-args", "-r", f"__node:={NODE}",
           "-p", f"model_dir:={REPO / 'models' / 'fusion_default'}", "-p", "backend:=torch",
           "-p", f"calibration_file:={rig}", "-p", "use_camera_info:=false", "-p", "warmup:=false",
           "-p", "num_threads:=1", "-p", "reliable_input:=true", "-p", "xai_period_s:=0.1",
           "-p", "camera_timeout_s:=0.3", "-p", "diagnostics_period_s:=0.3",
           "-r", f"~/input/pointcloud:={NS}/points", "-r", f"~/input/image:={NS}/image"]
    proc = subprocess.Popen(cmd, env=dds_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    stop_process(proc)
    os.environ.pop("ROS_DOMAIN_ID", None)


def _send(probe: Probe, pubs, frame, sec: int, with_image: bool, timeout_s: float = 120.0) -> Detection3DArray:
    """Publish (image +) cloud stamped ``sec`` until the detections of that stamp arrive."""
    header = make_header(sec * 10**9, "velodyne")
    cloud, image = points_to_pointcloud(frame.points, header), array_to_image(frame.image, header)
    deadline = time.monotonic() + timeout_s

    def got():
        return [m for m in probe.messages(f"{OUT}/objects") if m.header.stamp.sec == sec]

    while time.monotonic() < deadline:
        if with_image:
            pubs[1].publish(image)
        pubs[0].publish(cloud)
        if probe.wait_for(lambda: bool(got()), 30.0 if pubs[0].get_subscription_count() else 1.0):
            return got()[0]
    raise AssertionError(f"no detections for stamp {sec} within {timeout_s} s")


def test_node_publishes_shares_then_readable_xai_and_lidar_only_without_camera(node, kitti_frame):
    topics = {f"{OUT}/objects": Detection3DArray, f"{OUT}/markers": MarkerArray, f"{OUT}/xai/image": Image,
              f"{OUT}/xai/bev": Image, "/diagnostics": DiagnosticArray}
    with Probe(topics, name=f"probe_{os.getpid()}", domain_id=int(os.environ["ROS_DOMAIN_ID"])) as probe:
        pubs = (probe.publisher(PointCloud2, f"{NS}/points"), probe.publisher(Image, f"{NS}/image"))
        msg = _send(probe, pubs, kitti_frame, 1, with_image=True)
        assert not msg.degraded and msg.detections
        assert all(d.share_source == Detection3D.SHARE_ATTENTION for d in msg.detections)
        assert all(abs(d.lidar_share + d.camera_share - 1.0) < 1e-4 for d in msg.detections)
        # the pictures come after (their own thread), stamped like the detections
        assert probe.wait_for(lambda: any(m.header.stamp.sec == 1 for m in probe.messages(f"{OUT}/xai/bev")), 30.0)
        assert probe.wait_for(lambda: any(m.header.stamp.sec == 1 for m in probe.messages(f"{OUT}/xai/image")), 30.0)
        img = next(m for m in probe.messages(f"{OUT}/xai/image") if m.header.stamp.sec == 1)
        pixels = image_to_array(img)
        assert (img.width, img.height) == (1242, 375) and img.encoding == "rgb8"
        assert (np.abs(pixels.astype(int) - kitti_frame.image.astype(int)).sum(-1) > 30).mean() > 0.01  # heat
        bev = next(m for m in probe.messages(f"{OUT}/xai/bev") if m.header.stamp.sec == 1)
        assert (bev.width, bev.height) == (496, 432) and image_to_array(bev).max() > 0
        texts = [m.text for a in probe.messages(f"{OUT}/markers") for m in a.markers if m.ns == "labels"]
        assert texts and all("% C" in t for t in texts)

        # no image: released LiDAR-only after the camera timeout, 100 % LiDAR, and a picture that says so
        msg = _send(probe, pubs, kitti_frame, 2, with_image=False)
        assert msg.degraded and "camera_missing" in msg.degraded_reasons and msg.detections
        assert all(d.share_source == Detection3D.SHARE_LIDAR_ONLY and d.lidar_share == 1.0 for d in msg.detections)
        assert probe.wait_for(lambda: any(m.header.stamp.sec == 2 for m in probe.messages(f"{OUT}/xai/image")), 30.0)
        dark = image_to_array(next(m for m in probe.messages(f"{OUT}/xai/image") if m.header.stamp.sec == 2))
        assert dark.shape == (375, 1242, 3) and len(np.unique(dark.reshape(-1, 3), axis=0)) > 5
        assert probe.wait_for(lambda: any("LiDAR-only" in m.text for a in probe.messages(f"{OUT}/markers")
                                          for m in a.markers), 10.0)

        # the render time is reported on /diagnostics
        def render_ms():
            for arr in reversed(probe.messages("/diagnostics")):
                for s in arr.status:
                    kv = {v.key: v.value for v in s.values}
                    if s.name == f"{NODE}: pipeline" and float(kv.get("xai_render_ms_p50", 0)) > 0:
                        return float(kv["xai_render_ms_p50"]), int(kv["xai_errors"])
            return None
        assert probe.wait_for(lambda: render_ms() is not None, 10.0)
        assert render_ms()[1] == 0
        assert node.poll() is None
