"""A recording subscriber for tests, benchmarks and quick looks at the graph (``python -m ros_nodes.probe``)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from ros_nodes.paths import DDS_KEYS, dds_env
from ros_nodes.qos import output_qos


@dataclass
class Received:
    """One received message and when it arrived (``time.monotonic()`` and ``time.time()``)."""

    msg: Any
    monotonic: float
    wall: float


class Probe:
    """Subscribes to topics on its own context and executor thread and keeps what arrives.

    Use as a context manager: ``with Probe({"/perception/detections": Detection3DArray}) as p: p.wait_for(...)``.
    """

    def __init__(self, topics: dict[str, type], qos: QoSProfile | None = None, name: str = "probe",
                 domain_id: int | None = None) -> None:
        os.environ.update({k: v for k, v in dds_env().items() if k in DDS_KEYS})  # keep DDS on this machine
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.received: dict[str, list[Received]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._callback(topic), qos or output_qos(depth=50))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us
                return

    def _callback(self, topic: str) -> Callable[[Any], None]:
        def on_msg(msg: Any) -> None:
            with self._lock:
                self.received[topic].append(Received(msg, time.monotonic(), time.time()))
        return on_msg

    def messages(self, topic: str) -> list[Any]:
        """Messages received so far on ``topic``."""
        with self._lock:
            return [r.msg for r in self.received[topic]]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``predicate`` until it is true or ``timeout_s`` passes; returns its last value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())

    def publisher(self, cls: type, topic: str, qos: QoSProfile | None = None) -> Any:
        """A publisher on the probe's node."""
        return self.node.create_publisher(cls, topic, qos or output_qos())

    def close(self) -> None:
        """Shut the probe's context down."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Stop a node process like Ctrl-C (SIGINT), killing it when it has not exited within ``timeout_s``;
    returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def main() -> int:
    """Print a one-line summary per /perception/detections and /diagnostics message (for a quick look)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from trustworthy_perception_msgs.msg import Detection3DArray

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    topics = {"/perception/detections": Detection3DArray, "/diagnostics": DiagnosticArray}
    with Probe(topics) as probe:
        end = time.monotonic() + args.seconds
        seen = dict.fromkeys(topics, 0)
        while time.monotonic() < end:
            time.sleep(0.1)
            for topic in topics:
                msgs = probe.messages(topic)
                for m in msgs[seen[topic]:]:
                    if topic == "/diagnostics":
                        for s in m.status:
                            print(f"{topic} {s.name} level={s.level[0]} {s.message}")
                    else:
                        print(f"{topic} stamp={m.header.stamp.sec}.{m.header.stamp.nanosec:09d} "
                              f"n={len(m.detections)} degraded={list(m.degraded_reasons)}")
                seen[topic] = len(msgs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
