"""bag_player node: publish a rosbag2 (mcap / sqlite3, read with ``rosbags``) on its original topics.

The serialized CDR bytes are published as they are (no deserialisation), with the original timing scaled
by ``rate``; /tf_static is latched (transient local) and /clock follows the bag's time so nodes running
with ``use_sim_time`` see the recording's clock. See ros_nodes/README.md.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String

from perception.errors import DataError
from ros_nodes.convert import ns_to_stamp
from ros_nodes.params import declare
from ros_nodes.paths import graph_id, resolve
from ros_nodes.qos import latched_qos, output_qos
from ros_nodes.runtime import READY_TOPIC, run_node

LATCHED_TOPICS = ("/tf_static",)
#: The player's state (std_msgs/String JSON, latched): ``playing``, then ``done`` or ``failed`` with counts.
STATUS_TOPIC = "/replay/status"
#: Every awaited node must stay ready (all its subscriptions matched) this long before playing (s).
READY_SETTLE_S = 1.0
#: The recorder's fully qualified name in replay.launch.yaml.
RECORDER_NODE = "/replay/bag_recorder"


def message_class(type_name: str) -> type:
    """The rclpy message class of ``pkg/msg/Type``; DataError when its package is not installed."""
    pkg, _, name = type_name.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"message type {type_name} is not installed", type_name) from exc


class BagPlayerNode(Node):
    """Replays a bag in real time (times ``rate``), optionally looping, on a worker thread."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bag_player", **kwargs)
        bag = declare(self, "bag", "data/default_drive", "rosbag2 folder (mcap or sqlite3) to play")
        self.rate = declare(self, "rate", 1.0, "Playback speed factor", low=0.01, high=100.0)
        self.loop = declare(self, "loop", False, "Start again at the end")
        self.start_offset_s = declare(self, "start_offset_s", 0.0, "Skip this much of the bag (s)", low=0.0, high=1e6)
        self.max_gap_s = declare(self, "max_gap_s", 1.0, "Shorten silent gaps (e.g. between recorded drives) to this "
                                 "(s)", low=0.0, high=1e6)
        self.publish_clock = declare(self, "publish_clock", True, "Publish /clock with the bag's time")
        self.clock_hz = declare(self, "clock_hz", 50.0, "/clock rate between messages", low=1.0, high=1000.0)
        self.wait_topic = declare(self, "wait_for_topic", "", "Before playing, wait for subscribers on this topic")
        self.wait_count = declare(self, "wait_for_subscribers", 1, "How many subscribers to wait for", low=0, high=100)
        self.wait_timeout_s = declare(self, "wait_timeout_s", 60.0, "Give up waiting after this long (s)",
                                      low=0.0, high=3600.0)
        nodes = declare(self, "wait_for_nodes", "", "Before playing, wait until these nodes (comma-separated fully "
                        f"qualified names) have announced on {READY_TOPIC} that they are ready")
        self.wait_nodes = {n.strip() for n in nodes.split(",") if n.strip()}
        if declare(self, "wait_for_recorder", False, f"Also wait for {RECORDER_NODE} (replay with recording)"):
            self.wait_nodes.add(RECORDER_NODE)
        self.node_state: dict[str, list[str]] = {}  # node -> its subscriptions not yet matched
        self.graph_id = graph_id()  # count only the announcements of our own graph
        self._foreign: set[str] = set()  # nodes of other graphs already reported
        self._ready_lock = threading.Lock()
        if self.wait_nodes:
            # Deep enough to keep every node's latched announcement until the executor takes it.
            self.create_subscription(String, READY_TOPIC, self._on_ready, latched_qos(depth=100))
        self.status_pub = self.create_publisher(String, STATUS_TOPIC, latched_qos(depth=1))
        skip = declare(self, "skip_topics", "", "Comma-separated topics not to play (e.g. to drop the camera)")
        self.skip = {t.strip() for t in skip.split(",") if t.strip()}
        self.path = resolve(bag)
        self.reader = self._open(self.path)
        self.connections = []
        self.publishers_by_topic = {}
        for conn in self.reader.connections:
            if conn.topic in self.skip:
                continue
            if conn.topic in self.publishers_by_topic:
                self.connections.append(conn)
                continue
            try:
                cls = message_class(conn.msgtype)
            except DataError as exc:
                self.get_logger().warning(f"skipping {conn.topic}: {exc}")
                continue
            qos = latched_qos(depth=1) if conn.topic in LATCHED_TOPICS else output_qos(depth=10)
            self.publishers_by_topic[conn.topic] = self.create_publisher(cls, conn.topic, qos)
            self.connections.append(conn)
        self.clock_pub = self.create_publisher(Clock, "/clock", output_qos(depth=10)) if self.publish_clock else None
        self.published = 0
        self.published_by_topic: dict[str, int] = {}
        self.loops = 0
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._play, name="bag_player", daemon=True)
        self._thread.start()

    def _open(self, path: Path):
        from rosbags.rosbag2 import Reader

        if not path.exists():
            raise DataError("bag not found (make one with `perception demo` or `perception sim --format bag`)",
                            str(path))
        try:
            reader = Reader(path)
            reader.open()
        except Exception as exc:  # rosbags raises its own family; name the bag
            raise DataError(f"cannot open bag: {exc}", str(path)) from exc
        self.get_logger().info(f"playing {path}: {reader.message_count} messages, "
                               f"{reader.duration * 1e-9:.1f} s, topics {sorted(c.topic for c in reader.connections)}")
        return reader

    def stop(self) -> None:
        """Stop the playback thread and close the bag."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.reader.close()

    # ------------------------------------------------------------------ playback (worker thread)
    def _on_ready(self, msg: String) -> None:
        try:
            doc = json.loads(msg.data)
            name, unmatched, graph = str(doc["node"]), list(doc["unmatched"]), str(doc.get("graph", ""))
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f"ignoring a malformed {READY_TOPIC} message: {msg.data[:200]!r}")
            return
        if graph != self.graph_id:
            if name not in self._foreign:
                self._foreign.add(name)
                self.get_logger().warning(f"ignoring {name} on {READY_TOPIC}: it belongs to graph {graph!r}, this "
                                          f"player to {self.graph_id!r} (another graph runs on this ROS domain)")
            return
        with self._ready_lock:
            self.node_state[name] = unmatched
            ready = self.wait_nodes & {n for n, u in self.node_state.items() if not u}
        what = "ready" if not unmatched else f"up, not yet matched on {', '.join(unmatched)}"
        self.get_logger().info(f"{name} is {what} ({len(ready)} of {len(self.wait_nodes)} awaited ready)")

    def _missing(self) -> list[str]:
        with self._ready_lock:
            return sorted(n if n not in self.node_state else f"{n} (unmatched {', '.join(self.node_state[n])})"
                          for n in self.wait_nodes if self.node_state.get(n, ["?"]))

    def _publish_status(self, state: str, **values: object) -> None:
        self.status_pub.publish(String(data=json.dumps({"state": state, "bag": str(self.path), **values})))

    def _wait_for_nodes(self, deadline: float) -> None:
        if not self.wait_nodes:
            return
        ready_since = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._missing():
                ready_since = None
            elif ready_since is None:
                ready_since = time.monotonic()
            elif time.monotonic() - ready_since >= READY_SETTLE_S:
                # Still ready after every node re-checked its matches (each does every 0.25 s) at least once.
                self.get_logger().info(f"every awaited node is ready: {', '.join(sorted(self.wait_nodes))}")
                return
            time.sleep(0.05)
        if not self._stop.is_set():
            missing = self._missing()
            self.get_logger().warning(f"timed out after {self.wait_timeout_s:.0f} s waiting for node(s) "
                                      f"{', '.join(missing)}: playing anyway, frames may be lost")

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.wait_timeout_s
        self._wait_for_nodes(deadline)
        if not self.wait_topic or self.wait_count <= 0:
            return
        while not self._stop.is_set() and time.monotonic() < deadline:
            # Matched subscriptions of our own publisher, not graph discovery: a subscriber the graph already
            # lists may not be matched yet, and what is published before the match is lost to it.
            pub = self.publishers_by_topic.get(self.wait_topic)
            matched = pub.get_subscription_count() if pub is not None else self.count_subscribers(self.wait_topic)
            if matched >= self.wait_count:
                self.get_logger().info(f"{self.wait_count} subscriber(s) on {self.wait_topic}: starting")
                return
            time.sleep(0.05)
        if not self._stop.is_set():
            self.get_logger().warning(f"timed out waiting for {self.wait_count} subscriber(s) on {self.wait_topic}")

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=ns_to_stamp(bag_ns)))

    def _sleep_until(self, wall_due: float, bag_at: Callable[[float], int]) -> bool:
        """Sleep until ``wall_due`` (monotonic), ticking /clock; False when stopped."""
        tick = 1.0 / self.clock_hz
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                return False
            if now >= wall_due:
                return True
            time.sleep(min(tick, wall_due - now))
            self._publish_clock(bag_at(time.monotonic()))

    def _play(self) -> None:
        try:
            # Latched topics once, before anything else (static transforms are written once, at the start).
            for conn, _, raw in self.reader.messages(connections=[c for c in self.connections
                                                                  if c.topic in LATCHED_TOPICS]):
                self.publishers_by_topic[conn.topic].publish(bytes(raw))
            self._wait_for_subscribers()
            self._publish_status("playing")
            while not self._stop.is_set():
                self._play_once()
                self.loops += 1
                if not self.loop:
                    break
            self.get_logger().info(f"finished: {self.published} messages published, {self.loops} pass(es)")
            self._publish_status("done", published=self.published, by_topic=self.published_by_topic)
        except Exception as exc:  # keep the node (and its logs) alive; report the failure
            self.get_logger().error(f"playback failed after {self.published} messages: {exc}")
            self._publish_status("failed", published=self.published, by_topic=self.published_by_topic,
                                 error=f"{self.path}: {exc}")
        finally:
            self.done.set()

    def _play_once(self) -> None:
        start_ns = self.reader.start_time + int(self.start_offset_s * 1e9)
        conns = [c for c in self.connections if c.topic not in LATCHED_TOPICS]
        wall0 = time.monotonic()
        skipped_ns = 0  # bag time cut out of long gaps
        previous_ns = start_ns
        max_gap_ns = int(self.max_gap_s * 1e9)
        for conn, bag_ns, raw in self.reader.messages(connections=conns, start=start_ns):
            if bag_ns - previous_ns > max_gap_ns:
                skipped_ns += bag_ns - previous_ns - max_gap_ns
                self.get_logger().info(f"shortening a {(bag_ns - previous_ns) * 1e-9:.1f} s gap to {self.max_gap_s} s")
            previous_ns = bag_ns

            def bag_at(wall: float, _skip: int = skipped_ns) -> int:
                return start_ns + _skip + int((wall - wall0) * self.rate * 1e9)

            if not self._sleep_until(wall0 + (bag_ns - start_ns - skipped_ns) * 1e-9 / self.rate, bag_at):
                return
            self._publish_clock(bag_ns)
            self.publishers_by_topic[conn.topic].publish(bytes(raw))
            self.published += 1
            self.published_by_topic[conn.topic] = self.published_by_topic.get(conn.topic, 0) + 1


def main(args: list[str] | None = None) -> int:
    """Run the player until the bag ends (unless looping) or SIGINT/SIGTERM."""
    # Keep serving (latched /tf_static, parameters) after the end, like a driver; SIGINT ends it.
    return run_node("bag_player", BagPlayerNode, args, on_stop=lambda node: node.stop())


if __name__ == "__main__":
    sys.exit(main())
