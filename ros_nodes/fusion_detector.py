"""fusion_detector node: LiDAR (+ camera) -> Detection3DArray, markers, attention images, features.

Thin: messages are validated and converted at the edge (:mod:`ros_nodes.convert`), paired by stamp
(:mod:`ros_nodes.sync`), and the newest fused frame is handed to a worker thread that calls
:class:`perception.detector.api.FusionDetector` and publishes. When inference falls behind, older frames
are dropped (a one-slot queue) and counted on /diagnostics. See ros_nodes/README.md.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from trustworthy_perception_msgs.msg import Detection3DArray, DetectionFeatures
from visualization_msgs.msg import MarkerArray

from perception.detector.api import FusionDetector
from perception.detector.result import DetectionResult
from perception.errors import PerceptionError
from perception.frame import Frame
from perception.rig import Rig
from ros_nodes.convert import (
    array_to_image,
    camera_info_to_rig,
    features_to_msg,
    image_to_array,
    make_header,
    pointcloud_to_points,
    result_to_msg,
    stamp_to_ns,
)
from ros_nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, make_status
from ros_nodes.markers import detections_to_markers
from ros_nodes.params import declare
from ros_nodes.paths import resolve
from ros_nodes.qos import input_qos, output_qos, sensor_qos
from ros_nodes.runtime import run_node
from ros_nodes.sync import ApproximateTimeSync, Match
from ros_nodes.xai_worker import XaiWorker


@dataclass
class _Job:
    frame: Frame
    header: Header
    reasons: list[str]
    received: float  # monotonic time the cloud arrived


@dataclass
class _Stats:
    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced in the one-slot queue before inference could take them
    degraded: int = 0
    inference_errors: int = 0
    last_error: str = ""
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=200))  # cloud arrival -> published
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=200))


class FusionDetectorNode(Node):
    """Runs the fusion detector on synchronised LiDAR + camera input and publishes its evidence."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fusion_detector", **kwargs)
        model_dir = declare(self, "model_dir", "models/fusion_default", "Model folder (weights + config)")
        self.backend = declare(self, "backend", "auto",
                               "Inference backend: auto (fastest that passed parity in perception bench) | torch | "
                               "onnxruntime | onnxruntime-int8 | onnxruntime-fp16 | onnxruntime-cuda | "
                               "onnxruntime-trt | tensorrt")
        calib = declare(self, "calibration_file", "calibration/sim_default.yaml",
                        "Rig YAML: LiDAR mounting and LiDAR->camera extrinsics (intrinsics too unless CameraInfo)")
        self.use_camera_info = declare(self, "use_camera_info", True, "Take intrinsics from ~/input/camera_info")
        slop = declare(self, "sync_slop_s", 0.05, "Largest camera-LiDAR stamp gap of a fused pair (s)",
                       low=0.0, high=1.0)
        timeout = declare(self, "camera_timeout_s", 0.1, "Wait this long for the image, then go LiDAR-only (s)",
                          low=0.0, high=5.0)
        queue = declare(self, "queue_size", 4, "Clouds waiting for their image (bounded)", low=1, high=100)
        self.min_probability = declare(self, "min_probability", 0.3, "Markers: smallest probability drawn",
                                       low=0.0, high=1.0)
        self.xai_period_s = declare(self, "xai_period_s", 1.0, "Attention images at most this often (0 = off)",
                                    low=0.0, high=3600.0)
        diag_period = declare(self, "diagnostics_period_s", 1.0, "/diagnostics period (s)", low=0.05, high=60.0)
        warmup = declare(self, "warmup", True, "Run one inference on a synthetic frame before subscribing")
        threads = declare(self, "num_threads", 2, "torch intra-op threads", low=1, high=64)
        reliable = declare(self, "reliable_input", False,
                           "Subscribe the sensors reliably (replay for evaluation) instead of best effort (live)")

        self.base_rig = Rig.from_yaml(resolve(calib))
        self.rig = self.base_rig
        self._camera_info_key: tuple | None = None
        self.detector = self._load(resolve(model_dir), self.backend, threads)
        self.model_id = self.detector.model_id or f"{Path(model_dir).name}@{self.backend}"
        self.class_names = tuple(self.detector.cfg.classes)

        self.diag = DiagnosticsPublisher(self, hardware_id=self.model_id)
        qos = output_qos()
        self.objects_pub = self.create_publisher(Detection3DArray, "~/output/objects", qos)
        self.markers_pub = self.create_publisher(MarkerArray, "~/output/markers", qos)
        self.features_pub = self.create_publisher(DetectionFeatures, "~/output/features", qos)
        self.xai_image_pub = self.create_publisher(Image, "~/output/xai/image", output_qos(depth=2))
        self.xai_bev_pub = self.create_publisher(Image, "~/output/xai/bev", output_qos(depth=2))

        self.sync = ApproximateTimeSync(slop_s=slop, timeout_s=timeout, queue_size=queue)
        self.stats = _Stats()
        # Live: a one-slot queue (the newest frame wins, replaced ones are counted as dropped). Evaluation
        # (reliable_input): every frame waits its turn, so a replay loses none to a busy machine.
        self.lossless = bool(reliable)
        self._pending: deque[_Job] = deque()
        self._cv = threading.Condition()
        self._running = True
        # Attention pictures render on their own thread, after the detections are out (ros_nodes/xai_worker.py).
        self.xai = XaiWorker(self._publish_xai, self.xai_period_s, self.min_probability)
        if warmup:
            self._warmup()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()

        self.cloud_topic = self.resolve_topic_name("~/input/pointcloud")
        self.image_topic = self.resolve_topic_name("~/input/image")
        self.info_topic = self.resolve_topic_name("~/input/camera_info")
        self.create_subscription(PointCloud2, "~/input/pointcloud", self.on_cloud, input_qos(reliable))
        self.create_subscription(Image, "~/input/image", self.on_image, input_qos(reliable))
        self.create_subscription(CameraInfo, "~/input/camera_info", self.on_camera_info, sensor_qos())
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # timeouts and reports run on wall time, also in replay
        self.create_timer(0.02, self.on_poll, clock=steady)
        self.create_timer(diag_period, self.publish_diagnostics, clock=steady)
        self.get_logger().info(f"ready: model {model_dir} ({self.backend}), rig {self.base_rig.name}; "
                               f"listening on {self.cloud_topic}, {self.image_topic}")

    # ------------------------------------------------------------------ set-up
    def _load(self, model_dir: Path, backend: str, threads: int) -> FusionDetector:
        t0 = time.perf_counter()
        detector = FusionDetector.load(model_dir, backend=backend, num_threads=threads)
        self.get_logger().info(f"loaded {detector.model_id} from {model_dir} in {time.perf_counter() - t0:.1f} s")
        return detector

    def _warmup(self) -> None:
        rng = np.random.default_rng(0)
        n = 20000
        points = np.column_stack([rng.uniform(2, 60, n), rng.uniform(-30, 30, n), rng.uniform(-1.5, 1.0, n),
                                  rng.uniform(0, 1, n)]).astype(np.float32)
        image = np.zeros((self.rig.height, self.rig.width, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        self.detector(Frame(points=points, image=image, rig=self.rig))
        self.get_logger().info(f"warm-up inference {1e3 * (time.perf_counter() - t0):.0f} ms")

    # ------------------------------------------------------------------ inputs (executor thread)
    def on_cloud(self, msg: PointCloud2) -> None:
        """Validate and convert a cloud, queue it for its image."""
        try:
            points = pointcloud_to_points(msg, self.cloud_topic)
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.cloud_topic)
            return
        self.stats.received += 1
        self._dispatch(self.sync.add_primary((points, msg.header, time.monotonic()), stamp_to_ns(msg.header.stamp)))

    def on_image(self, msg: Image) -> None:
        """Validate and convert an image (size checked against the rig), offer it to the synchroniser."""
        try:
            image = image_to_array(msg, self.image_topic)
            self.rig.check_image(image, f"{self.image_topic}:width")
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.image_topic)
            return
        self._dispatch(self.sync.add_secondary(image, stamp_to_ns(msg.header.stamp)))

    def on_camera_info(self, msg: CameraInfo) -> None:
        """Adopt the camera's intrinsics (rebuilding the rig only when they change)."""
        if not self.use_camera_info:
            return
        key = (tuple(msg.k), tuple(msg.d), msg.width, msg.height, msg.distortion_model, msg.header.frame_id)
        if key == self._camera_info_key:
            return
        try:
            self.rig = camera_info_to_rig(msg, self.base_rig, self.info_topic)
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.info_topic)
            return
        self._camera_info_key = key
        self.get_logger().info(f"camera intrinsics from {self.info_topic}: {msg.width}x{msg.height}")

    def on_poll(self) -> None:
        """Release clouds whose image did not come in time (LiDAR-only)."""
        self._dispatch(self.sync.poll())

    def _dispatch(self, matches: list[Match]) -> None:
        for m in matches:
            points, header, received = m.primary
            image = m.secondary
            reasons = [m.reason] if m.reason else []
            frame = Frame(points=points, image=image, rig=self.rig, stamp_ns=m.primary_stamp_ns,
                          frame_id=header.frame_id, image_stamp_ns=m.secondary_stamp_ns)
            with self._cv:
                if self._pending and not self.lossless:
                    self._pending.clear()
                    self.stats.dropped += 1
                self._pending.append(_Job(frame, header, reasons, received))
                self._cv.notify()

    # ------------------------------------------------------------------ inference (worker thread)
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._pending and self._running:
                    self._cv.wait()
                if not self._running:
                    return
                job = self._pending.popleft()
            try:
                self._process(job)
            except Exception as exc:  # a failing frame must not take the node down; report it
                if not self._running:
                    return  # shutting down: publishers may be gone
                self.stats.inference_errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"inference failed on frame {job.frame.stamp_ns}: {self.stats.last_error}")

    def _process(self, job: _Job) -> None:
        t0 = time.perf_counter()
        result: DetectionResult = self.detector(job.frame)
        self.stats.inference_ms.append(1e3 * (time.perf_counter() - t0))
        if not self._running:
            return
        if not result.model_id:
            result.model_id = self.model_id
        header = job.header
        msg = result_to_msg(result, header, self.class_names, extra_degraded=job.reasons)
        self.objects_pub.publish(msg)
        self.stats.latencies_ms.append(1e3 * (time.monotonic() - job.received))
        self.stats.processed += 1
        self.stats.degraded += int(msg.degraded)
        self.markers_pub.publish(detections_to_markers(result.detections, header, self.min_probability,
                                                       camera_used=result.camera_used))
        self.features_pub.publish(features_to_msg(result, header))
        self.xai.offer(job.frame, result, (header, job.frame.rig.camera_frame if job.frame.rig else ""))

    def _publish_xai(self, image: np.ndarray, bev: np.ndarray, context: object) -> None:
        """Publish the XAI worker's pictures (its thread). Without a camera image the camera picture is a dark
        canvas saying LiDAR-only, with the projected boxes: RViz keeps showing them."""
        header, camera_frame = context
        stamp_ns = stamp_to_ns(header.stamp)
        self.xai_bev_pub.publish(array_to_image(bev, make_header(stamp_ns, header.frame_id)))
        self.xai_image_pub.publish(array_to_image(image, make_header(stamp_ns, camera_frame)))

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        """One status for the pipeline (counters, latency, drops) and one for the inputs."""
        s = self.stats
        lat = np.asarray(s.latencies_ms) if s.latencies_ms else np.zeros(1)
        inf = np.asarray(s.inference_ms) if s.inference_ms else np.zeros(1)
        level, message = OK, "ok"
        if s.inference_errors:
            level, message = ERROR, f"{s.inference_errors} inference error(s); last: {s.last_error}"
        elif s.dropped:
            level, message = WARN, f"falling behind: {s.dropped} frame(s) dropped"
        values = {"model_id": self.model_id, "frames_received": s.received, "frames_processed": s.processed,
                  "frames_dropped": s.dropped, "sync_overflow": self.sync.overflowed, "frames_degraded": s.degraded,
                  "inference_errors": s.inference_errors, "inference_ms_p50": float(np.percentile(inf, 50)),
                  "inference_ms_p99": float(np.percentile(inf, 99)), "latency_ms_p50": float(np.percentile(lat, 50)),
                  "latency_ms_p99": float(np.percentile(lat, 99)),
                  "xai_render_ms_p50": float(np.percentile(self.xai.render_ms, 50)) if self.xai.render_ms else 0.0,
                  "xai_errors": self.xai.errors}
        bad = sum(self.diag.bad_messages.values())
        statuses = [
            make_status(f"{self.get_name()}: pipeline", level, message, self.model_id, values),
            make_status(f"{self.get_name()}: input", ERROR if bad else OK,
                        f"{bad} malformed message(s); last: {self.diag.last_error}" if bad else "ok", self.model_id,
                        {"malformed_messages": bad, **{k: v for k, v in self.diag.bad_messages.items()}}),
        ]
        self.diag.publish(statuses)

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop the worker thread; False when an inference is still running after ``timeout_s``."""
        with self._cv:
            self._running = False
            self._cv.notify()
        self.xai.stop()
        self._worker.join(timeout=timeout_s)
        return not self._worker.is_alive()


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (then exit 0); a model or calibration error ends it with status 2."""
    stopped: list[bool] = []
    status = run_node("fusion_detector", FusionDetectorNode, args, on_stop=lambda node: stopped.append(node.stop()))
    if status:
        return status
    finished = all(stopped)
    if not finished:
        print("fusion_detector: abandoning the inference in progress", file=sys.stderr, flush=True)
    # Everything is closed. Skip interpreter teardown: with torch and rclpy loaded its garbage collection was
    # seen to hang (busy machine) or abort (an inference still running), turning a clean stop into SIGTERM.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
