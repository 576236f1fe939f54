"""Recordings of the node graph's outputs (rosbag2, ``rosbags``; no ROS runtime): writer and reader.

A recording holds what ``bag_recorder`` received during a replay: every ``/perception/*`` topic,
``/diagnostics``, the ground truth the bag player published, and on :data:`ARRIVAL_TOPIC` one
``std_msgs/Header`` per LiDAR cloud the recorder received (its header = the cloud's, log time = arrival).
Log times are the recorder's wall clock at reception, so ``detections log time - cloud arrival`` is the
stamp → publish latency over DDS of a frame. Messages are stored as received (serialized CDR).

:func:`read_recording` turns a recording back into per-frame records for :mod:`perception.eval.replay`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import DataError
from perception.frame import Box3D, Detection
from perception.io.bag import GT_TOPIC, is_bag, markers_to_boxes, stamp_ns, typestore
from perception.io.outputs import is_dataset_dir

log = logging.getLogger(__name__)

MSGS_PACKAGE = "trustworthy_perception_msgs"
#: One std_msgs/Header per cloud the recorder received (header = the cloud's; log time = arrival).
ARRIVAL_TOPIC = "/replay/lidar_arrivals"
DETECTIONS_TOPIC = "/perception/detections"
OOD_TOPIC = "/perception/ood"
CROWD_TOPIC = "/perception/crowd/count"
XAI_TOPICS = ("/perception/xai/image", "/perception/xai/bev")
DIAGNOSTICS_TOPIC = "/diagnostics"
STATUS_TOPIC = "/replay/status"
#: The recorder's progress (std_msgs/String JSON, latched): clouds received, clouds answered, messages.
RECORDER_STATUS_TOPIC = "/replay/recorder_status"
#: custom_data key: the bag that was replayed.
SOURCE_KEY = "trustworthy_perception.replayed_bag"


def msg_folders() -> list[Path]:
    """Where the interface package's ``.msg`` files may be: installed share folders, then the source tree."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    folders = [p / "share" / MSGS_PACKAGE / "msg" for p in [*prefixes, Path(sys.prefix)]]
    folders.append(Path(__file__).resolve().parents[2] / "msgs" / "msg")
    return [f for f in folders if f.is_dir()]


@cache
def recording_typestore() -> Any:
    """The rosbags type store with our interface package registered (from its installed ``.msg`` files)."""
    from rosbags.typesys import get_types_from_msg

    store = typestore()
    folders = msg_folders()
    if not folders:
        raise DataError(f"cannot find the {MSGS_PACKAGE} .msg files (build msgs/ with make msgs)", MSGS_PACKAGE)
    types: dict = {}
    for path in sorted(folders[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSGS_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


# ---------------------------------------------------------------------------------------------- writer
class RecordingWriter:
    """Writes serialized messages into a new rosbag2 folder as they come; :meth:`close` finishes it.

    Written straight into ``path`` (no staging), so what was recorded before a crash is where the user
    looks. An existing ``path`` is refused unless ``force`` (and even then only a dataset folder is deleted).
    """

    def __init__(self, path: str | Path, force: bool = False, storage: str = "mcap",
                 custom_data: dict[str, str] | None = None) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            if not force:
                raise DataError("recording exists; pass --force (force:=true) to replace it", str(self.path))
            if self.path.is_dir() and any(self.path.iterdir()) and not is_dataset_dir(self.path):
                raise DataError("exists and is not a bag; refusing to delete it even with force", str(self.path))
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, value)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, latched: bool = False) -> bool:
        """Register a topic; False (logged) when its type is unknown to the type store."""
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

        if topic in self._conns:
            return True
        store = recording_typestore()
        if msgtype not in store.types:
            log.warning("not recording %s: message type %s is unknown to the recorder", topic, msgtype)
            return False
        qos = ()
        if latched:
            never = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
            qos = (Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                       durability=QosDurability.TRANSIENT_LOCAL, deadline=never, lifespan=never,
                       liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
                       avoid_ros_namespace_conventions=False),)
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)
        self.counts[topic] = 0
        return True

    def write(self, topic: str, log_time_ns: int, data: bytes) -> None:
        """Append one serialized message of a registered topic."""
        self._writer.write(self._conns[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        """CDR bytes of a rosbags message object."""
        return bytes(recording_typestore().serialize_cdr(msg, msgtype))

    @property
    def total(self) -> int:
        """Messages written so far."""
        return sum(self.counts.values())

    def close(self) -> Path:
        """Finish the bag (index, metadata.yaml); idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.path


def header_stamp_of_cdr(data: bytes) -> int:
    """The ``header.stamp`` (ns) of a serialized message whose first field is a std_msgs/Header."""
    if len(data) < 12:
        raise DataError(f"{len(data)} bytes: too short for a header", "cdr")
    order = "<" if data[1] == 1 else ">"
    sec, nsec = np.frombuffer(data[4:12], dtype=f"{order}i4")
    return int(sec) * 1_000_000_000 + int(np.uint32(nsec))


# ---------------------------------------------------------------------------------------------- reader
def detections_from_msg(msg: Any) -> list[Detection]:
    """:class:`Detection` objects from a ``Detection3DArray`` (rclpy or rosbags message; no attention/features)."""
    out = []
    for d in msg.detections:
        p, q = d.pose.position, d.pose.orientation
        yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
        box = Box3D(label=d.label, center=[p.x, p.y, p.z], size=[d.size.x, d.size.y, d.size.z], yaw=yaw,
                    velocity=np.array([d.velocity.x, d.velocity.y]) if d.velocity_known else None)
        share = {} if math.isnan(d.lidar_share) else {"lidar": float(d.lidar_share), "camera": float(d.camera_share)}
        out.append(Detection(box=box, score=float(d.score), probability=float(d.existence_probability),
                             covariance=np.asarray(d.covariance, dtype=np.float64).reshape(7, 7),
                             modality_share=share, ood_score=None if math.isnan(d.ood_score) else float(d.ood_score)))
    return out


@dataclass
class RecordedFrame:
    """One LiDAR cloud of a replay and what the graph answered."""

    stamp_ns: int
    arrival_ns: int | None = None  # recorder wall clock when the cloud arrived
    detections_ns: int | None = None  # ... when its Detection3DArray arrived (None: no answer = dropped)
    detections: list[Detection] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    gt: list[Box3D] | None = None  # None: no ground truth for this frame
    ood_frame_flag: bool | None = None
    ood_frame_score: float | None = None
    ood_detections_flagged: int = 0

    @property
    def latency_ms(self) -> float | None:
        """Cloud arrival → detections arrival at the recorder (both over DDS), ms."""
        if self.arrival_ns is None or self.detections_ns is None:
            return None
        return (self.detections_ns - self.arrival_ns) / 1e6


@dataclass
class Recording:
    """A recording read back: frames by cloud stamp, and the monitors' time series."""

    path: Path
    frames: list[RecordedFrame]
    crowd: list[tuple[int, float, float, float]]  # (stamp, count, lower, upper)
    diagnostics: list[tuple[int, str, int, str, dict[str, str]]]  # (log time, name, level, message, values)
    xai: list[tuple[str, int, np.ndarray]]  # (topic, stamp, RGB image)
    status: dict[str, Any]  # the player's last /replay/status
    counts: dict[str, int]
    custom: dict[str, str]
    skipped: list[str]  # what could not be read, and why


def _image(msg: Any) -> np.ndarray:
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    img = data[: h * step].reshape(h, step)[:, : w * 3].reshape(h, w, 3)
    return img[..., ::-1].copy() if msg.encoding == "bgr8" else img.copy()


def is_recording(path: str | Path) -> bool:
    """True for a bag written by ``bag_recorder`` (its detections and cloud arrivals are listed)."""
    path = Path(path)
    if not is_bag(path):
        return False
    try:
        text = (path / "metadata.yaml").read_text()
    except OSError:
        return False
    return DETECTIONS_TOPIC in text and ARRIVAL_TOPIC in text


def read_recording(path: str | Path, max_xai: int = 8) -> Recording:
    """Read a recording made by ``bag_recorder``; DataError naming the bag when it is not one."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not is_bag(path):
        raise DataError("not a rosbag2 folder (no metadata.yaml)", str(path))
    try:
        # The bag's own message definitions decode it (the installed interface package may have changed since).
        reader = AnyReader([path], default_typestore=recording_typestore())
        reader.open()
    except Exception as exc:  # rosbags raises several types for damaged bags
        raise DataError(f"cannot open recording: {exc}", str(path)) from exc
    topics = {c.topic for c in reader.connections}
    if DETECTIONS_TOPIC not in topics or ARRIVAL_TOPIC not in topics:
        reader.close()
        raise DataError(f"not a replay recording: needs {DETECTIONS_TOPIC} and {ARRIVAL_TOPIC} "
                        f"(topics: {', '.join(sorted(topics)) or 'none'})", str(path))
    frames: dict[int, RecordedFrame] = {}
    crowd, diags, xai_all, skipped = [], [], [], []
    status: dict[str, Any] = {}
    gt: dict[int, list[Box3D]] = {}
    ood: dict[int, Any] = {}
    wanted = [c for c in reader.connections if c.topic in
              {ARRIVAL_TOPIC, DETECTIONS_TOPIC, OOD_TOPIC, CROWD_TOPIC, DIAGNOSTICS_TOPIC, STATUS_TOPIC, GT_TOPIC,
               *XAI_TOPICS}]
    try:
        for conn, t, raw in reader.messages(connections=wanted):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # a damaged message: skip it, say so
                skipped.append(f"{conn.topic} at {t}: malformed {conn.msgtype} ({exc})")
                continue
            if conn.topic == ARRIVAL_TOPIC:
                frames.setdefault(stamp_ns(msg), RecordedFrame(stamp_ns(msg))).arrival_ns = int(t)
            elif conn.topic == DETECTIONS_TOPIC:
                f = frames.setdefault(stamp_ns(msg.header), RecordedFrame(stamp_ns(msg.header)))
                f.detections_ns, f.detections, f.degraded = int(t), detections_from_msg(msg), list(msg.degraded_reasons)
            elif conn.topic == OOD_TOPIC:
                ood[stamp_ns(msg.header)] = msg
            elif conn.topic == CROWD_TOPIC:
                crowd.append((stamp_ns(msg.header), float(msg.count), float(msg.lower), float(msg.upper)))
            elif conn.topic == DIAGNOSTICS_TOPIC:
                for s in msg.status:
                    diags.append((int(t), str(s.name), int(s.level), str(s.message),
                                  {str(kv.key): str(kv.value) for kv in s.values}))
            elif conn.topic == STATUS_TOPIC:
                status = json.loads(msg.data)
            elif conn.topic == GT_TOPIC:
                stamp = stamp_ns(msg.markers[0].header) if msg.markers else int(t)
                gt[stamp] = markers_to_boxes(msg, f"{path}:{GT_TOPIC}")
            elif conn.topic in XAI_TOPICS:
                xai_all.append((conn.topic, stamp_ns(msg.header), msg))
    except Exception as exc:  # a truncated recording: keep what was read
        skipped.append(f"stopped reading: {exc}")
    counts = {c.topic: int(c.msgcount) for c in reader.connections}
    reader.close()
    custom = _custom_data(path)
    for stamp, msg in ood.items():
        f = frames.setdefault(stamp, RecordedFrame(stamp))
        f.ood_frame_flag, f.ood_frame_score = bool(msg.frame_is_ood), float(msg.frame_score)
        f.ood_detections_flagged = int(sum(bool(x) for x in msg.is_ood))
    for stamp, boxes in gt.items():
        frames.setdefault(stamp, RecordedFrame(stamp)).gt = boxes
    picked = _spread(xai_all, max_xai)
    xai = [(topic, stamp, _image(msg)) for topic, stamp, msg in picked]
    ordered = sorted(frames.values(), key=lambda f: f.stamp_ns)
    return Recording(path, ordered, sorted(crowd), diags, xai, status, counts, custom, skipped)


def _custom_data(path: Path) -> dict[str, str]:
    """The ``custom_data`` of a bag's metadata.yaml."""
    import yaml

    try:
        info = (yaml.safe_load((path / "metadata.yaml").read_text()) or {})["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise DataError(f"malformed metadata.yaml: {exc}", str(path / "metadata.yaml")) from exc
    return dict(info.get("custom_data") or {})


def _spread(items: list, n: int) -> list:
    """At most ``n`` items evenly spread over ``items`` (pairs of XAI topics kept together by stamp)."""
    if len(items) <= n:
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]
