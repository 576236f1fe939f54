"""crowd_counter node: counts people in camera images with the density-map model (perception/crowd).

Purpose: people count with an uncertainty interval for a stop, platform or cabin camera.

Inner workings: the newest image is kept; a timer at ``rate_hz`` converts it (``ros_nodes.convert``), runs
:class:`perception.crowd.api.CrowdCounter` (resize to the model's ``max_side``, density map at stride 8, count =
its sum, conformal interval from the model folder) and publishes; older, unprocessed images are dropped and
counted. A malformed image is logged, reported on ``/diagnostics`` (``<node>: input``, naming topic and field) and
skipped; the node carries on.

| input | type | |
|---|---|---|
| ``~/input/image`` | sensor_msgs/Image | rgb8, bgr8 or mono8 |

| output | type | |
|---|---|---|
| ``~/output/count`` | trustworthy_perception_msgs/CrowdCount | count, lower, upper, confidence; image header |
| ``~/output/overlay`` | sensor_msgs/Image | rgb8 image as the model saw it + density heat map |
| ``/diagnostics`` | diagnostic_msgs/DiagnosticArray | ``<node>: pipeline`` and ``<node>: input`` statuses |

Parameters (``config/crowd_counter.param.yaml``): ``model_dir``, ``rate_hz``, ``num_threads``, ``publish_overlay``,
``diagnostics_period_s``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image
from trustworthy_perception_msgs.msg import CrowdCount

from perception.crowd.api import CrowdCounter, density_overlay
from perception.errors import PerceptionError
from ros_nodes.convert import array_to_image, image_to_array
from ros_nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, make_status
from ros_nodes.params import declare
from ros_nodes.paths import resolve
from ros_nodes.qos import output_qos, sensor_qos
from ros_nodes.runtime import run_node


class CrowdCounterNode(Node):
    """Image in, CrowdCount + overlay + diagnostics out, at most ``rate_hz`` images per second."""

    def __init__(self, **kwargs) -> None:
        super().__init__("crowd_counter", **kwargs)
        model_dir = declare(self, "model_dir", "models/crowd_default", "Crowd model folder (relative -> share)")
        rate = declare(self, "rate_hz", 2.0, "Images counted per second at most", low=0.1, high=100.0)
        threads = declare(self, "num_threads", 1, "torch intra-op threads", low=1, high=64)
        self.publish_overlay = declare(self, "publish_overlay", True, "Publish the density overlay image")
        period = declare(self, "diagnostics_period_s", 1.0, "Period of /diagnostics reports (s)", low=0.05,
                         high=60.0)
        self.counter = CrowdCounter(resolve(model_dir), threads=threads)
        self.counter(np.zeros((64, 64, 3), np.uint8))  # warm-up
        self.diag = DiagnosticsPublisher(self, hardware_id="camera")
        self.count_pub = self.create_publisher(CrowdCount, "~/output/count", output_qos())
        self.overlay_pub = self.create_publisher(Image, "~/output/overlay", output_qos(depth=2))
        self.image_topic = self.resolve_topic_name("~/input/image")
        self.create_subscription(Image, "~/input/image", self.on_image, sensor_qos())
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / rate, self.process, clock=steady)
        self.create_timer(period, self.publish_diagnostics, clock=steady)
        self._pending: Image | None = None
        self.processed = 0
        self.dropped = 0
        self.latencies: list[float] = []
        self.last_count: float | None = None
        self.get_logger().info(f"counting {self.image_topic} with {self.counter.model_dir} at <= {rate} Hz")

    def on_image(self, msg: Image) -> None:
        """Keep the newest image; an unprocessed older one is dropped."""
        if self._pending is not None:
            self.dropped += 1
        self._pending = msg

    def process(self) -> None:
        """Count the newest image (if any) and publish; a malformed image is reported and skipped."""
        msg, self._pending = self._pending, None
        if msg is None:
            return
        t0 = time.perf_counter()
        try:
            rgb = image_to_array(msg, self.image_topic)
            result, small = self.counter(rgb)
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.image_topic)
            return
        self.latencies = (self.latencies + [time.perf_counter() - t0])[-100:]
        self.processed += 1
        self.last_count = result.count
        self.count_pub.publish(CrowdCount(header=msg.header, count=result.count, lower=result.low,
                                          upper=result.high, confidence=self.counter.level))
        if self.publish_overlay and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(array_to_image(density_overlay(small, result.density), msg.header))

    def publish_diagnostics(self) -> None:
        """``pipeline`` (counts, drops, latency) and ``input`` (malformed images) statuses."""
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        values = {"processed": self.processed, "dropped": self.dropped,
                  "latency_p50_ms": float(np.percentile(lat, 50) * 1e3),
                  "latency_p99_ms": float(np.percentile(lat, 99) * 1e3),
                  "last_count": float(self.last_count) if self.last_count is not None else "none"}
        level, text = (OK, "ok") if self.processed else (WARN, "no image counted yet")
        bad = sum(self.diag.bad_messages.values())
        self.diag.publish([
            make_status(f"{self.get_name()}: pipeline", level, text, "camera", values),
            make_status(f"{self.get_name()}: input", ERROR if bad else OK,
                        f"{bad} malformed image(s); last: {self.diag.last_error}" if bad else "ok", "camera",
                        {"malformed_messages": bad}),
        ])


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM."""
    return run_node("crowd_counter", CrowdCounterNode, args)


if __name__ == "__main__":
    sys.exit(main())
