"""sensor_health node: LiDAR / camera rate, latency, content, skew and extrinsic checks -> /diagnostics.

The metrics and thresholds live in :mod:`perception.trust.health` (the extrinsic check in
:mod:`perception.trust.extrinsics`); this node converts messages, feeds the monitor and publishes what it grades.
The extrinsic check runs on the newest synchronised (cloud, image) pair at most every ``extrinsic_period_s``, on
its own thread, and is graded over the last ``extrinsic_window`` pairs. See ros_nodes/README.md.
"""

from __future__ import annotations

import sys
import time

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from perception.errors import PerceptionError
from perception.rig import Rig
from perception.trust.extrinsics import ExtrinsicCheck, extrinsic_consistency
from perception.trust.health import (
    DEFAULT_LIMITS,
    UNITS,
    HealthMonitor,
    Level,
    cloud_metrics,
    image_metrics,
    parse_limits,
    summarize,
)
from ros_nodes.convert import image_to_array, pointcloud_to_points, stamp_to_ns
from ros_nodes.diagnostics import ERROR, OK, DiagnosticsPublisher, make_status
from ros_nodes.params import declare
from ros_nodes.paths import resolve
from ros_nodes.qos import input_qos, output_qos
from ros_nodes.runtime import run_node
from ros_nodes.worker import LatestWorker

_LEVEL_COLORS = {Level.OK: (0.2, 0.9, 0.2), Level.WARN: (1.0, 0.8, 0.1), Level.ERROR: (1.0, 0.2, 0.2),
                 Level.STALE: (0.6, 0.6, 0.6)}


class SensorHealthNode(Node):
    """Watches the sensor topics and publishes their health on /diagnostics (and as an RViz text marker)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sensor_health", **kwargs)
        self.window_s = declare(self, "window_s", 2.0, "Sliding window for the rate estimate (s)", low=0.1, high=60.0)
        stale = declare(self, "stale_after_s", 1.0, "A sensor silent this long is STALE (s)", low=0.05, high=60.0)
        period = declare(self, "publish_period_s", 1.0, "Period of /diagnostics reports (s)", low=0.05, high=60.0)
        self.image_stride = declare(self, "image_stride", 2, "Pixel stride of the exposure/blur metrics", low=1,
                                    high=16)
        limits = {sensor: {metric: {bound: declare(self, f"{sensor}.{metric}.{bound}", float(value),
                                                   f"{bound.replace('_', ' ')} threshold of {sensor} {metric} "
                                                   f"({UNITS.get(metric) or 'ratio'})")
                                    for bound, value in bounds.items()}
                           for metric, bounds in metrics.items()}
                  for sensor, metrics in DEFAULT_LIMITS.items()}
        calib = declare(self, "calibration_file", "calibration/sim_default.yaml",
                        "Rig YAML whose LiDAR->camera extrinsics the extrinsic check judges ('' = no check)")
        extrinsic_period = declare(self, "extrinsic_period_s", 1.0,
                                   "Check the extrinsics on a synchronised pair at most this often (0 = off)",
                                   low=0.0, high=3600.0)
        extrinsic_window = declare(self, "extrinsic_window", 10, "Pairs the extrinsic check is graded over",
                                   low=1, high=1000)
        slop = declare(self, "sync_slop_s", 0.05, "Largest camera-LiDAR stamp gap of a pair checked (s)",
                       low=0.0, high=1.0)
        self.sync_slop_ns = int(1e9 * slop)
        self.monitor = HealthMonitor(parse_limits(limits, f"{self.get_name()} parameters"), window_s=self.window_s,
                                     stale_after_s=stale, extrinsic_window=extrinsic_window)
        self.rig = self._load_rig(calib) if calib and extrinsic_period > 0 else None
        # nice 19: the check can wait, inference on the same cores cannot
        self.extrinsics = LatestWorker(self._check_extrinsics, extrinsic_period if self.rig is not None else 0.0,
                                       "extrinsic check", nice=19)
        self._last_cloud: tuple[int, object] | None = None  # (stamp ns, points) of the newest valid cloud
        self._last_image: tuple[int, object] | None = None
        self._checked_stamp: int | None = None
        self.diag = DiagnosticsPublisher(self, hardware_id="sensors")
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/markers", output_qos(depth=2))
        reliable = declare(self, "reliable_input", False,
                           "Subscribe the sensors reliably (replay for evaluation) instead of best effort (live)")
        self.create_subscription(PointCloud2, "~/input/pointcloud", self.on_cloud, input_qos(reliable))
        self.create_subscription(Image, "~/input/image", self.on_image, input_qos(reliable))
        self.create_timer(period, self.publish_health, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.cloud_topic = self.resolve_topic_name("~/input/pointcloud")
        self.image_topic = self.resolve_topic_name("~/input/image")
        self.get_logger().info(f"watching {self.cloud_topic} and {self.image_topic}")

    def _load_rig(self, calib: str) -> Rig | None:
        """The rig of ``calibration_file``; an unreadable one is logged and reported, the other checks go on."""
        try:
            return Rig.from_yaml(resolve(calib))
        except PerceptionError as exc:
            self.get_logger().error(f"extrinsic check off: {exc}")
            self.monitor.observe_extrinsics(ExtrinsicCheck.not_judged(f"cannot load the rig: {exc}"))
            return None

    def _offer_pair(self) -> None:
        """Hand the newest (cloud, image) pair within ``sync_slop_s`` to the extrinsic check, once per cloud."""
        if self._last_cloud is None or self._last_image is None or not self.extrinsics.due():
            return
        (cloud_ns, points), (image_ns, image) = self._last_cloud, self._last_image
        if cloud_ns == self._checked_stamp or abs(cloud_ns - image_ns) > self.sync_slop_ns:
            return
        if self.extrinsics.offer((points, image)):
            self._checked_stamp = cloud_ns

    def _check_extrinsics(self, pair: tuple) -> None:
        points, image = pair
        if image.shape[:2] != (self.rig.height, self.rig.width):
            check = ExtrinsicCheck.not_judged(f"image {image.shape[1]}x{image.shape[0]} does not match the rig's "
                                              f"{self.rig.width}x{self.rig.height} ({self.rig.source})")
        else:
            check = extrinsic_consistency(points, image, self.rig)
        self.monitor.observe_extrinsics(check)

    def _observe(self, sensor: str, header: Header, metrics: dict[str, float]) -> None:
        # Rates and staleness on wall time (also after a replayed bag ends); latency on the node's clock,
        # which follows /clock when replaying with use_sim_time.
        stamp = stamp_to_ns(header.stamp) * 1e-9
        latency = self.get_clock().now().nanoseconds * 1e-9 - stamp
        self.monitor.observe(sensor, time.monotonic(), stamp, metrics, latency=latency)

    def on_cloud(self, msg: PointCloud2) -> None:
        """Convert, measure, record; a malformed cloud is reported and skipped."""
        try:
            points = pointcloud_to_points(msg, self.cloud_topic)
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.cloud_topic)
            return
        self._observe("lidar", msg.header, cloud_metrics(points))
        if self.rig is not None and len(points):
            self._last_cloud = (stamp_to_ns(msg.header.stamp), points)
            self._offer_pair()

    def on_image(self, msg: Image) -> None:
        """Convert, measure exposure and blur, record; a malformed image is reported and skipped."""
        try:
            image = image_to_array(msg, self.image_topic)
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.image_topic)
            return
        self._observe("camera", msg.header, image_metrics(image, self.image_stride))
        if self.rig is not None:
            self._last_image = (stamp_to_ns(msg.header.stamp), image)
            self._offer_pair()

    def publish_health(self) -> None:
        """Grade every sensor and publish one status per sensor (plus the text marker for RViz)."""
        checks = self.monitor.checks(time.monotonic())
        statuses, lines = [], []
        for sensor in ("lidar", "camera", "sync", "calibration"):
            level, message = summarize(checks, sensor)
            values = {c.metric: c.value for c in checks if c.sensor == sensor}
            statuses.append(make_status(f"{self.get_name()}: {sensor}", int(level), message, sensor, values))
            lines.append((level, f"{sensor}: {level.name} {message if level != Level.OK else ''}".rstrip()))
        if self.extrinsics.errors:
            statuses.append(make_status(f"{self.get_name()}: extrinsic check", ERROR,
                                        f"{self.extrinsics.errors} failed check(s); last: {self.extrinsics.last_error}",
                                        "calibration", {"extrinsic_check_errors": self.extrinsics.errors}))
        bad = sum(self.diag.bad_messages.values())
        statuses.append(make_status(f"{self.get_name()}: input", ERROR if bad else OK,
                                    f"{bad} malformed message(s); last: {self.diag.last_error}" if bad else "ok",
                                    "sensors", {"malformed_messages": bad}))
        self.diag.publish(statuses)
        self.marker_pub.publish(self._text_markers(lines))

    def _text_markers(self, lines: list[tuple[Level, str]]) -> MarkerArray:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="base_link")
        out = MarkerArray()
        for i, (level, text) in enumerate(lines):
            m = Marker(header=header, ns="sensor_health", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                       text=text, color=ColorRGBA(r=_LEVEL_COLORS[level][0], g=_LEVEL_COLORS[level][1],
                                                  b=_LEVEL_COLORS[level][2], a=1.0))
            m.pose.position.z = 4.0 - 0.7 * i
            m.pose.orientation.w = 1.0
            m.scale.z = 0.5
            out.markers.append(m)
        return out


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM."""
    return run_node("sensor_health", SensorHealthNode, args, on_stop=lambda node: node.extrinsics.stop())


if __name__ == "__main__":
    sys.exit(main())
