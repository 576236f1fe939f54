"""The node graph across processes with real rclpy/DDS: `perception launch` in a subprocess, a test subscriber.

Covers: replay of the bundled drive (a Detection3DArray for >= 95 % of the clouds within 1 s, the same
detections as the detector in-process, ground truth once weights are trained), every RViz topic published,
LiDAR-only degraded mode without the camera, >= 10 kinds of malformed input leaving every node alive and
reported on /diagnostics, and SIGINT stopping the whole group with no orphan processes.
"""

from __future__ import annotations

import array
import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("trustworthy_perception_msgs.msg", reason="interface package not built (make msgs)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from trustworthy_perception_msgs.msg import CrowdCount, Detection3DArray, DetectionFeatures, OodScores  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from perception.engines.registry import default_backend  # noqa: E402
from ros_nodes import convert  # noqa: E402
from ros_nodes.paths import dds_env  # noqa: E402
from ros_nodes.probe import Probe  # noqa: E402
from ros_nodes.qos import latched_qos, sensor_qos  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "fusion_default"
LIDAR, IMAGE, INFO = "/sensing/lidar/points", "/sensing/camera/image_raw", "/sensing/camera/camera_info"
#: Playback speed of the replay test: slow enough for CPU inference on 2 cores to keep up with every frame.
REPLAY_RATE = 0.1
STARTUP_S = 90.0  # model load + warm-up on a busy 2-core machine
#: A DDS domain of our own, so ROS tests running at the same time on this machine cannot cross-talk.
DOMAIN = 1 + os.getpid() % 100


def _alive(pid: int) -> bool:
    """True when ``pid`` is a live (non-zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


class Graph:
    """``perception launch FILE ARGS`` in its own session; output captured to a file."""

    def __init__(self, tmp_path: Path, launch_file: str, *arguments: str) -> None:
        self.log_path = tmp_path / f"{Path(launch_file).stem}.log"
        self._log = self.log_path.open("w")
        env = dds_env()
        env["ROS_DOMAIN_ID"] = str(DOMAIN)
        env.setdefault("OMP_NUM_THREADS", "2")
        self.proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", launch_file, *arguments],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                     start_new_session=True)
        self.node_pids: list[int] = []

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_output(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def record_nodes(self) -> list[int]:
        self.node_pids = _children(self.proc.pid)
        return self.node_pids

    def interrupt(self, timeout_s: float = 30.0) -> int:
        """SIGINT the runner (like Ctrl-C) and wait for it; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        """Last resort for a failed test: kill the runner and its nodes."""
        for pid in [*self.node_pids, *_children(self.proc.pid)]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


def _judged_calibration(probe: Probe) -> list[tuple[int, float]]:
    """(level, extrinsic_gain) of every sensor_health calibration status that judged the extrinsics."""
    out = []
    for m in probe.messages("/diagnostics"):
        for s in m.status:
            gain = {kv.key: kv.value for kv in s.values}.get("extrinsic_gain")
            if s.name == "sensor_health: calibration" and gain is not None and np.isfinite(float(gain)):
                out.append((s.level[0], float(gain)))
    return out


def _status_texts(probe: Probe) -> list[tuple[str, int, str]]:
    return [(s.name, s.level[0], s.message) for m in probe.messages("/diagnostics") for s in m.status]


# ---------------------------------------------------------------------- replay of the bundled drive
@pytest.fixture(scope="module")
def drive() -> Path:
    """The bundled default drive (generated into data/ on first use, as `perception demo` does)."""
    from perception.commands.demo import DriveDefinition, ensure_drive

    return ensure_drive(DriveDefinition.load(), progress=False)


@pytest.fixture(scope="module")
def bag_clouds(drive):
    """Header stamps of the drive's clouds, in order."""
    from rosbags.rosbag2 import Reader

    from perception.io.bag import typestore

    with Reader(drive) as reader:
        conns = [c for c in reader.connections if c.topic == LIDAR]
        return [convert.stamp_to_ns(typestore().deserialize_cdr(raw, c.msgtype).header.stamp)
                for c, _, raw in reader.messages(connections=conns)]


REPLAY_TOPICS = {
    "/perception/detections": Detection3DArray, "/perception/markers": MarkerArray,
    "/perception/features": DetectionFeatures, "/perception/xai/image": Image, "/perception/xai/bev": Image,
    "/perception/health/markers": MarkerArray, "/diagnostics": DiagnosticArray,
    "/perception/ood": OodScores, "/perception/crowd/count": CrowdCount,
}


@pytest.fixture(scope="module")
def replay(drive, bag_clouds, tmp_path_factory):
    """Run replay.launch.yaml on the drive; returns what the test subscriber saw, then stops it with SIGINT."""
    tmp = tmp_path_factory.mktemp("replay")
    with Probe(REPLAY_TOPICS, domain_id=DOMAIN) as probe:
        clouds: list[float] = []
        # wait_for_subscribers 3: the detector, sensor_health and this test's cloud subscriber (matched
        # subscriptions: the player starts only once all three can receive the first cloud).
        graph = Graph(tmp, "replay.launch.yaml", f"bag:={drive}", f"rate:={REPLAY_RATE}", "max_gap_s:=0.2",
                      "wait_for_subscribers:=3", "xai_period_s:=0.5", "crowd_rate_hz:=0.5")
        try:
            # The cloud subscriber (and so the playback) comes only once this probe has discovered the detector's
            # output: on a loaded machine the first answers were otherwise published before the probe matched.
            assert probe.wait_for(lambda: probe.node.count_publishers("/perception/detections") > 0, STARTUP_S), \
                graph.output()
            probe.node.create_subscription(PointCloud2, LIDAR, lambda _m: clouds.append(time.monotonic()),
                                           sensor_qos())
            assert graph.wait_for_output("subscriber(s) on /sensing/lidar/points: starting", STARTUP_S), graph.output()
            n = len(bag_clouds)
            probe.wait_for(lambda: len(probe.messages("/perception/detections")) >= n, n / (10 * REPLAY_RATE) + 15)
            # the extrinsic check runs at low priority: give it time to report once the bag has played
            probe.wait_for(lambda: bool(_judged_calibration(probe)), 15)
            time.sleep(2.0)  # a last diagnostics period
            live_publishers = {t: probe.node.count_publishers(t) for t in _rviz_topics()}
            # A late joiner still gets the static transforms: /tf_static is latched (transient local).
            tf_static: list = []
            probe.node.create_subscription(TFMessage, "/tf_static", tf_static.append, latched_qos(depth=10))
            probe.wait_for(lambda: bool(tf_static), 10)
            nodes = graph.record_nodes()
            result = {
                "detections": list(probe.received["/perception/detections"]), "clouds": list(clouds),
                "probe": probe, "publishers": live_publishers, "nodes": nodes, "tf_static": tf_static,
            }
            result["status"] = graph.interrupt()
            result["output"] = graph.output()
            result["alive_after"] = [pid for pid in nodes if _alive(pid)]
            yield result
        finally:
            graph.kill()


def _rviz_topics() -> list[str]:
    doc = yaml.safe_load((REPO / "launch" / "perception.rviz").read_text())
    return [d["Topic"]["Value"] for d in doc["Visualization Manager"]["Displays"] if "Topic" in d]


def test_replay_yields_a_detection_array_for_95pct_of_clouds_within_1s(replay, bag_clouds):
    by_stamp = {convert.stamp_to_ns(r.msg.header.stamp): r for r in replay["detections"]}
    assert len(replay["clouds"]) == len(bag_clouds), "the test subscriber missed clouds"
    within = 0
    for stamp, cloud_time in zip(bag_clouds, replay["clouds"]):
        got = by_stamp.get(stamp)
        within += got is not None and got.monotonic - cloud_time <= 1.0
    pipeline = [{kv.key: kv.value for kv in s.values} for m in replay["probe"].messages("/diagnostics")
                for s in m.status if s.name == "fusion_detector: pipeline"]
    assert within >= 0.95 * len(bag_clouds), (
        f"{within}/{len(bag_clouds)} clouds answered within 1 s; answered "
        f"{[i for i, s in enumerate(bag_clouds) if s in by_stamp]}; latencies "
        f"{[round(by_stamp[s].monotonic - t, 2) for s, t in zip(bag_clouds, replay['clouds']) if s in by_stamp]}; "
        f"last pipeline status {pipeline[-1] if pipeline else None}")
    msgs = [r.msg for r in replay["detections"]]
    # The node runs the shipped default backend: the fastest that passed parity in `perception bench`.
    backend = default_backend(MODEL_DIR)
    assert all(m.header.frame_id == "lidar" and m.model_id == f"fusion_default@{backend}" for m in msgs)
    assert not any(m.degraded for m in msgs), [list(m.degraded_reasons) for m in msgs]


def test_replay_detections_equal_the_detector_in_process(replay, drive):
    """Whatever crosses DDS is what FusionDetector returns on the same frame (conversions lose nothing)."""
    from perception.detector.api import FusionDetector
    from perception.io.bag import read_bag

    detector = FusionDetector.load(MODEL_DIR, backend="auto")  # what the node runs
    received = {convert.stamp_to_ns(r.msg.header.stamp): r.msg for r in replay["detections"]}
    frames = [f for f in read_bag(drive) if f.stamp_ns in received][::4][:4]
    assert len(frames) >= 3
    for frame in frames:
        local = sorted(detector(frame).detections, key=lambda d: -d.score)
        remote = sorted(convert.msg_to_detections(received[frame.stamp_ns]), key=lambda d: -d.score)
        assert len(local) == len(remote)
        for a, b in zip(local, remote):
            assert a.label == b.label
            np.testing.assert_allclose(b.box.center, a.box.center, atol=1e-3)
            np.testing.assert_allclose(b.covariance, a.covariance, rtol=1e-4, atol=1e-6)
            assert b.probability == pytest.approx(a.probability, abs=1e-4)


def test_replay_detections_match_ground_truth(replay, drive):
    """Needs trained weights (models/fusion_default/MODEL_CARD.md is written by `perception train`)."""
    if not (MODEL_DIR / "MODEL_CARD.md").is_file():
        pytest.skip("models/fusion_default is not trained yet (no MODEL_CARD.md)")
    from perception.eval.ap import evaluate_ap
    from perception.io.bag import read_bag

    received = {convert.stamp_to_ns(r.msg.header.stamp): r.msg for r in replay["detections"]}
    gts, dets, scores = [], [], []
    for frame in read_bag(drive):
        if frame.stamp_ns in received:
            found = convert.msg_to_detections(received[frame.stamp_ns])
            gts.append(frame.boxes)
            dets.append([d.box for d in found])
            scores.append(np.array([d.probability for d in found]))
    assert len(gts) >= 10, f"only {len(gts)} frames answered"
    # In-process on all 20 frames the trained model reaches BEV AP|R40 (every GT with points) of
    # Car 70, Pedestrian 79, Cyclist 73 %. Exact R40: the devkit figure is coarse with this few objects.
    ap = evaluate_ap(gts, dets, scores, classes=("Car", "Pedestrian", "Cyclist"), metric="bev", difficulty="none")
    assert all(a.ap_r40 >= 50.0 for a in ap.values()), {c: round(a.ap_r40, 1) for c, a in ap.items()}


def test_replay_publishes_markers_features_attention_and_diagnostics(replay):
    probe = replay["probe"]
    markers = probe.messages("/perception/markers")
    assert markers and markers[-1].markers[0].action == markers[-1].markers[0].DELETEALL
    feats = probe.messages("/perception/features")
    dets = {convert.stamp_to_ns(m.header.stamp): m for m in probe.messages("/perception/detections")}
    for f in feats:
        d = dets.get(convert.stamp_to_ns(f.header.stamp))
        if d is not None:
            assert f.num_detections == len(d.detections) and len(f.frame_embedding) > 0
    xai = probe.messages("/perception/xai/image")
    bev = probe.messages("/perception/xai/bev")
    assert xai and bev and xai[-1].encoding == "rgb8" and (xai[-1].width, xai[-1].height) == (1242, 375)
    statuses = _status_texts(probe)
    pipeline = [s for s in statuses if s[0] == "fusion_detector: pipeline"]
    assert pipeline, statuses
    lidar = [s for s in statuses if s[0] == "sensor_health: lidar"]
    assert lidar and any(level == 0 for _, level, _ in lidar), lidar
    # the bundled drive's rig is right: the extrinsic check judges it (a finite gain) and finds nothing wrong
    judged = _judged_calibration(probe)
    assert judged, [s for s in statuses if s[0] == "sensor_health: calibration"]
    assert all(level == 0 for level, _ in judged), judged
    assert probe.messages("/perception/health/markers")


def test_replay_feeds_the_sibling_monitors(replay):
    """ood_monitor scores every detection of the frames it hears; the crowd counter counts the camera."""
    probe = replay["probe"]
    dets = {convert.stamp_to_ns(r.msg.header.stamp): r.msg for r in replay["detections"]}
    ood = probe.messages("/perception/ood")
    assert len(ood) >= 0.5 * len(dets), f"{len(ood)} OOD messages for {len(dets)} detection arrays"
    for msg in ood:
        d = dets.get(convert.stamp_to_ns(msg.header.stamp))
        if d is not None:
            assert len(msg.scores) == len(msg.is_ood) == len(d.detections)
        assert np.isfinite(msg.frame_score) and msg.threshold > 0
    # The bundled drive is in distribution: most of its frames must not be flagged.
    assert np.mean([m.frame_is_ood for m in ood]) <= 0.3, [round(m.frame_score, 2) for m in ood]
    counts = probe.messages("/perception/crowd/count")
    assert counts, "the crowd counter published nothing"
    assert all(0 <= c.lower <= c.count <= c.upper and 0 < c.confidence < 1 for c in counts)
    statuses = {s[0].split(":")[0] for s in _status_texts(probe)}
    assert {"ood_monitor", "crowd_counter"} <= statuses, statuses


def test_every_rviz_topic_has_a_live_publisher_and_tf_static_is_latched(replay):
    missing = [t for t, n in replay["publishers"].items() if n < 1]
    assert not missing, f"RViz displays topics nobody publishes: {missing}"
    frames = {(t.header.frame_id, t.child_frame_id) for m in replay["tf_static"] for t in m.transforms}
    assert ("base_link", "lidar") in frames, frames


def test_sigint_stops_the_whole_group_without_orphans(replay):
    assert len(replay["nodes"]) == 5, replay["output"][-3000:]
    assert replay["status"] == 0, replay["output"][-3000:]
    assert replay["alive_after"] == [], f"orphans: {replay['alive_after']}"
    out = replay["output"]
    for name in ("bag_player", "fusion_detector", "sensor_health", "ood_monitor", "crowd_counter"):
        assert f"[launch] {name} exited with code 0" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


# ---------------------------------------------------------------------- degraded: no camera
def test_camera_removed_gives_lidar_only_degraded_detections(drive, tmp_path):
    topics = {"/perception/detections": Detection3DArray, "/diagnostics": DiagnosticArray}
    with Probe(topics, domain_id=DOMAIN) as probe:
        # loop: the detector may finish warming up after a 2 s bag has played once
        graph = Graph(tmp_path, "replay.launch.yaml", f"bag:={drive}", "rate:=1.0", "loop:=true",
                      f"skip_topics:={IMAGE}", "xai_period_s:=0.0")
        try:
            assert graph.wait_for_output("subscriber(s) on /sensing/lidar/points: starting", STARTUP_S), graph.output()
            assert probe.wait_for(lambda: len(probe.messages("/perception/detections")) >= 2, 90), graph.output()
            probe.wait_for(lambda: any(s[0] == "sensor_health: camera" for s in _status_texts(probe)), 5)
            msgs = probe.messages("/perception/detections")
            assert all(m.degraded and "camera_missing" in m.degraded_reasons for m in msgs), \
                [list(m.degraded_reasons) for m in msgs]
            camera = [s for s in _status_texts(probe) if s[0] == "sensor_health: camera"]
            assert camera and all(level == 3 for _, level, _ in camera), camera  # STALE: never received
            assert graph.interrupt() == 0
        finally:
            graph.kill()


# ---------------------------------------------------------------------- malformed input
def _malformed(rig) -> list[tuple[str, str, object]]:
    """(topic, "topic:field" expected in the report, message) for 12 kinds of malformed input."""
    header = convert.make_header(time.time_ns(), "lidar")
    cloud = convert.points_to_pointcloud(np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32), header)
    image = convert.array_to_image(np.zeros((rig.height, rig.width, 3), np.uint8), convert.make_header(0, "camera"))
    info = convert.rig_to_camera_info(rig, convert.make_header(0, "camera"))

    def edit(msg, **kw):
        m = copy.deepcopy(msg)
        for k, v in kw.items():
            setattr(m, k, v)
        return m

    fields_f64 = copy.deepcopy(cloud.fields)
    fields_f64[0].datatype = PointField.FLOAT64
    fields_count = copy.deepcopy(cloud.fields)
    fields_count[1].count = 2
    bad_k = copy.deepcopy(info)
    bad_k.k[4] = float("nan")
    small = convert.array_to_image(np.zeros((10, 12, 3), np.uint8), convert.make_header(0, "camera"))
    return [
        (LIDAR, f"{LIDAR}:fields", edit(cloud, fields=cloud.fields[:2])),
        (LIDAR, f"{LIDAR}:fields[x].datatype", edit(cloud, fields=fields_f64)),
        (LIDAR, f"{LIDAR}:fields[y].count", edit(cloud, fields=fields_count)),
        (LIDAR, f"{LIDAR}:is_bigendian", edit(cloud, is_bigendian=True)),
        (LIDAR, f"{LIDAR}:row_step", edit(cloud, row_step=8)),
        (LIDAR, f"{LIDAR}:data", edit(cloud, data=array.array("B", bytes(100)))),
        (IMAGE, f"{IMAGE}:encoding", edit(image, encoding="32FC1")),
        (IMAGE, f"{IMAGE}:step", edit(image, step=5)),
        (IMAGE, f"{IMAGE}:data", edit(image, data=array.array("B", bytes(7)))),
        (IMAGE, f"{IMAGE}:width", small),  # does not match the rig's 1242x375 camera
        (INFO, f"{INFO}:k", bad_k),
        (INFO, f"{INFO}:distortion_model", edit(info, distortion_model="fisheye")),
    ]


def test_malformed_messages_leave_every_node_alive_and_reported(tmp_path, sim_rig):
    cases = _malformed(sim_rig)
    assert len({where for _, where, _ in cases}) >= 10
    topics = {"/perception/detections": Detection3DArray, "/diagnostics": DiagnosticArray}
    with Probe(topics, domain_id=DOMAIN) as probe:
        pubs = {t: probe.publisher(cls, t) for t, cls in ((LIDAR, PointCloud2), (IMAGE, Image), (INFO, CameraInfo))}
        graph = Graph(tmp_path, "perception.launch.yaml", "xai_period_s:=0")
        try:
            assert graph.wait_for_output("listening on", STARTUP_S), graph.output()
            assert probe.wait_for(lambda: pubs[LIDAR].get_subscription_count() >= 2
                                  and pubs[IMAGE].get_subscription_count() >= 2
                                  and pubs[INFO].get_subscription_count() >= 1, 30), graph.output()
            def reported() -> set[tuple[str, str]]:
                return {(name.split(":")[0], where) for name, level, text in _status_texts(probe)
                        for _, where, _ in cases if level == 2 and where in text and name.endswith(": input")}

            expected = {("fusion_detector", where) for _, where, _ in cases}
            expected |= {("sensor_health", where) for topic, where, _ in cases if topic in (LIDAR, IMAGE)
                         and not where.endswith(":width")}  # size vs rig is the detector's concern
            for _ in range(3):  # sensor inputs are best effort, depth 2: a busy node may miss a burst; resend
                missing = {where for _, where in expected - reported()}
                for topic, where, msg in cases:
                    if where in missing:
                        pubs[topic].publish(msg)
                        time.sleep(0.2)
                if probe.wait_for(lambda: expected <= reported(), 10):
                    break
            assert expected <= reported(), f"not reported: {sorted(expected - reported())}"
            # Still alive and working: a valid frame is detected.
            stamp = time.time_ns()
            pubs[INFO].publish(convert.rig_to_camera_info(sim_rig, convert.make_header(stamp, "camera")))
            pts = np.random.default_rng(1).uniform([5, -10, -1.5, 0], [40, 10, 0.5, 1], size=(20000, 4))
            pubs[LIDAR].publish(convert.points_to_pointcloud(pts.astype(np.float32),
                                                             convert.make_header(stamp, "lidar")))
            pubs[IMAGE].publish(convert.array_to_image(np.zeros((375, 1242, 3), np.uint8),
                                                       convert.make_header(stamp, "camera")))
            assert probe.wait_for(lambda: any(convert.stamp_to_ns(m.header.stamp) == stamp
                                              for m in probe.messages("/perception/detections")), 30), graph.output()
            assert "exited" not in graph.output(), graph.output()
            assert graph.interrupt() == 0
        finally:
            graph.kill()
