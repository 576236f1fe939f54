"""``diagnostic_msgs`` helpers: build statuses and report bad input messages without flooding."""

from __future__ import annotations

import time
from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.publisher import Publisher
from std_msgs.msg import Header

from perception.errors import PerceptionError
from ros_nodes.qos import diagnostics_qos

#: Levels as ints (the message constants are one-byte ``bytes``).
OK, WARN, ERROR, STALE = (ord(DiagnosticStatus.OK), ord(DiagnosticStatus.WARN), ord(DiagnosticStatus.ERROR),
                          ord(DiagnosticStatus.STALE))


def make_status(name: str, level: int, message: str, hardware_id: str = "",
                values: Mapping[str, object] | None = None) -> DiagnosticStatus:
    """A ``DiagnosticStatus``; values are stringified (floats with 4 significant digits)."""
    kv = [KeyValue(key=str(k), value=f"{v:.4g}" if isinstance(v, float) else str(v))
          for k, v in (values or {}).items()]
    return DiagnosticStatus(level=bytes([int(level)]), name=name, message=message, hardware_id=hardware_id,
                            values=kv)


class DiagnosticsPublisher:
    """Publishes ``DiagnosticArray`` on /diagnostics for one node, plus rate-limited bad-input reports."""

    def __init__(self, node: Node, hardware_id: str = "", min_report_interval_s: float = 1.0) -> None:
        self._node = node
        self._pub: Publisher = node.create_publisher(DiagnosticArray, "/diagnostics", diagnostics_qos())
        self.hardware_id = hardware_id
        self._interval = min_report_interval_s
        self._last_report: dict[str, float] = {}
        self.bad_messages: dict[str, int] = {}  # where -> count
        self.last_error = ""

    def publish(self, statuses: list[DiagnosticStatus]) -> None:
        """Publish statuses stamped now."""
        self._pub.publish(DiagnosticArray(header=self._header(), status=statuses))

    def report_bad_input(self, exc: PerceptionError, topic: str) -> None:
        """Log a rejected message and publish an ERROR status naming topic and field (once a second per field)."""
        where = exc.where or topic
        self.bad_messages[where] = self.bad_messages.get(where, 0) + 1
        self.last_error = str(exc)
        now = time.monotonic()
        if now - self._last_report.get(where, -1e9) < self._interval:
            return
        self._last_report[where] = now
        self._node.get_logger().error(f"rejected message: {exc}")
        status = make_status(f"{self._node.get_name()}: input", ERROR, str(exc), self.hardware_id,
                             {"topic": topic, "where": where, "error": type(exc).__name__,
                              "count": self.bad_messages[where]})
        self.publish([status])

    def _header(self) -> Header:
        return Header(stamp=self._node.get_clock().now().to_msg())
