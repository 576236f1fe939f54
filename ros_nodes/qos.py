"""QoS profiles shared by the nodes (one place, so publishers and subscribers always match)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: History of a reliable (evaluation) sensor subscription: a busy executor must not let KEEP_LAST overwrite a
#: delivered cloud before its callback ran.
RELIABLE_INPUT_DEPTH = 20


def sensor_qos(depth: int = 2) -> QoSProfile:
    """Sensor inputs: best effort (matches both reliable and best-effort publishers), keep the newest few."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def input_qos(reliable: bool = False, depth: int = 2) -> QoSProfile:
    """Sensor subscriptions: :func:`sensor_qos` on the vehicle; reliable when replaying for evaluation.

    A reliable subscription asks the (reliable) publisher to resend lost fragments of big clouds, so a
    replay loses no frame to a busy machine; it does not match best-effort publishers (live drivers).
    """
    if not reliable:
        return sensor_qos(depth)
    return output_qos(max(depth, RELIABLE_INPUT_DEPTH))


def output_qos(depth: int = 10) -> QoSProfile:
    """Node outputs (detections, markers, images, features): reliable, volatile."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos(depth: int = 1) -> QoSProfile:
    """Latched topics such as /tf_static: reliable + transient local, so late joiners get the last message."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def diagnostics_qos() -> QoSProfile:
    """/diagnostics, as diagnostic_updater publishes it."""
    return output_qos(depth=10)
