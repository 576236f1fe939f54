"""ood_monitor node: DetectionFeatures -> per-detection and per-frame OOD scores, flags, /diagnostics.

Thin: a message is validated and converted at the edge (:func:`ros_nodes.convert.features_from_msg`),
scored by :class:`perception.ood.monitor.OodMonitor` (statistics in ``<model_dir>/ood``, fitted by
``perception fit-ood``) and published as ``OodScores``. A malformed message is logged, counted and
reported on /diagnostics; it never stops the node. Topics and parameters: perception/ood/README.md.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import ColorRGBA, Header
from trustworthy_perception_msgs.msg import DetectionFeatures, OodScores
from visualization_msgs.msg import Marker, MarkerArray

from perception.detector.result import camera_used
from perception.errors import ConfigError, DataError, PerceptionError
from perception.ood.monitor import FLAG_MIN_SCORE, FRAME_SCORES, OodMonitor
from perception.ood.scores import DETECTION_SCORES, GEOMETRY_SCORES, LOGIT_SCORES
from perception.ood.stats import engine_family
from ros_nodes.convert import features_from_msg
from ros_nodes.diagnostics import ERROR, OK, STALE, WARN, DiagnosticsPublisher, make_status
from ros_nodes.params import declare
from ros_nodes.paths import resolve
from ros_nodes.qos import output_qos
from ros_nodes.runtime import run_node

#: Scores that need the class logits / the point-geometry descriptors of DetectionFeatures (a message without
#: them is reported, not scored).
NEEDS_LOGITS = (*LOGIT_SCORES, *(f"mean_{s}" for s in LOGIT_SCORES))
NEEDS_GEOMETRY = (*GEOMETRY_SCORES, *(f"mean_{s}" for s in GEOMETRY_SCORES))


@dataclass
class _Stats:
    frames: int = 0
    ood_frames: int = 0
    detections: int = 0
    ood_detections: int = 0
    internal_errors: int = 0
    last_frame_score: float = float("nan")
    last_frame_ood: bool = False
    last_frame_threshold: float = float("nan")
    last_lidar_only: bool = False  # the last frame came without its camera: scored on the LiDAR part
    last_num_detections: int = 0
    last_num_flaggable: int = 0  # detections of the last frame whose detector score reaches flag_min_score
    last_num_ood: int = 0
    recent: deque = field(default_factory=deque)  # frame flags of the last `ood_window` frames


class OodMonitorNode(Node):
    """Scores the detector's query features and frame embedding against its training distribution."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("ood_monitor", **kwargs)
        model_dir = declare(self, "model_dir", "models/fusion_default",
                            "Model folder; its ood/ subfolder holds the fitted statistics (perception fit-ood)")
        self.score_name = declare(self, "score", "energy_geometry",
                                  f"Per-detection score published and flagged: {' | '.join(DETECTION_SCORES)}")
        self.frame_score_name = declare(self, "frame_score", "frame",
                                        f"Frame score published and flagged: {' | '.join(FRAME_SCORES)}")
        backend = declare(self, "backend", "auto",
                          "Engine the detector runs (set it as the detector's): its engine family's statistics are "
                          "used, <model_dir>/ood or <model_dir>/ood/<backend>; auto = the detector's default")
        self.flag_min_score = declare(self, "flag_min_score", FLAG_MIN_SCORE,
                                      "Detections whose detector score is below this are scored but never flagged "
                                      "nor counted as unusual (background detections are nearly all unusual)",
                                      low=0.0, high=1.0)
        period = declare(self, "diagnostics_period_s", 1.0, "/diagnostics and marker period (s)", low=0.05, high=60.0)
        self.window = declare(self, "ood_window", 5, "/diagnostics judges the last N frames", low=1, high=1000)
        self.min_ood = declare(self, "ood_min_frames", 3, "WARN when at least this many of the last ood_window "
                               "frames are out of distribution", low=1, high=1000)
        if self.min_ood > self.window:
            raise ConfigError(f"{self.min_ood} > ood_window {self.window}", f"{self.get_name()}:ood_min_frames")
        if self.score_name not in DETECTION_SCORES:
            raise ConfigError(f"must be one of {DETECTION_SCORES}", f"{self.get_name()}:score")
        if self.frame_score_name not in FRAME_SCORES:
            raise ConfigError(f"must be one of {FRAME_SCORES}", f"{self.get_name()}:frame_score")
        self.needs_logits = self.score_name in NEEDS_LOGITS or self.frame_score_name in NEEDS_LOGITS
        self.needs_geometry = self.score_name in NEEDS_GEOMETRY or self.frame_score_name in NEEDS_GEOMETRY
        if backend == "auto":  # the registry pulls in torch: only when it has to choose
            from perception.engines.registry import resolve_backend

            backend = resolve_backend(resolve(model_dir), backend)
        self.engine = engine_family(backend)
        self.monitor = OodMonitor.load(resolve(model_dir), backend, self.flag_min_score)
        self._warned_no_detector_scores = False
        self.det_threshold = self.monitor.stats.threshold("detection", self.score_name)
        self.frame_threshold = self.monitor.stats.threshold("frame", self.frame_score_name)
        self.model_id = str(self.monitor.stats.meta.get("model", "ood"))

        self.diag = DiagnosticsPublisher(self, hardware_id=self.model_id)
        self.scores_pub = self.create_publisher(OodScores, "~/output/ood", output_qos())
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/markers", output_qos(depth=2))
        self.features_topic = self.resolve_topic_name("~/input/features")
        self.create_subscription(DetectionFeatures, "~/input/features", self.on_features, output_qos())
        self.create_timer(period, self.publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.stats = _Stats(recent=deque(maxlen=self.window))
        self.get_logger().info(
            f"ready: {model_dir} ood stats ({self.engine} engines, backend {backend}), score {self.score_name} > "
            f"{self.det_threshold:.4g} (detector score >= {self.flag_min_score:g}), frame score "
            f"{self.frame_score_name} > {self.frame_threshold:.4g}; "
            f"listening on {self.features_topic}")

    def on_features(self, msg: DetectionFeatures) -> None:
        """Convert, score, publish; a malformed message is reported and skipped."""
        try:
            feats, embedding, logits, geometry = features_from_msg(msg, self.features_topic)
            if msg.engine and engine_family(msg.engine) != self.engine:
                raise DataError(f"features from engine {msg.engine!r}, but the OOD statistics loaded are for "
                                f"{self.engine!r} engines: set this node's backend parameter to the detector's "
                                f"(statistics: perception fit-ood --backend {msg.engine})",
                                f"{self.features_topic}:engine")
            if self.needs_logits and logits is None and msg.num_detections:
                raise DataError(f"no class logits, but score {self.score_name!r} / frame_score "
                                f"{self.frame_score_name!r} needs them", f"{self.features_topic}:logits")
            if self.needs_geometry and geometry is None and msg.num_detections:
                raise DataError(f"no point-geometry descriptors, but score {self.score_name!r} / frame_score "
                                f"{self.frame_score_name!r} needs them", f"{self.features_topic}:geometry")
            if logits is None and self.needs_logits:  # an empty frame
                logits = np.zeros((0, len(self.monitor.stats.classes)), np.float32)
            if geometry is None and self.needs_geometry:
                geometry = np.zeros((0, self.monitor.stats.geometry.dim), np.float32)
            if msg.num_detections and msg.dim != self.monitor.feature_dim:
                raise DataError(f"dim {msg.dim}, the OOD statistics expect {self.monitor.feature_dim}",
                                f"{self.features_topic}:dim")
            if embedding.size and embedding.size != self.monitor.embedding_dim:
                raise DataError(f"{embedding.size} values, the OOD statistics expect {self.monitor.embedding_dim}",
                                f"{self.features_topic}:frame_embedding")
            result = self.monitor.score(feats, embedding if embedding.size else None, logits,
                                        where=f"{self.features_topic}:features", geometry=geometry,
                                        camera=camera_used(list(msg.degraded)))
        except PerceptionError as exc:
            self.diag.report_bad_input(exc, self.features_topic)
            return
        except Exception as exc:  # an unexpected failure must not take the node down; count and report it
            self.stats.internal_errors += 1
            self.diag.report_bad_input(DataError(f"{type(exc).__name__}: {exc}", self.features_topic),
                                       self.features_topic)
            return
        scores = result.detection[self.score_name]
        flags = result.detection_flags(self.score_name)  # over the threshold, and detector score >= the floor
        flaggable = result.flaggable()
        if result.detector_scores is None and len(scores) and self.flag_min_score > 0 \
                and not self._warned_no_detector_scores:
            self._warned_no_detector_scores = True
            self.get_logger().warning(f"no class logits on {self.features_topic} (field logits): the detector's "
                                      f"scores are unknown, flag_min_score {self.flag_min_score:g} is not applied")
        frame_score = result.frame.get(self.frame_score_name, float("nan"))
        frame_threshold = result.thresholds["frame"].get(self.frame_score_name, self.frame_threshold)
        frame_ood = bool(np.isfinite(frame_score) and frame_score > frame_threshold)
        self.scores_pub.publish(OodScores(
            header=msg.header, scores=scores.astype(np.float32).tolist(), is_ood=flags.tolist(),
            frame_score=float(frame_score), frame_is_ood=frame_ood, frame_threshold=float(frame_threshold),
            frame_lidar_only=result.lidar_only, score_name=self.score_name, threshold=float(self.det_threshold)))
        s = self.stats
        s.frames += 1
        s.ood_frames += int(frame_ood)
        s.detections += len(scores)
        s.ood_detections += int(flags.sum())
        s.last_frame_score, s.last_frame_ood = float(frame_score), frame_ood
        s.last_frame_threshold, s.last_lidar_only = float(frame_threshold), result.lidar_only
        s.last_num_detections, s.last_num_ood = len(scores), int(flags.sum())
        s.last_num_flaggable = int(flaggable.sum())
        s.recent.append(frame_ood)

    def publish_diagnostics(self) -> None:
        """WARN while >= ood_min_frames of the last ood_window frames are out of distribution (a single
        frame over a 95 %-TPR threshold happens to 1 in-distribution frame in 20); plus input status and marker."""
        s = self.stats
        n_ood = sum(s.recent)
        if s.frames == 0:
            level, message = STALE, f"no features received on {self.features_topic}"
        elif n_ood >= self.min_ood:
            level, message = WARN, (f"out of distribution: {n_ood}/{len(s.recent)} recent frames over the "
                                    f"{self.frame_score_name} threshold {s.last_frame_threshold:.3g} "
                                    f"(last {s.last_frame_score:.3g})")
        else:
            level, message = OK, "in distribution"
        if s.frames and s.last_lidar_only:
            message += " (LiDAR part only: no camera)"
        values = {"frame_score": s.last_frame_score, "frame_threshold": s.last_frame_threshold,
                  "frame_lidar_only": s.last_lidar_only,
                  "frame_score_name": self.frame_score_name, "score_name": self.score_name,
                  "detection_threshold": self.det_threshold, "detections": s.last_num_detections,
                  "flag_min_score": self.flag_min_score, "flaggable_detections": s.last_num_flaggable,
                  "ood_detections": s.last_num_ood, "frames_scored": s.frames, "ood_frames": s.ood_frames,
                  "ood_frame_share": s.ood_frames / s.frames if s.frames else 0.0, "last_frame_ood": s.last_frame_ood,
                  "recent_ood_frames": n_ood,
                  "internal_errors": s.internal_errors}
        bad = sum(self.diag.bad_messages.values())
        self.diag.publish([
            make_status(f"{self.get_name()}: frame", level, message, self.model_id, values),
            make_status(f"{self.get_name()}: input", ERROR if bad else OK,
                        f"{bad} malformed message(s); last: {self.diag.last_error}" if bad else "ok", self.model_id,
                        {"malformed_messages": bad, **self.diag.bad_messages}),
        ])
        self.marker_pub.publish(self._marker(level, message))

    def _marker(self, level: int, message: str) -> MarkerArray:
        colour = {OK: (0.2, 0.9, 0.2), WARN: (1.0, 0.55, 0.0)}.get(level, (0.6, 0.6, 0.6))
        text = f"OOD: {message}"
        if self.stats.frames:
            text += (f" | {self.stats.last_num_ood}/{self.stats.last_num_flaggable} detections unusual (score >= "
                     f"{self.flag_min_score:g})")
        m = Marker(header=Header(stamp=self.get_clock().now().to_msg(), frame_id="base_link"), ns="ood_monitor",
                   id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, text=text,
                   color=ColorRGBA(r=colour[0], g=colour[1], b=colour[2], a=1.0))
        m.pose.position.z = 5.0
        m.pose.orientation.w = 1.0
        m.scale.z = 0.5
        return MarkerArray(markers=[m])


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; missing or corrupt OOD statistics end it with status 2."""
    return run_node("ood_monitor", OodMonitorNode, args)


if __name__ == "__main__":
    sys.exit(main())
