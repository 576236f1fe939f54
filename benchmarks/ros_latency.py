"""ROS latency bench: PointCloud2 stamp -> Detection3DArray receipt, drops and RSS under load.

Starts ``perception launch perception.launch.yaml`` (detector + its monitors), publishes the frames of the
bundled drive restamped with the current time at each rate, and prints per rate: frames sent/answered/
dropped, latency p50/p99/max (wall clock: receipt - header stamp), the detector's own drop counter, and
the detector process's RSS at the start and end of the run (flat = no leak).

    .venv/bin/python benchmarks/ros_latency.py                     # 10 Hz for 30 s, then 20 Hz for 120 s
    .venv/bin/python benchmarks/ros_latency.py --rates 10 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from trustworthy_perception_msgs.msg import Detection3DArray  # noqa: E402

from perception.commands.demo import DriveDefinition, ensure_drive  # noqa: E402
from perception.io.bag import read_bag  # noqa: E402
from ros_nodes import convert  # noqa: E402
from ros_nodes.paths import dds_env  # noqa: E402
from ros_nodes.probe import Probe  # noqa: E402

LIDAR, IMAGE, INFO = "/sensing/lidar/points", "/sensing/camera/image_raw", "/sensing/camera/camera_info"


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (NaN when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def detector_pid(runner_pid: int) -> int | None:
    """PID of the fusion_detector process started by the launch runner."""
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmd.read_bytes().split(b"\0")
            ppid = int(cmd.with_name("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
        if ppid == runner_pid and b"ros_nodes.fusion_detector" in args:
            return int(cmd.parent.name)
    return None


def run_rate(probe: Probe, pubs: dict, frames: list, hz: float, seconds: float, pid: int) -> dict:
    """Publish at ``hz`` for ``seconds``; returns the measurements."""
    sent: dict[int, float] = {}
    start_count = len(probe.messages("/perception/detections"))
    rss = [rss_mb(pid)]
    period = 1.0 / hz
    t0 = time.monotonic()
    k = 0
    next_rss = t0 + 5.0
    while time.monotonic() - t0 < seconds:
        due = t0 + k * period
        time.sleep(max(0.0, due - time.monotonic()))
        cloud, image, info = frames[k % len(frames)]
        stamp = convert.ns_to_stamp(time.time_ns())
        for msg in (info, cloud, image):
            msg.header.stamp = stamp
        pubs[INFO].publish(info)
        pubs[LIDAR].publish(cloud)
        pubs[IMAGE].publish(image)
        sent[convert.stamp_to_ns(stamp)] = time.monotonic()
        k += 1
        if time.monotonic() >= next_rss:
            rss.append(rss_mb(pid))
            next_rss += 5.0
    time.sleep(3.0)
    got = probe.received["/perception/detections"][start_count:]
    latencies = np.array([r.wall - convert.stamp_to_ns(r.msg.header.stamp) * 1e-9 for r in got
                          if convert.stamp_to_ns(r.msg.header.stamp) in sent]) * 1e3
    rss.append(rss_mb(pid))
    return {"hz": hz, "seconds": seconds, "sent": len(sent), "answered": len(latencies),
            "latency_ms": latencies, "rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 20.0], help="input rates (Hz)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 120.0],
                        help="duration per rate (one value, or one per rate)")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    durations = args.seconds * len(args.rates) if len(args.seconds) == 1 else args.seconds

    bag = ensure_drive(DriveDefinition.load(), progress=False)
    frames = []
    for f in read_bag(bag):
        h = convert.make_header(0, f.rig.lidar_frame)
        frames.append((convert.points_to_pointcloud(f.points, h),
                       convert.array_to_image(f.image, convert.make_header(0, f.rig.camera_frame)),
                       convert.rig_to_camera_info(f.rig, convert.make_header(0, f.rig.camera_frame))))
    topics = {"/perception/detections": Detection3DArray, "/diagnostics": DiagnosticArray}
    log_path = REPO / "out" / "ros_latency_launch.log"
    log_path.parent.mkdir(exist_ok=True)
    log = log_path.open("w")
    domain = 1 + os.getpid() % 100  # a DDS domain of our own: other graphs on this machine cannot interfere
    runner = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", "perception.launch.yaml",
                               f"backend:={args.backend}", "xai_period_s:=1.0"], stdout=log,
                              stderr=subprocess.STDOUT, env={**dds_env(), "ROS_DOMAIN_ID": str(domain)}, cwd=REPO,
                              start_new_session=True)
    print(f"node output: {log_path}")
    try:
        with Probe(topics, domain_id=domain) as probe:
            pubs = {t: probe.publisher(c, t) for t, c in ((LIDAR, PointCloud2), (IMAGE, Image), (INFO, CameraInfo))}
            if not probe.wait_for(lambda: pubs[LIDAR].get_subscription_count() >= 2, 120):
                print("the detector did not come up within 120 s")
                return 1
            pid = detector_pid(runner.pid)
            print(f"drive {bag}: {len(frames)} frames, ~{np.mean([len(c.data) for c, _, _ in frames]) / 1e6:.1f} MB "
                  f"per cloud; detector pid {pid}")
            for hz, seconds in zip(args.rates, durations):
                r = run_rate(probe, pubs, frames, hz, seconds, pid)
                lat = r["latency_ms"]
                diag = [s for m in probe.messages("/diagnostics") for s in m.status
                        if s.name == "fusion_detector: pipeline"]
                values = {kv.key: kv.value for kv in diag[-1].values} if diag else {}
                print(f"{hz:5.1f} Hz x {seconds:.0f} s: sent {r['sent']}, answered {r['answered']}, "
                      f"dropped {r['sent'] - r['answered']} | latency ms p50 {np.percentile(lat, 50):.0f} "
                      f"p99 {np.percentile(lat, 99):.0f} max {lat.max():.0f} | detector: inference p50 "
                      f"{values.get('inference_ms_p50', '?')} ms, dropped total {values.get('frames_dropped', '?')}"
                      f" | RSS MB {' '.join(f'{v:.0f}' for v in r['rss_mb'])}")
    finally:
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=30)
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
