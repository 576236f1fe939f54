"""The ood_monitor node in a subprocess with real rclpy: it answers DetectionFeatures with OodScores,
warns on /diagnostics for an out-of-distribution frame, and survives a malformed message."""

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
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from trustworthy_perception_msgs.msg import DetectionFeatures, OodScores  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from perception.ood.gaussian import GaussianModel  # noqa: E402
from perception.ood.monitor import OodMonitor, descriptor_dim  # noqa: E402
from perception.ood.scores import energy_score  # noqa: E402
from perception.ood.stats import LidarFrameModel, OodStats, save_stats  # noqa: E402
from ros_nodes.paths import dds_env  # noqa: E402
from ros_nodes.probe import Probe, stop_process  # noqa: E402

DIM, EMB = 8, 6
LIDAR = 2  # the embedding's LiDAR part: its first 2 values
CLASSES = ("Car", "Pedestrian", "Cyclist")
MEANS = np.eye(3, DIM) * 10.0
ID_FEATS = MEANS[[0, 1, 2, 0]] + 0.1
NODE = f"ood_monitor_test_{os.getpid()}"
NS = f"/ood_test_{os.getpid()}"


def _stats() -> OodStats:
    """Unit-covariance Gaussians; the frame descriptor's mean is the descriptor of the in-distribution frame."""
    p = descriptor_dim(DIM, EMB)
    stats = OodStats(
        classes=CLASSES, detection=GaussianModel(MEANS, np.eye(DIM)),
        frame=GaussianModel(np.zeros((1, EMB)), np.eye(EMB)), descriptor=GaussianModel(np.zeros((1, p)), np.eye(p)),
        descriptor_fill=np.zeros(p), frame_norm={f"mean_{k}": (2.0, 1.0) for k in ("mahalanobis", "mahavar")},
        tpr=0.95, meta={"model": "synthetic"},
        thresholds={"detection": {"mahalanobis": 3.0, "mahavar": -5.0, "energy": -1.0},
                    "frame": {"frame": 3.0, "embedding": 3.0, "mean_mahalanobis": 3.0, "mean_mahavar": -5.0}})
    monitor = OodMonitor(stats)
    det = monitor.detection_scores(ID_FEATS)
    stats.descriptor = GaussianModel(monitor.frame_descriptor(np.zeros(EMB), ID_FEATS, det)[None], np.eye(p))
    pl = p - EMB + LIDAR
    stats.lidar = LidarFrameModel(LIDAR, GaussianModel(np.zeros((1, LIDAR)), np.eye(LIDAR)), GaussianModel(
        monitor.frame_descriptor(np.zeros(LIDAR), ID_FEATS, det)[None], np.eye(pl)))
    stats.thresholds["frame_lidar"] = {"frame": 4.0, "embedding": 4.0}
    return stats


def _msg(feats: np.ndarray, emb: np.ndarray, sec: int, num: int | None = None,
         logits: np.ndarray | None = None) -> DetectionFeatures:
    n = len(feats) if num is None else num
    msg = DetectionFeatures(header=Header(stamp=Time(sec=sec), frame_id="lidar"), num_detections=n, dim=DIM,
                            features=array.array("f", np.asarray(feats, np.float32).tobytes()),
                            frame_embedding=array.array("f", np.asarray(emb, np.float32).tobytes()),
                            labels=["Car"] * n)
    if logits is not None:
        msg.num_classes = logits.shape[1]
        msg.logits = array.array("f", np.asarray(logits, np.float32).tobytes())
    return msg


def _answer(probe: Probe, pub, msg: DetectionFeatures, topic: str, timeout_s: float = 60.0) -> OodScores:
    """Publish ``msg`` until OodScores with its stamp arrives (it is only re-sent while discovery has not
    matched the node yet, which loses messages; then the node's answer comes within seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.publish(msg)
        if probe.wait_for(lambda: any(m.header.stamp.sec == msg.header.stamp.sec for m in probe.messages(topic)),
                          10.0 if pub.get_subscription_count() else 0.5):
            return next(m for m in probe.messages(topic) if m.header.stamp.sec == msg.header.stamp.sec)
    raise AssertionError(f"no OodScores for stamp {msg.header.stamp.sec} within {timeout_s} s")


def _status(probe: Probe, name: str, level: int | None = None, **values: str) -> DiagnosticStatus | None:
    """The newest status called ``name`` (at ``level``, with these key values) on /diagnostics, if any."""
    for arr in reversed(probe.messages("/diagnostics")):
        for s in arr.status:
            kv = {v.key: v.value for v in s.values}
            if s.name == name and level in (None, s.level[0]) and all(kv.get(k) == v for k, v in values.items()):
                return s
    return None


@pytest.fixture(params=["mahalanobis"])
def node(request, tmp_path: Path, monkeypatch):
    """The node scoring ``request.param``: a score name, or ``(score name, extra ROS parameters)``."""
    score, extra = (request.param, {}) if isinstance(request.param, str) else request.param
    model = tmp_path / "model"
    save_stats(_stats(), model / "ood")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))  # keep clear of other tests' graphs
    env = dds_env()
    cmd = [sys.executable, "-m", "ros_nodes.ood_monitor", "--ros-args", "-r", f"__node:={NODE}",
           "-p", f"model_dir:={model}", "-p", "diagnostics_period_s:=0.2", "-p", "ood_window:=2",
           "-p", "ood_min_frames:=2", "-p", f"score:={score}",
           "-r", f"~/input/features:={NS}/features", "-r", f"~/output/ood:={NS}/ood"]
    cmd += [a for k, v in extra.items() for a in ("-p", f"{k}:={v}")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    stop_process(proc)


def test_node_answers_features_flags_ood_and_survives_malformed_input(node) -> None:
    monitor = OodMonitor(_stats())
    topics = {f"{NS}/ood": OodScores, "/diagnostics": DiagnosticArray}
    with Probe(topics, name=f"probe_{os.getpid()}") as probe:
        pub = probe.publisher(DetectionFeatures, f"{NS}/features")
        # in distribution: detections at the class means, the embedding at the training mean
        ans = _answer(probe, pub, _msg(ID_FEATS, np.zeros(EMB), sec=1), f"{NS}/ood")
        expected = monitor.score(ID_FEATS, np.zeros(EMB))
        assert ans.score_name == "mahalanobis" and ans.threshold == pytest.approx(3.0)
        assert np.allclose(ans.scores, expected.detection["mahalanobis"], atol=1e-4)
        assert list(ans.is_ood) == [False] * 4
        assert ans.frame_score == pytest.approx(expected.frame["frame"], abs=1e-4) and not ans.frame_is_ood

        # out of distribution: one detection unlike every class, the frame embedding far off
        ood_feats = np.vstack([MEANS[1], np.full(DIM, 7.0)])
        ans = _answer(probe, pub, _msg(ood_feats, np.full(EMB, 5.0), sec=2), f"{NS}/ood")
        assert list(ans.is_ood) == [False, True]
        assert ans.frame_is_ood and ans.frame_score > 3.0
        # one OOD frame of the last two is not enough for a WARN (ood_min_frames 2), a second one is
        frame_status = f"{NODE}: frame"
        assert probe.wait_for(lambda: _status(probe, frame_status, recent_ood_frames="1") is not None, 10.0)
        assert _status(probe, frame_status, recent_ood_frames="1").level[0] == 0
        assert _status(probe, frame_status, 1) is None
        _answer(probe, pub, _msg(ood_feats, np.full(EMB, 5.0), sec=3), f"{NS}/ood")
        assert probe.wait_for(lambda: _status(probe, frame_status, 1) is not None, 10.0), "no WARN"
        assert "out of distribution" in _status(probe, frame_status, 1).message

        # malformed: 2 detections announced, 5 values sent -> reported on /diagnostics, node keeps going
        pub.publish(_msg(np.zeros((1, 5)), np.zeros(EMB), sec=4, num=2))
        assert probe.wait_for(lambda: _status(probe, f"{NODE}: input", 2) is not None, 10.0), "bad input unreported"
        assert "features" in _status(probe, f"{NODE}: input", 2).message
        ans = _answer(probe, pub, _msg(np.zeros((0, DIM)), np.zeros(EMB), sec=5), f"{NS}/ood")
        expected = monitor.score(np.zeros((0, DIM)), np.zeros(EMB))
        assert len(ans.scores) == 0 and ans.frame_score == pytest.approx(expected.frame["frame"], abs=1e-4)

        # features from an INT8 engine, statistics of the FP32 engines: refused and named, never scored
        int8 = _msg(ID_FEATS, np.zeros(EMB), sec=6)
        int8.engine = "onnxruntime-int8"
        pub.publish(int8)
        assert probe.wait_for(lambda: any("engine" in (s.message or "") for arr in probe.messages("/diagnostics")
                                          for s in arr.status if s.name == f"{NODE}: input"), 10.0), "unreported"
        fp32 = _msg(ID_FEATS, np.zeros(EMB), sec=7)
        fp32.engine = "onnxruntime"  # an FP32 engine shares the reference statistics
        _answer(probe, pub, fp32, f"{NS}/ood")
        assert not any(m.header.stamp.sec == 6 for m in probe.messages(f"{NS}/ood"))

        # no camera: the blank image's half of the embedding is far off, the LiDAR half typical. Scored as a
        # full frame it is OOD; said to be camera-less, it is scored on the LiDAR half at that half's threshold.
        blank = np.array([0.0, 0.0, 9.0, 9.0, 9.0, 9.0])
        ans = _answer(probe, pub, _msg(ID_FEATS, blank, sec=8), f"{NS}/ood")
        assert ans.frame_is_ood and not ans.frame_lidar_only and ans.frame_threshold == pytest.approx(3.0)
        no_camera = _msg(ID_FEATS, blank, sec=9)
        no_camera.degraded = ["camera_missing"]
        ans = _answer(probe, pub, no_camera, f"{NS}/ood")
        assert ans.frame_lidar_only and not ans.frame_is_ood and ans.frame_threshold == pytest.approx(4.0)
        expected = monitor.score(ID_FEATS, blank, camera=False)
        assert ans.frame_score == pytest.approx(expected.frame["frame"], abs=1e-4)
        assert node.poll() is None


@pytest.mark.parametrize("node", ["energy"], indirect=True)
def test_node_scores_energy_from_the_logits_and_reports_a_message_without_them(node) -> None:
    topics = {f"{NS}/ood": OodScores, "/diagnostics": DiagnosticArray, f"/{NODE}/output/markers": MarkerArray}
    # a confident Car; a detection no class claims but the detector still scores 0.38; a background detection
    # (detector score 0.08) as unusual, which the default flag_min_score 0.3 keeps from being flagged
    logits = np.array([[4.0, -2.0, -3.0], [-0.5, -3.0, -4.0], [-3.0, -2.5, -4.0]])
    with Probe(topics, name=f"probe_{os.getpid()}") as probe:
        pub = probe.publisher(DetectionFeatures, f"{NS}/features")
        ans = _answer(probe, pub, _msg(ID_FEATS[:3], np.zeros(EMB), sec=1, logits=logits), f"{NS}/ood")
        assert ans.score_name == "energy" and ans.threshold == pytest.approx(-1.0)
        np.testing.assert_allclose(ans.scores, energy_score(logits), atol=1e-4)
        assert (np.asarray(ans.scores) > ans.threshold).tolist() == [False, True, True]  # all scored...
        assert list(ans.is_ood) == [False, True, False]  # ... the background one not flagged
        frame_status = f"{NODE}: frame"
        assert probe.wait_for(lambda: _status(probe, frame_status, detections="3") is not None, 10.0)
        status = _status(probe, frame_status, detections="3")
        values = {v.key: v.value for v in status.values}
        assert values["flaggable_detections"] == "2" and values["ood_detections"] == "1"
        assert values["flag_min_score"] == "0.3"
        assert probe.wait_for(lambda: any("1/2 detections unusual" in m.text for a in
                                          probe.messages(f"/{NODE}/output/markers") for m in a.markers), 10.0)
        pub.publish(_msg(ID_FEATS[:2], np.zeros(EMB), sec=2))  # no logits: energy cannot be computed
        assert probe.wait_for(lambda: _status(probe, f"{NODE}: input", 2) is not None, 10.0), "unreported"
        assert "logits" in _status(probe, f"{NODE}: input", 2).message
        assert node.poll() is None


@pytest.mark.parametrize("node", [("energy", {"flag_min_score": 0.0})], indirect=True)
def test_node_honours_flag_min_score(node) -> None:
    topics = {f"{NS}/ood": OodScores, "/diagnostics": DiagnosticArray}
    logits = np.array([[4.0, -2.0, -3.0], [-0.5, -3.0, -4.0], [-3.0, -2.5, -4.0]])
    with Probe(topics, name=f"probe_{os.getpid()}") as probe:
        pub = probe.publisher(DetectionFeatures, f"{NS}/features")
        ans = _answer(probe, pub, _msg(ID_FEATS[:3], np.zeros(EMB), sec=1, logits=logits), f"{NS}/ood")
        assert list(ans.is_ood) == [False, True, True]  # no floor: the background detection is flagged too
        assert probe.wait_for(lambda: _status(probe, f"{NODE}: frame", flaggable_detections="3",
                                              ood_detections="2", flag_min_score="0") is not None, 10.0)
        assert node.poll() is None
