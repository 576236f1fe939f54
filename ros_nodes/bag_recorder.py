"""bag_recorder node: record the graph's outputs into a new rosbag2 while a bag is replayed.

Records every ``/perception/*`` topic (a fixed list, plus any other that appears under ``discover_prefix``),
``/diagnostics``, the ground truth and the player's status, and one ``std_msgs/Header`` per LiDAR cloud
received (:data:`perception.io.recording.ARRIVAL_TOPIC`: the latency reference) — as received, serialized.
The bag is closed (index + metadata.yaml written) on SIGINT/SIGTERM and on the launcher's death
(``run_node``'s stop path), so a stopped replay leaves a readable recording. See ros_nodes/README.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import Header, String

from perception.io.bag import FRAME_INFO_TOPIC, GT_TOPIC, LIDAR_TOPIC, TF_STATIC_TOPIC
from perception.io.recording import (
    ARRIVAL_TOPIC,
    DETECTIONS_TOPIC,
    RECORDER_STATUS_TOPIC,
    SOURCE_KEY,
    STATUS_TOPIC,
    RecordingWriter,
    header_stamp_of_cdr,
)
from ros_nodes.bag_player import message_class
from ros_nodes.params import declare
from ros_nodes.qos import latched_qos, output_qos
from ros_nodes.runtime import run_node

#: Topics recorded from the start (type known before their publishers exist), topic -> type.
DEFAULT_TOPICS: dict[str, str] = {
    "/perception/detections": "trustworthy_perception_msgs/msg/Detection3DArray",
    "/perception/features": "trustworthy_perception_msgs/msg/DetectionFeatures",
    "/perception/markers": "visualization_msgs/msg/MarkerArray",
    "/perception/xai/image": "sensor_msgs/msg/Image",
    "/perception/xai/bev": "sensor_msgs/msg/Image",
    "/perception/ood": "trustworthy_perception_msgs/msg/OodScores",
    "/perception/ood/markers": "visualization_msgs/msg/MarkerArray",
    "/perception/health/markers": "visualization_msgs/msg/MarkerArray",
    "/perception/crowd/count": "trustworthy_perception_msgs/msg/CrowdCount",
    "/perception/crowd/overlay": "sensor_msgs/msg/Image",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    GT_TOPIC: "visualization_msgs/msg/MarkerArray",
    FRAME_INFO_TOPIC: "std_msgs/msg/String",
    TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage",
    STATUS_TOPIC: "std_msgs/msg/String",
}
LATCHED = {TF_STATIC_TOPIC, STATUS_TOPIC}


class BagRecorderNode(Node):
    """Subscribes (raw, reliable) to the recorded topics and appends every message to the bag."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bag_recorder", **kwargs)
        out = declare(self, "bag", "", "Recording to write (a new rosbag2 folder)")
        force = declare(self, "force", False, "Replace an existing recording")
        storage = declare(self, "storage", "mcap", "mcap | sqlite3")
        source = declare(self, "source_bag", "", "The bag being replayed (stored in the recording's metadata)")
        self.prefix = declare(self, "discover_prefix", "/perception/", "Also record any new topic under this prefix")
        self.cloud_topic = declare(self, "cloud_topic", LIDAR_TOPIC, "Clouds whose arrival is logged (not stored)")
        if not out:
            from perception.errors import ConfigError

            raise ConfigError("no recording path: set the bag parameter", f"{self.get_fully_qualified_name()}:bag")
        if source and Path(out).resolve().is_relative_to(Path(source).resolve()):
            from perception.errors import ConfigError

            raise ConfigError(f"the recording must not go inside the replayed bag {source}",
                              f"{self.get_fully_qualified_name()}:bag")
        self._log_to_file(Path(f"{Path(out).resolve()}.recorder.log"))
        self.writer = RecordingWriter(out, force=force, storage=storage,
                                      custom_data={SOURCE_KEY: str(source)} if source else None)
        self.writer.add_topic(ARRIVAL_TOPIC, "std_msgs/msg/Header")
        self._subs: dict[str, object] = {}
        for topic, msgtype in DEFAULT_TOPICS.items():
            self._subscribe(topic, msgtype)
        # Raw: only the stamp is read from the cloud's CDR bytes, the cloud itself is not stored.
        self.create_subscription(message_class("sensor_msgs/msg/PointCloud2"), self.cloud_topic, self._on_cloud,
                                 output_qos(depth=50), raw=True)
        self.create_timer(1.0, self._discover)
        # Progress for whoever runs the replay: latched state, so a lost update costs nothing.
        self._arrived: set[int] = set()
        self._answered: set[int] = set()
        self._progress_pub = self.create_publisher(String, RECORDER_STATUS_TOPIC, latched_qos(depth=1))
        self._last_progress = ""
        self.create_timer(0.2, self._publish_progress)
        self.get_logger().info(f"recording into {self.writer.path}")

    def _log_to_file(self, path: Path) -> None:
        """Send this process's output to ``path``: the recorder must outlive its launcher (killed launcher =
        dead output pipe, and a node writing to it was seen to die before closing its bag)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.get_logger().info(f"recorder output continues in {path}")
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        if topic in self._subs or not self.writer.add_topic(topic, msgtype, latched=topic in LATCHED):
            return
        qos = latched_qos(depth=10) if topic in LATCHED else output_qos(depth=100)
        self._subs[topic] = self.create_subscription(message_class(msgtype), topic,
                                                     lambda data, t=topic: self._on_message(t, data), qos, raw=True)

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic.startswith(self.prefix) and topic not in self._subs and types:
                self.get_logger().info(f"recording {topic} ({types[0]}) too")
                self._subscribe(topic, types[0])

    def _on_message(self, topic: str, data: bytes) -> None:
        self.writer.write(topic, time.time_ns(), data)
        if topic == DETECTIONS_TOPIC:
            self._answered.add(header_stamp_of_cdr(data))

    def _publish_progress(self) -> None:
        text = json.dumps({"clouds_received": len(self._arrived), "answered": len(self._answered),
                           "messages": self.writer.total})
        if text != self._last_progress:
            self._last_progress = text
            self._progress_pub.publish(String(data=text))

    def _on_cloud(self, data: bytes) -> None:
        now = time.time_ns()
        stamp = header_stamp_of_cdr(data)
        self._arrived.add(stamp)
        header = Header()
        header.stamp.sec, header.stamp.nanosec = stamp // 1_000_000_000, stamp % 1_000_000_000
        from rclpy.serialization import serialize_message

        self.writer.write(ARRIVAL_TOPIC, now, serialize_message(header))

    def stop(self) -> None:
        """Close the recording (index + metadata) and say what it holds."""
        path = self.writer.close()
        counts = ", ".join(f"{t} {n}" for t, n in sorted(self.writer.counts.items()) if n)
        self.get_logger().info(f"closed {path}: {self.writer.total} messages ({counts})")


def main(args: list[str] | None = None) -> int:
    """Record until SIGINT/SIGTERM (or the launcher's death), then close the bag."""
    return run_node("bag_recorder", BagRecorderNode, args, on_stop=lambda node: node.stop())


if __name__ == "__main__":
    sys.exit(main())
