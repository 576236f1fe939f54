"""The one way our nodes run: init rclpy, build the node, spin until SIGINT/SIGTERM, shut down."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from perception.errors import PerceptionError


def run_node(name: str, factory: Callable[[], Node], args: list[str] | None = None,
             on_stop: Callable[[Node], object] | None = None) -> int:
    """Spin the node made by ``factory``; a PerceptionError while building it exits with status 2.

    ``on_stop`` runs after spinning ends (e.g. to join worker threads) and before the node is destroyed.
    """
    rclpy.init(args=args)
    try:
        node = factory()
    except PerceptionError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if on_stop is not None:
            on_stop(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
