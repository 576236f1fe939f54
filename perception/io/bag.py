"""rosbag2 (mcap or sqlite3) reader and writer for Frames, with the ``rosbags`` library (no ROS runtime).

Topics (the ROS nodes use the same names; import the constants from here):

- ``/sensing/lidar/points`` sensor_msgs/PointCloud2: x y z intensity float32, point_step 16.
- ``/sensing/camera/image_raw`` sensor_msgs/Image rgb8; absent for frames without a camera.
- ``/sensing/camera/camera_info`` sensor_msgs/CameraInfo: K, plumb_bob D, R = I, P = [K|0], size; every frame.
- ``/tf_static`` tf2_msgs/TFMessage: base_link→lidar and lidar→camera, once (transient-local QoS).
- ``/sensing/ground_truth/objects`` visualization_msgs/MarkerArray: DELETEALL, then one CUBE per GT box.
- ``/sensing/ground_truth/frame_info`` std_msgs/String: JSON ``{"frame_id", "meta"}`` (scalar meta only);
  it has no header, so its log time is the frame stamp.

A ground-truth marker has ``ns`` = class, ``id`` = track id (``-(i+1)`` when unknown), pose/scale = the
box, and ``text`` = compact JSON ``{"num_points", "occlusion", "truncation", "bbox2d"[, "velocity"]}``.
Reading pairs the image, camera info and ground truth with each cloud by nearest header stamp (≤ 50 ms).
The message converters below are duck-typed, so they also accept rclpy messages of the same types.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from perception.errors import CalibrationError, DataError
from perception.frame import POINT_FIELDS, Box3D, Frame
from perception.io.kitti import VALID_CLASSES, same_rig
from perception.io.outputs import StagedOutput
from perception.rig import Rig, invert_transform, make_transform

log = logging.getLogger(__name__)

LIDAR_TOPIC = "/sensing/lidar/points"
IMAGE_TOPIC = "/sensing/camera/image_raw"
CAMERA_INFO_TOPIC = "/sensing/camera/camera_info"
TF_STATIC_TOPIC = "/tf_static"
GT_TOPIC = "/sensing/ground_truth/objects"
#: Per-frame bookkeeping (frame id and scalar meta such as weather or drive), std_msgs/String JSON.
FRAME_INFO_TOPIC = "/sensing/ground_truth/frame_info"
#: Topic → message type of every topic the writer records.
TOPIC_TYPES: dict[str, str] = {
    LIDAR_TOPIC: "sensor_msgs/msg/PointCloud2",
    IMAGE_TOPIC: "sensor_msgs/msg/Image",
    CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
    TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage",
    GT_TOPIC: "visualization_msgs/msg/MarkerArray",
    FRAME_INFO_TOPIC: "std_msgs/msg/String",
}
#: The per-frame sensor topics (one message per frame each, except images of camera-less frames).
SENSOR_TOPICS: tuple[str, ...] = (LIDAR_TOPIC, IMAGE_TOPIC, CAMERA_INFO_TOPIC)
#: Largest header-stamp gap for pairing an image / camera info / ground truth with a cloud.
SYNC_TOLERANCE_NS = 50_000_000
#: How far (log time) the reader looks ahead of a cloud before pairing it.
_LOOKAHEAD_NS = 1_000_000_000
#: custom_data key holding the writer's rig YAML (keeps the rig name and LiDAR model).
RIG_CUSTOM_KEY = "trustworthy_perception.rig"
STORAGES = ("mcap", "sqlite3")
#: Version of the topic layout above; bump it when the writer's output changes (caches get rebuilt).
BAG_LAYOUT_VERSION = 2

_FLOAT32 = 7
_CLASS_COLORS = {
    "Car": (0.1, 0.6, 1.0), "Van": (0.1, 0.8, 0.8), "Truck": (0.3, 0.3, 1.0), "Pedestrian": (1.0, 0.3, 0.2),
    "Person_sitting": (1.0, 0.6, 0.2), "Cyclist": (1.0, 0.9, 0.1), "Tram": (0.6, 0.3, 1.0),
    "Misc": (0.7, 0.7, 0.7),
}


@cache
def typestore() -> Any:
    """The rosbags type store for ROS 2 kilted (message classes and CDR (de)serialisation)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _t(name: str) -> Any:
    return typestore().types[name]


# ---------------------------------------------------------------------------------------------- building
def stamp_msg(stamp_ns: int) -> Any:
    """builtin_interfaces/Time from nanoseconds."""
    return _t("builtin_interfaces/msg/Time")(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a message header's stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _msg_stamp(msg: Any, log_time: int) -> int:
    """Header stamp of a message; a MarkerArray's is its first marker's (the log time when empty)."""
    if hasattr(msg, "header"):
        return stamp_ns(msg.header)
    markers = getattr(msg, "markers", None)
    return stamp_ns(markers[0].header) if markers else int(log_time)


def _header(stamp: int, frame_id: str) -> Any:
    return _t("std_msgs/msg/Header")(stamp=stamp_msg(stamp), frame_id=frame_id)


def quaternion_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` of a 3x3 rotation matrix (w >= 0)."""
    r = np.asarray(r, dtype=np.float64)
    m = np.array([
        [r[0, 0] - r[1, 1] - r[2, 2], r[1, 0] + r[0, 1], r[2, 0] + r[0, 2], r[2, 1] - r[1, 2]],
        [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], r[2, 1] + r[1, 2], r[0, 2] - r[2, 0]],
        [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], r[1, 0] - r[0, 1]],
        [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], r[0, 0] + r[1, 1] + r[2, 2]],
    ]) / 3.0
    w, v = np.linalg.eigh(m)  # the quaternion is the eigenvector of the largest eigenvalue (Bar-Itzhack)
    q = v[:, np.argmax(w)]
    return -q if q[3] < 0 else q


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion ``(x, y, z, w)`` (normalised first)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _pose(position: np.ndarray, rotation: np.ndarray) -> tuple[Any, Any]:
    q = quaternion_from_matrix(rotation)
    return (_t("geometry_msgs/msg/Vector3")(x=float(position[0]), y=float(position[1]), z=float(position[2])),
            _t("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def points_to_cloud(points: np.ndarray, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/PointCloud2 (x y z intensity float32, point_step 16) from (N, 4) points."""
    pts = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 4)
    field_t = _t("sensor_msgs/msg/PointField")
    fields = [field_t(name=n, offset=4 * i, datatype=_FLOAT32, count=1) for i, n in enumerate(POINT_FIELDS)]
    return _t("sensor_msgs/msg/PointCloud2")(
        header=_header(stamp, frame_id), height=1, width=len(pts), fields=fields, is_bigendian=False,
        point_step=16, row_step=16 * len(pts), data=pts.view(np.uint8).reshape(-1),
        is_dense=bool(np.isfinite(pts[:, :3]).all()))


def image_to_msg(image: np.ndarray, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image rgb8 from an (H, W, 3) uint8 array."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    return _t("sensor_msgs/msg/Image")(header=_header(stamp, frame_id), height=h, width=w, encoding="rgb8",
                                       is_bigendian=0, step=3 * w, data=img.reshape(-1))


def rig_to_camera_info(rig: Rig, stamp: int) -> Any:
    """sensor_msgs/CameraInfo (plumb_bob) of a rig's camera."""
    p = np.zeros((3, 4))
    p[:, :3] = rig.K
    return _t("sensor_msgs/msg/CameraInfo")(
        header=_header(stamp, rig.camera_frame), height=rig.height, width=rig.width, distortion_model="plumb_bob",
        d=rig.distortion.astype(np.float64).copy(), k=rig.K.astype(np.float64).ravel(), r=np.eye(3).ravel(),
        p=p.ravel(), binning_x=0, binning_y=0,
        roi=_t("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def rig_to_tf(rig: Rig, stamp: int) -> Any:
    """tf2_msgs/TFMessage with base_link→lidar and lidar→camera (the camera's pose in the LiDAR frame)."""
    ts_t, tr_t = _t("geometry_msgs/msg/TransformStamped"), _t("geometry_msgs/msg/Transform")
    out = []
    for parent, child, pose in ((rig.base_frame, rig.lidar_frame, rig.base_to_lidar),
                                (rig.lidar_frame, rig.camera_frame, rig.camera_to_lidar)):
        trans, rot = _pose(pose[:3, 3], pose[:3, :3])
        out.append(ts_t(header=_header(stamp, parent), child_frame_id=child,
                        transform=tr_t(translation=trans, rotation=rot)))
    return _t("tf2_msgs/msg/TFMessage")(transforms=out)


def _marker(stamp: int, frame_id: str, ns: str, mid: int, mtype: int, action: int, position: np.ndarray,
            rotation: np.ndarray, scale: np.ndarray, color: tuple[float, float, float], text: str) -> Any:
    pos, rot = _pose(position, rotation)
    return _t("visualization_msgs/msg/Marker")(
        header=_header(stamp, frame_id), ns=ns, id=int(mid), type=mtype, action=action,
        pose=_t("geometry_msgs/msg/Pose")(position=_t("geometry_msgs/msg/Point")(x=pos.x, y=pos.y, z=pos.z),
                                          orientation=rot),
        scale=_t("geometry_msgs/msg/Vector3")(x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
        color=_t("std_msgs/msg/ColorRGBA")(r=color[0], g=color[1], b=color[2], a=0.5),
        lifetime=_t("builtin_interfaces/msg/Duration")(sec=0, nanosec=0), frame_locked=False, points=[], colors=[],
        texture_resource="", texture=_t("sensor_msgs/msg/CompressedImage")(
            header=_header(0, ""), format="", data=np.zeros(0, np.uint8)),
        uv_coordinates=[], text=text, mesh_resource="",
        mesh_file=_t("visualization_msgs/msg/MeshFile")(filename="", data=np.zeros(0, np.uint8)),
        mesh_use_embedded_materials=False)


def boxes_to_markers(boxes: list[Box3D], stamp: int, frame_id: str) -> Any:
    """visualization_msgs/MarkerArray: a DELETEALL, then one CUBE per box (see the module docstring)."""
    marker_t = _t("visualization_msgs/msg/Marker")
    markers = [_marker(stamp, frame_id, "", 0, marker_t.CUBE, marker_t.DELETEALL, np.zeros(3), np.eye(3),
                       np.ones(3), (0.0, 0.0, 0.0), "")]
    for i, box in enumerate(boxes):
        extra: dict[str, Any] = {"num_points": int(box.num_points), "occlusion": int(box.occlusion),
                                 "truncation": round(float(box.truncation), 6),
                                 "bbox2d": None if box.bbox2d is None else [round(float(v), 3) for v in box.bbox2d]}
        if box.velocity is not None:
            extra["velocity"] = [round(float(v), 6) for v in box.velocity]
        c, s = np.cos(box.yaw), np.sin(box.yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        markers.append(_marker(stamp, frame_id, box.label, box.track_id if box.track_id >= 0 else -(i + 1),
                               marker_t.CUBE, marker_t.ADD, box.center, rot, box.size,
                               _CLASS_COLORS.get(box.label, (1.0, 1.0, 1.0)),
                               json.dumps(extra, separators=(",", ":"))))
    return _t("visualization_msgs/msg/MarkerArray")(markers=markers)


def frame_info_msg(frame: Frame) -> Any:
    """std_msgs/String with ``{"frame_id": ..., "meta": {...}}``; only scalar meta values are kept."""
    meta = {k: v.item() if isinstance(v, np.generic) else v for k, v in frame.meta.items()
            if isinstance(v, (str, int, float, bool, np.generic)) and np.ndim(v) == 0}
    return _t("std_msgs/msg/String")(data=json.dumps({"frame_id": frame.frame_id, "meta": meta},
                                                     separators=(",", ":")))


# ---------------------------------------------------------------------------------------------- parsing
def _bytes_of(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` (numpy array, bytes, or rclpy's array.array)."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def cloud_to_points(msg: Any, where: str) -> np.ndarray:
    """(N, 4) float32 x y z intensity from a PointCloud2 with float32 x, y, z (intensity optional → 0)."""
    fields = {f.name: f for f in msg.fields}
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    data = _bytes_of(msg.data)
    if any(k not in fields for k in "xyz"):
        raise DataError(f"point cloud lacks x/y/z fields (has {sorted(fields)})", where)
    if n and (step <= 0 or data.size < n * step or int(msg.row_step) * int(msg.height) != data.size):
        raise DataError(f"data size {data.size} does not match {msg.height}x{msg.width} points of {step} bytes "
                        f"(row_step {msg.row_step})", where)
    names = [k for k in ("x", "y", "z", "intensity") if k in fields]
    for k in names:
        if fields[k].datatype != _FLOAT32 or fields[k].offset + 4 > step:
            raise DataError(f"field {k!r} must be float32 within the point (datatype {fields[k].datatype}, "
                            f"offset {fields[k].offset})", where)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    endian = ">" if msg.is_bigendian else "<"
    rows = data[: n * step] if int(msg.height) == 1 else data.reshape(int(msg.height), -1)[:, : int(msg.width) * step]
    rows = np.ascontiguousarray(rows).reshape(-1)
    if endian == "<" and step == 16 and [fields[k].offset for k in names] == [0, 4, 8, 12]:
        return rows.view("<f4").reshape(n, 4).copy()
    dtype = np.dtype({"names": names, "formats": [endian + "f4"] * len(names),
                      "offsets": [fields[k].offset for k in names], "itemsize": step})
    rec = rows.view(dtype)
    out = np.zeros((n, 4), np.float32)
    for i, k in enumerate(names):
        out[:, i] = rec[k]
    return out


def image_msg_to_array(msg: Any, where: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8/bgr8/mono8 sensor_msgs/Image."""
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding).lower()
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(enc)
    if channels is None:
        raise DataError(f"unsupported image encoding {msg.encoding!r} (rgb8, bgr8, mono8)", where)
    data = _bytes_of(msg.data)
    if h <= 0 or w <= 0 or step < w * channels or data.size != h * step:
        raise DataError(f"data size {data.size} does not match {h} rows of step {step} for {w}x{h} {enc}", where)
    img = data.reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if enc == "bgr8":
        img = img[..., ::-1]
    elif enc == "mono8":
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def markers_to_boxes(msg: Any, where: str, to_lidar: np.ndarray | None = None) -> list[Box3D]:
    """Ground-truth boxes from a MarkerArray written by :func:`boxes_to_markers` (ADD CUBE markers only).

    ``to_lidar`` (4x4) maps the markers' frame into the LiDAR frame when they are not already in it.
    """
    boxes = []
    for k, m in enumerate(msg.markers):
        if int(m.action) != 0 or int(m.type) != 1:
            continue
        mw = f"{where}: markers[{k}]"
        if m.ns not in VALID_CLASSES:
            raise DataError(f"unknown class (ns) {m.ns!r}", mw)
        q = [m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w]
        if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
            raise DataError("invalid orientation quaternion", mw)
        rot = matrix_from_quaternion(q)
        center = np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
        if to_lidar is not None:
            rot, center = to_lidar[:3, :3] @ rot, to_lidar[:3, :3] @ center + to_lidar[:3, 3]
        size = np.array([m.scale.x, m.scale.y, m.scale.z])
        if not (np.isfinite(center).all() and np.isfinite(size).all() and (size > 0).all()):
            raise DataError(f"box centre/size must be finite and positive, got {center}, {size}", mw)
        try:
            extra = json.loads(m.text) if m.text else {}
        except json.JSONDecodeError as exc:
            raise DataError(f"text is not JSON: {exc}", mw) from exc
        bbox, vel = extra.get("bbox2d"), extra.get("velocity")
        boxes.append(Box3D(label=m.ns, center=center, size=size, yaw=float(np.arctan2(rot[1, 0], rot[0, 0])),
                           num_points=int(extra.get("num_points", -1)), occlusion=int(extra.get("occlusion", 0)),
                           truncation=float(extra.get("truncation", 0.0)),
                           track_id=int(m.id) if m.id >= 0 else -1,
                           bbox2d=None if bbox is None else np.asarray(bbox, dtype=np.float64),
                           velocity=None if vel is None else np.asarray(vel, dtype=np.float64)))
    return boxes


def _transform_of(ts: Any) -> np.ndarray:
    t, q = ts.transform.translation, ts.transform.rotation
    return make_transform(matrix_from_quaternion([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])


def rig_from_messages(camera_info: Any, transforms: Iterable[Any], lidar_frame: str, name: str = "bag",
                      source: str = "<bag>") -> Rig:
    """A :class:`Rig` from a CameraInfo and static transforms linking a base frame, the LiDAR and the camera."""
    parents: dict[str, tuple[str, np.ndarray]] = {}
    for ts in transforms:
        parents[str(ts.child_frame_id).lstrip("/")] = (str(ts.header.frame_id).lstrip("/"), _transform_of(ts))

    def to_root(frame: str) -> tuple[str, np.ndarray]:
        pose, seen = np.eye(4), {frame}
        while frame in parents:
            frame, t = parents[frame]
            if frame in seen:
                raise DataError(f"transform loop at {frame!r}", source)
            seen.add(frame)
            pose = t @ pose
        return frame, pose

    cam_frame = str(camera_info.header.frame_id).lstrip("/")
    lidar_frame = lidar_frame.lstrip("/")
    lidar_root, root_lidar = to_root(lidar_frame)
    cam_root, root_cam = to_root(cam_frame)
    if lidar_root == lidar_frame:
        raise DataError(f"no transform from a base frame to the LiDAR frame {lidar_frame!r}", source)
    if cam_root != lidar_root:
        raise DataError(f"no transform chain links the camera frame {cam_frame!r} to the LiDAR frame "
                        f"{lidar_frame!r}", source)
    d = np.zeros(5)
    dist = np.asarray(camera_info.d, dtype=np.float64).ravel()
    if dist.size:
        if camera_info.distortion_model not in ("plumb_bob", "rational_polynomial") or dist.size < 5:
            raise DataError(f"unsupported distortion {camera_info.distortion_model!r} with {dist.size} values", source)
        d = dist[:5]
    try:
        return Rig(name=name, base_to_lidar=root_lidar, lidar_to_camera=invert_transform(root_cam) @ root_lidar,
                   K=np.asarray(camera_info.k, dtype=np.float64).reshape(3, 3).copy(), width=int(camera_info.width),
                   height=int(camera_info.height), distortion=d, base_frame=lidar_root, lidar_frame=lidar_frame,
                   camera_frame=cam_frame, source=source)
    except CalibrationError as exc:
        raise DataError(f"camera info / transforms do not form a valid rig: {exc}", source) from exc


# ---------------------------------------------------------------------------------------------- writer
class BagWriter:
    """Write Frames to a rosbag2 folder (``storage`` = ``"mcap"`` or ``"sqlite3"``) as a context manager.

    The bag is built in a staging folder and swapped in on a clean exit; an existing non-empty ``path``
    is only replaced with ``force=True``. Every frame's ``rig`` must equal the writer's ``rig``.
    """

    def __init__(self, path: str | Path, rig: Rig, storage: str = "mcap", force: bool = False,
                 custom_data: dict[str, str] | None = None) -> None:
        if storage not in STORAGES:
            raise DataError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}", "storage")
        self.rig, self.storage = rig, storage
        self._stage = StagedOutput(path, force)
        self.path = self._stage.target
        self._custom = {RIG_CUSTOM_KEY: yaml.safe_dump(rig.to_dict(), sort_keys=False), **(custom_data or {})}
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self.count = 0

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Open the staging bag and register every topic."""
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._stage.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        for key, value in self._custom.items():
            self._writer.set_custom_data(key, value)
        self._writer.open()
        never = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
        latched = Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                      durability=QosDurability.TRANSIENT_LOCAL, deadline=never, lifespan=never,
                      liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
                      avoid_ros_namespace_conventions=False)
        for topic, msgtype in TOPIC_TYPES.items():
            qos = (latched,) if topic == TF_STATIC_TOPIC else ()
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore(),
                                                             offered_qos_profiles=qos)

    def _put(self, topic: str, msg: Any, stamp: int) -> None:
        data = typestore().serialize_cdr(msg, TOPIC_TYPES[topic])
        self._writer.write(self._conns[topic], int(stamp), data)

    def write(self, frame: Frame) -> None:
        """Append one frame: cloud, camera info, image (when present), ground truth; tf_static once."""
        if self._writer is None:
            raise DataError("BagWriter is not open (use it as a context manager)", str(self.path))
        if frame.rig is not None and not same_rig(frame.rig, self.rig):
            raise DataError(f"frame rig {frame.rig.name!r} differs from the bag's rig {self.rig.name!r}",
                            f"frame {frame.frame_id or self.count}")
        rig, stamp = self.rig, int(frame.stamp_ns)
        if self.count == 0:
            self._put(TF_STATIC_TOPIC, rig_to_tf(rig, stamp), stamp)
        self._put(LIDAR_TOPIC, points_to_cloud(frame.points, stamp, rig.lidar_frame), stamp)
        image_stamp = int(frame.image_stamp_ns if frame.image_stamp_ns is not None else stamp)
        if frame.image is not None:
            rig.check_image(frame.image, f"frame {frame.frame_id or self.count}: image")
            self._put(IMAGE_TOPIC, image_to_msg(frame.image, image_stamp, rig.camera_frame), image_stamp)
        self._put(CAMERA_INFO_TOPIC, rig_to_camera_info(rig, image_stamp), image_stamp)
        if frame.meta.get("has_labels", True):  # an unlabelled real frame has no ground truth, not zero objects
            self._put(GT_TOPIC, boxes_to_markers(frame.boxes, stamp, rig.lidar_frame), stamp)
        self._put(FRAME_INFO_TOPIC, frame_info_msg(frame), stamp)
        self.count += 1

    def close(self) -> Path:
        """Finish the bag and swap it into place; returns its path."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        log.info("bag %s: %d frames (%s)", self.path, self.count, self.storage)
        return self._stage.commit()

    def abort(self) -> None:
        """Discard the partial bag."""
        if self._writer is not None:
            try:
                self._writer.abort()
            finally:
                self._writer = None
        self._stage.abort()


# ---------------------------------------------------------------------------------------------- reader
@dataclass
class TopicInfo:
    """One topic of a bag."""

    msgtype: str
    count: int
    rate_hz: float | None = None  # 1 / median interval of its log times, when computed


@dataclass
class BagInfo:
    """What a bag holds."""

    path: str
    storage: str
    start_ns: int
    end_ns: int
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Seconds between the first and the last message."""
        return max(0, self.end_ns - self.start_ns) / 1e9


def is_bag(path: str | Path) -> bool:
    """True for a rosbag2 folder (``metadata.yaml`` inside)."""
    return (Path(path) / "metadata.yaml").is_file()


class BagReader:
    """Read a rosbag2 folder (mcap or sqlite3) written by :class:`BagWriter` or by ``ros2 bag record``."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        path = Path(path)
        if path.is_file() and path.suffix in (".mcap", ".db3") and is_bag(path.parent):
            path = path.parent
        self.path = path
        if not is_bag(path):
            raise DataError("not a rosbag2 folder (no metadata.yaml)", str(path))
        try:
            self._reader = Reader(path)
            self._reader.open()
        except Exception as exc:  # rosbags raises several types for damaged bags
            raise DataError(f"cannot open bag: {exc}", str(path)) from exc
        try:
            info = (yaml.safe_load((path / "metadata.yaml").read_text()) or {})["rosbag2_bagfile_information"]
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise DataError(f"malformed metadata.yaml: {exc}", str(path / "metadata.yaml")) from exc
        self.storage = str(info.get("storage_identifier", "?"))
        #: The bag's custom_data (our writer stores the rig YAML under RIG_CUSTOM_KEY).
        self.custom: dict[str, str] = dict(info.get("custom_data") or {})
        self._by_topic = {c.topic: c for c in self._reader.connections}
        if LIDAR_TOPIC not in self._by_topic:
            self.close()
            raise DataError(f"bag has no {LIDAR_TOPIC} topic (topics: {', '.join(sorted(self._by_topic)) or 'none'})",
                            f"{path}:{LIDAR_TOPIC}")
        self._rig: Rig | None = None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying storage."""
        self._reader.close()

    def where(self, topic: str) -> str:
        """``<bag>:<topic>``, for error messages."""
        return f"{self.path}:{topic}"

    def info(self, rates: bool = False) -> BagInfo:
        """Topics with message counts (and rates when ``rates``, at the cost of one pass over the bag)."""
        topics = {c.topic: TopicInfo(c.msgtype, int(c.msgcount)) for c in self._reader.connections}
        if rates:
            stamps: dict[str, list[int]] = {name: [] for name in topics}
            for conn, t, _ in self._reader.messages():
                stamps[conn.topic].append(t)
            for name, ti in topics.items():
                gaps = np.diff(np.asarray(stamps[name], dtype=np.int64))
                gaps = gaps[gaps > 0]
                if gaps.size:  # median interval: robust to gaps between the drives of a split
                    ti.rate_hz = round(1e9 / float(np.median(gaps)), 3)
        n = self._reader.message_count
        return BagInfo(str(self.path), self.storage, int(self._reader.start_time) if n else 0,
                       int(self._reader.end_time) - 1 if n else 0, topics, dict(self.custom))

    def _deserialize(self, raw: bytes, conn: Any) -> Any:
        try:
            return typestore().deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # rosbags raises several types for malformed CDR
            raise DataError(f"malformed {conn.msgtype} message: {exc}", self.where(conn.topic)) from exc

    def _expect_type(self, topic: str) -> Any:
        conn = self._by_topic.get(topic)
        if conn is None:
            raise DataError(f"bag has no {topic} topic", self.where(topic))
        if conn.msgtype != TOPIC_TYPES[topic]:
            raise DataError(f"expected {TOPIC_TYPES[topic]}, got {conn.msgtype}", self.where(topic))
        return conn

    def rig(self, lidar_frame: str) -> Rig:
        """The rig from the first camera info and the static transforms (name/LiDAR model from custom data)."""
        if self._rig is not None:
            return self._rig
        info_conn, tf_conn = self._expect_type(CAMERA_INFO_TOPIC), self._expect_type(TF_STATIC_TOPIC)
        camera_info = next((self._deserialize(raw, c) for c, _, raw in self._reader.messages([info_conn])), None)
        if camera_info is None:
            raise DataError("no camera info message", self.where(CAMERA_INFO_TOPIC))
        transforms = [ts for c, _, raw in self._reader.messages([tf_conn])
                      for ts in self._deserialize(raw, c).transforms]
        name, model = self.path.name, {}
        custom = self.custom.get(RIG_CUSTOM_KEY)
        if custom:
            doc = yaml.safe_load(custom) or {}
            name = str(doc.get("rig", {}).get("name", name))
            model = dict(doc.get("lidar", {}).get("model", {}) or {})
        rig = rig_from_messages(camera_info, transforms, lidar_frame, name=name,
                                source=f"{self.where(CAMERA_INFO_TOPIC)}+{TF_STATIC_TOPIC}")
        rig.lidar_model = model
        self._rig = rig
        return rig

    def check_camera_info(self) -> int:
        """Deserialize every camera info message and check it matches the rig; returns how many."""
        if self._rig is None:
            raise DataError("read a frame first: the rig is built from the first cloud's frame",
                            self.where(CAMERA_INFO_TOPIC))
        conn = self._expect_type(CAMERA_INFO_TOPIC)
        n = 0
        for c, t, raw in self._reader.messages([conn]):
            msg = self._deserialize(raw, c)
            k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
            if (int(msg.width), int(msg.height)) != (self._rig.width, self._rig.height) or \
                    not np.allclose(k, self._rig.K):
                raise DataError(f"camera info at {t} ns changes the calibration ({msg.width}x{msg.height}, "
                                f"K {k.ravel().tolist()}) from the first message", self.where(CAMERA_INFO_TOPIC))
            n += 1
        return n

    def frames(self) -> Iterator[Frame]:
        """Frames in cloud order, each with the nearest image / ground truth within 50 ms (else none)."""
        cloud_conn = self._expect_type(LIDAR_TOPIC)
        image_conn = self._by_topic.get(IMAGE_TOPIC)
        gt_conn = self._by_topic.get(GT_TOPIC)
        info_conn = self._by_topic.get(FRAME_INFO_TOPIC)
        side = [c for c in (image_conn, gt_conn, info_conn) if c is not None]
        for c in side:
            self._expect_type(c.topic)
        buffers: dict[str, deque[tuple[int, Any]]] = {c.topic: deque() for c in side}
        pending: deque[tuple[int, Any]] = deque()
        index = 0
        for conn, t, raw in self._reader.messages([cloud_conn, *side]):
            msg = self._deserialize(raw, conn)
            (pending if conn.topic == LIDAR_TOPIC else buffers[conn.topic]).append((_msg_stamp(msg, t), msg))
            while pending and pending[0][0] + _LOOKAHEAD_NS < t:
                yield self._frame(index, *pending.popleft(), buffers)
                index += 1
                self._prune(buffers, pending[0][0] if pending else t)
        while pending:
            yield self._frame(index, *pending.popleft(), buffers)
            index += 1

    @staticmethod
    def _prune(buffers: dict[str, deque[tuple[int, Any]]], oldest_needed: int) -> None:
        for buf in buffers.values():
            while len(buf) > 1 and buf[0][0] < oldest_needed - _LOOKAHEAD_NS:
                buf.popleft()

    @staticmethod
    def _nearest(buf: deque[tuple[int, Any]] | None, stamp: int) -> tuple[int, Any] | None:
        if not buf:
            return None
        best = min(buf, key=lambda item: abs(item[0] - stamp))
        return best if abs(best[0] - stamp) <= SYNC_TOLERANCE_NS else None

    def _frame(self, index: int, stamp: int, cloud: Any, buffers: dict[str, deque[tuple[int, Any]]]) -> Frame:
        lidar_frame = str(cloud.header.frame_id).lstrip("/")
        rig = self.rig(lidar_frame)
        if lidar_frame != rig.lidar_frame:
            raise DataError(f"cloud frame_id {lidar_frame!r} differs from the first cloud's {rig.lidar_frame!r}",
                            self.where(LIDAR_TOPIC))
        points = cloud_to_points(cloud, f"{self.where(LIDAR_TOPIC)} (message {index})")
        image, image_stamp = None, None
        if (hit := self._nearest(buffers.get(IMAGE_TOPIC), stamp)) is not None:
            where = f"{self.where(IMAGE_TOPIC)} (stamp {hit[0]})"
            image, image_stamp = image_msg_to_array(hit[1], where), hit[0]
            rig.check_image(image, where)
        boxes: list[Box3D] = []
        has_gt = False
        if (hit := self._nearest(buffers.get(GT_TOPIC), stamp)) is not None:
            has_gt = True
            boxes = markers_to_boxes(hit[1], f"{self.where(GT_TOPIC)} (stamp {hit[0]})",
                                     self._gt_to_lidar(hit[1], rig))
        frame_id, meta = f"{index:06d}", {}
        if (hit := self._nearest(buffers.get(FRAME_INFO_TOPIC), stamp)) is not None:
            try:
                doc = json.loads(hit[1].data)
                frame_id, meta = str(doc["frame_id"]) or frame_id, dict(doc["meta"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(f"frame info is not {{'frame_id', 'meta'}} JSON: {exc}",
                                f"{self.where(FRAME_INFO_TOPIC)} (stamp {hit[0]})") from exc
        meta.update(source=str(self.path), has_labels=has_gt)
        return Frame(points=points, image=image, rig=rig, stamp_ns=stamp, boxes=boxes, frame_id=frame_id,
                     image_stamp_ns=image_stamp if image_stamp != stamp else None, meta=meta)

    def _gt_to_lidar(self, msg: Any, rig: Rig) -> np.ndarray | None:
        frames = {str(m.header.frame_id).lstrip("/") for m in msg.markers if int(m.action) == 0}
        if not frames or frames == {rig.lidar_frame}:
            return None
        if frames == {rig.base_frame}:
            return invert_transform(rig.base_to_lidar)
        raise DataError(f"markers in frames {sorted(frames)}; expected {rig.lidar_frame!r} or {rig.base_frame!r}",
                        self.where(GT_TOPIC))


def read_bag(path: str | Path) -> Iterator[Frame]:
    """Frames of a rosbag2 folder (mcap or sqlite3); see :meth:`BagReader.frames`."""
    with BagReader(path) as reader:
        yield from reader.frames()
