"""The crowd_counter node in a subprocess with real rclpy: counts a real crowd photo, reports a malformed
image on /diagnostics and keeps going."""

from __future__ import annotations

import array
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from PIL import Image as PilImage  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from trustworthy_perception_msgs.msg import CrowdCount  # noqa: E402

from perception.crowd.api import CrowdCounter  # noqa: E402
from ros_nodes.convert import array_to_image  # noqa: E402
from ros_nodes.paths import dds_env  # noqa: E402
from ros_nodes.probe import Probe, stop_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "crowd_default"
CROWD = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_sample"
NODE = f"crowd_counter_test_{os.getpid()}"
NS = f"/crowd_test_{os.getpid()}"
pytestmark = pytest.mark.skipif(not CROWD.is_dir(), reason=f"shared crowd data not found at {CROWD}")


@pytest.fixture()
def node(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(60 + (os.getpid() + 7) % 40))
    cmd = [sys.executable, "-m", "ros_nodes.crowd_counter", "--ros-args", "-r", f"__node:={NODE}",
           "-p", f"model_dir:={MODEL}", "-p", "rate_hz:=5.0", "-p", "diagnostics_period_s:=0.3",
           "-r", f"~/input/image:={NS}/image", "-r", f"~/output/count:={NS}/count",
           "-r", f"~/output/overlay:={NS}/overlay"]
    proc = subprocess.Popen(cmd, env=dds_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    stop_process(proc)


def _publish_until(probe: Probe, pub, msg: Image, topic: str, sec: int, timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.publish(msg)
        if probe.wait_for(lambda: any(m.header.stamp.sec == sec for m in probe.messages(topic)), 2.0):
            return next(m for m in probe.messages(topic) if m.header.stamp.sec == sec)
    raise AssertionError(f"nothing on {topic} for stamp {sec} within {timeout_s} s")


def _input_error(probe: Probe) -> str | None:
    for arr in reversed(probe.messages("/diagnostics")):
        for s in arr.status:
            if s.name == f"{NODE}: input" and s.level[0] == 2:
                return s.message
    return None


def test_node_counts_a_real_crowd_image_and_survives_a_malformed_one(node) -> None:
    rgb = np.asarray(PilImage.open(CROWD / "images" / "scene_009_1.jpg").convert("RGB"))
    expected, _ = CrowdCounter(MODEL)(rgb)
    topics = {f"{NS}/count": CrowdCount, f"{NS}/overlay": Image, "/diagnostics": DiagnosticArray}
    with Probe(topics, name=f"probe_{os.getpid()}") as probe:
        pub = probe.publisher(Image, f"{NS}/image")
        msg = array_to_image(rgb, Header(stamp=Time(sec=1), frame_id="camera"))
        ans = _publish_until(probe, pub, msg, f"{NS}/count", 1)
        assert ans.count == pytest.approx(expected.count, abs=1e-3)
        assert ans.lower <= ans.count <= ans.upper
        assert ans.confidence == pytest.approx(CrowdCounter(MODEL).level)
        assert probe.wait_for(lambda: len(probe.messages(f"{NS}/overlay")) > 0, 10.0), "no overlay image"
        over = probe.messages(f"{NS}/overlay")[-1]
        assert (over.height, over.width, over.encoding) == (384, 512, "rgb8")

        bad = Image(header=Header(stamp=Time(sec=2), frame_id="camera"), height=4, width=4, encoding="rgb8",
                    step=12, data=array.array("B", bytes(10)))
        pub.publish(bad)
        assert probe.wait_for(lambda: _input_error(probe) is not None, 15.0), "malformed image not reported"
        assert "data" in _input_error(probe)
        msg3 = array_to_image(rgb, Header(stamp=Time(sec=3), frame_id="camera"))
        assert _publish_until(probe, pub, msg3, f"{NS}/count", 3).count == pytest.approx(expected.count, abs=1e-3)
        assert node.poll() is None
