"""ROS messages <-> numpy / Frame / Rig / DetectionResult, validated at the edge.

Every reader checks the message before trusting it and raises :class:`DataError` whose ``where`` is
``"<topic>:<field>"`` (:class:`CalibrationError` from :class:`Rig` for inconsistent camera intrinsics).
Writers fill array fields from ``ndarray.tobytes()`` (assigning arrays element-wise is ~60x slower).
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from trustworthy_perception_msgs.msg import Detection3D, Detection3DArray, DetectionFeatures

from perception.detector.result import DetectionResult
from perception.errors import DataError
from perception.frame import DETECTION_CLASSES, Detection, Frame
from perception.io.bag import cloud_to_points, image_msg_to_array
from perception.io.recording import detections_from_msg
from perception.rig import Rig

_XYZ = ("x", "y", "z")
_FIELD_SIZE = 4  # every field we read is FLOAT32
#: image encodings accepted on input -> channels
_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "mono8": 1}
_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "")
UNKNOWN_CLASS_ID = 255


# ---------------------------------------------------------------------- time
def stamp_to_ns(stamp: Time) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """``builtin_interfaces/Time`` of a nanosecond count."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """A ``std_msgs/Header``."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------------- PointCloud2
def pointcloud_to_points(msg: PointCloud2, topic: str = "pointcloud") -> np.ndarray:
    """(N, 4) float32 ``x, y, z, intensity`` from a PointCloud2 (intensity 0 when the field is absent).

    Validates first, naming the field at fault: little-endian only, FLOAT32 scalar x/y/z(/intensity)
    inside ``point_step`` without overlap, ``row_step`` and data length consistent with the size, and
    finite coordinates when the cloud claims ``is_dense``. Extraction is :func:`perception.io.bag.cloud_to_points`.
    """
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    if msg.is_bigendian:
        raise DataError("big-endian point clouds are not supported", f"{topic}:is_bigendian")
    fields = {}
    for f in msg.fields:
        if f.name in fields:
            raise DataError(f"field '{f.name}' appears twice", f"{topic}:fields")
        fields[f.name] = f
    missing = [c for c in _XYZ if c not in fields]
    if missing:
        raise DataError(f"missing field(s) {missing}; got {list(fields)}", f"{topic}:fields")
    if n > 0 and step <= 0:
        raise DataError(f"point_step must be positive, got {step}", f"{topic}:point_step")
    used = [fields[name] for name in (*_XYZ, "intensity") if name in fields]
    for f in used:
        where = f"{topic}:fields[{f.name}]"
        if f.datatype != PointField.FLOAT32:
            raise DataError(f"expected FLOAT32 ({PointField.FLOAT32}), got datatype {f.datatype}", f"{where}.datatype")
        if f.count != 1:
            raise DataError(f"expected count 1, got {f.count}", f"{where}.count")
        if f.offset + _FIELD_SIZE > step:
            raise DataError(f"offset {f.offset} + 4 bytes exceeds point_step {step}", f"{where}.offset")
    offsets = sorted(int(f.offset) for f in used)
    if any(b - a < _FIELD_SIZE for a, b in zip(offsets, offsets[1:])):
        raise DataError(f"fields overlap (offsets {offsets})", f"{topic}:fields")
    if msg.row_step < int(msg.width) * step:
        raise DataError(f"row_step {msg.row_step} < width {msg.width} * point_step {step}", f"{topic}:row_step")
    size = len(msg.data)
    if size != int(msg.row_step) * int(msg.height):
        raise DataError(f"{size} bytes, expected row_step {msg.row_step} * height {msg.height}", f"{topic}:data")
    points = cloud_to_points(msg, f"{topic}:data")
    if msg.is_dense and n and not np.isfinite(points[:, :3]).all():
        bad = int((~np.isfinite(points[:, :3]).all(axis=1)).sum())
        raise DataError(f"is_dense is true but {bad} of {n} points have NaN/inf coordinates", f"{topic}:is_dense")
    return points


def points_to_pointcloud(points: np.ndarray, header: Header) -> PointCloud2:
    """An unorganised PointCloud2 (x, y, z, intensity float32) from (N, 4) points."""
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 4))
    msg = PointCloud2(header=header, height=1, width=len(pts), is_bigendian=False, point_step=16,
                      row_step=16 * len(pts), is_dense=bool(np.isfinite(pts[:, :3]).all()))
    msg.fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, name in enumerate(("x", "y", "z", "intensity"))]
    msg.data = array.array("B", pts.tobytes())
    return msg


# ---------------------------------------------------------------------- Image
def image_to_array(msg: Image, topic: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 / bgr8 / mono8 Image (row padding allowed); validated field by field."""
    channels = _ENCODINGS.get(msg.encoding)
    if channels is None:
        raise DataError(f"unsupported encoding '{msg.encoding}'; expected one of {list(_ENCODINGS)}",
                        f"{topic}:encoding")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise DataError(f"empty image {w}x{h}", f"{topic}:{'height' if h <= 0 else 'width'}")
    if msg.step < w * channels:
        raise DataError(f"step {msg.step} < width {w} * {channels} channels", f"{topic}:step")
    if len(msg.data) != int(msg.step) * h:
        raise DataError(f"{len(msg.data)} bytes, expected step {msg.step} * height {h}", f"{topic}:data")
    return image_msg_to_array(msg, f"{topic}:data")


def array_to_image(image: np.ndarray, header: Header) -> Image:
    """An rgb8 Image from an (H, W, 3) uint8 RGB array."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"expected an (H, W, 3) RGB array, got shape {img.shape}", "image")
    msg = Image(header=header, height=img.shape[0], width=img.shape[1], encoding="rgb8", is_bigendian=0,
                step=3 * img.shape[1])
    msg.data = array.array("B", img.tobytes())
    return msg


# ---------------------------------------------------------------------- CameraInfo <-> Rig
def camera_info_to_rig(msg: CameraInfo, base: Rig, topic: str = "camera_info") -> Rig:
    """``base`` with the intrinsics, image size, distortion and camera frame of a CameraInfo.

    CameraInfo carries no LiDAR-camera extrinsics, so those (and the LiDAR mounting) come from ``base``.
    """
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise DataError(f"image size {w}x{h} must be positive", f"{topic}:{'width' if w <= 0 else 'height'}")
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise DataError("K has NaN/inf entries", f"{topic}:k")
    if msg.distortion_model not in _DISTORTION_MODELS:
        raise DataError(f"unsupported distortion model '{msg.distortion_model}'; expected plumb_bob or "
                        "rational_polynomial", f"{topic}:distortion_model")
    d = np.asarray(msg.d, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise DataError("D has NaN/inf entries", f"{topic}:d")
    if d.size not in (0, 5, 8) or (d.size == 8 and np.any(d[5:] != 0)):
        raise DataError(f"expected 5 plumb_bob coefficients (or 8 with k4..k6 zero), got {d.size}", f"{topic}:d")
    dist = np.zeros(5) if d.size == 0 else d[:5]
    # Rig validates the intrinsics (positive focal lengths, principal point inside the image) and names the topic.
    return Rig(name=base.name, base_to_lidar=base.base_to_lidar, lidar_to_camera=base.lidar_to_camera,
               K=k, width=w, height=h, distortion=dist, base_frame=base.base_frame, lidar_frame=base.lidar_frame,
               camera_frame=msg.header.frame_id or base.camera_frame, lidar_model=base.lidar_model, source=topic)


def rig_to_camera_info(rig: Rig, header: Header) -> CameraInfo:
    """The CameraInfo of a rig's camera (P = [K | 0], R = I, plumb_bob)."""
    p = np.zeros((3, 4))
    p[:, :3] = rig.K
    return CameraInfo(header=header, width=rig.width, height=rig.height, distortion_model="plumb_bob",
                      d=[float(v) for v in rig.distortion], k=rig.K.astype(np.float64).ravel(),
                      r=np.eye(3).ravel(), p=p.ravel())


def frame_from_messages(cloud: PointCloud2, image: Image | None, rig: Rig | None,
                        cloud_topic: str = "pointcloud", image_topic: str = "image") -> Frame:
    """A :class:`Frame` from a cloud, an optional image and the rig (image size checked against it)."""
    points = pointcloud_to_points(cloud, cloud_topic)
    img = None
    image_stamp = None
    if image is not None:
        img = image_to_array(image, image_topic)
        if rig is not None:
            rig.check_image(img, where=f"{image_topic}:width")
        image_stamp = stamp_to_ns(image.header.stamp)
    return Frame(points=points, image=img, rig=rig, stamp_ns=stamp_to_ns(cloud.header.stamp),
                 frame_id=cloud.header.frame_id, image_stamp_ns=image_stamp)


# ---------------------------------------------------------------------- detections
def _yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0))


def quaternion_yaw(q: Quaternion) -> float:
    """Yaw (about +z) of a quaternion."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def detection_to_msg(det: Detection, class_names: Sequence[str] = DETECTION_CLASSES,
                     camera_used: bool = True) -> Detection3D:
    """A ``Detection3D`` from a :class:`Detection` (NaN shares / OOD score when unknown).

    ``camera_used=False`` (the network ran LiDAR-only) gives 100 % LiDAR, ``share_source`` SHARE_LIDAR_ONLY.
    """
    box = det.box
    if not camera_used:
        lidar, camera, source = 1.0, 0.0, Detection3D.SHARE_LIDAR_ONLY
    elif "lidar" in det.modality_share:
        lidar, camera = float(det.modality_share["lidar"]), float(det.modality_share.get("camera", math.nan))
        source = Detection3D.SHARE_ATTENTION
    else:
        lidar, camera, source = math.nan, math.nan, Detection3D.SHARE_UNKNOWN
    cov = np.asarray(det.covariance, dtype=np.float64)
    if cov.shape != (7, 7):
        raise DataError(f"covariance must be 7x7, got {cov.shape}", f"detection[{box.label}].covariance")
    vel = box.velocity
    msg = Detection3D(
        class_id=class_names.index(box.label) if box.label in class_names else UNKNOWN_CLASS_ID,
        label=box.label, existence_probability=float(det.probability), score=float(det.score),
        pose=Pose(position=Point(x=float(box.center[0]), y=float(box.center[1]), z=float(box.center[2])),
                  orientation=_yaw_quaternion(box.yaw)),
        size=Vector3(x=float(box.size[0]), y=float(box.size[1]), z=float(box.size[2])),
        velocity_known=vel is not None,
        lidar_share=lidar, camera_share=camera, share_source=source,
        ood_score=math.nan if det.ood_score is None else float(det.ood_score),
    )
    msg.covariance = np.ascontiguousarray(cov.reshape(49))
    if vel is not None:
        msg.velocity = Vector3(x=float(vel[0]), y=float(vel[1]), z=0.0)
    return msg


def result_to_msg(result: DetectionResult, header: Header, class_names: Sequence[str] = DETECTION_CLASSES,
                  extra_degraded: Sequence[str] = ()) -> Detection3DArray:
    """A ``Detection3DArray`` from a :class:`DetectionResult`; ``extra_degraded`` adds node-side reasons."""
    reasons = list(dict.fromkeys([*result.degraded, *extra_degraded]))
    camera_used = result.camera_used  # a frame released without its image says camera_missing itself
    return Detection3DArray(header=header, detections=[detection_to_msg(d, class_names, camera_used)
                                                       for d in result.detections],
                            model_id=result.model_id, degraded=bool(reasons), degraded_reasons=reasons,
                            dropped_points=int(result.dropped_points))


def msg_to_detections(msg: Detection3DArray) -> list[Detection]:
    """:class:`Detection` objects back from a ``Detection3DArray`` (no attention or features)."""
    return detections_from_msg(msg)


def features_to_msg(result: DetectionResult, header: Header) -> DetectionFeatures:
    """``DetectionFeatures`` (row i = detection i) from a result; empty features when the model gives none."""
    feats = [d.feature for d in result.detections]
    msg = DetectionFeatures(header=header, num_detections=len(feats), labels=[d.label for d in result.detections],
                            engine=result.model_id.rpartition("@")[2], degraded=list(result.degraded))
    if feats and all(f is not None for f in feats):
        mat = np.stack([np.asarray(f, dtype=np.float32).ravel() for f in feats])
        msg.dim = int(mat.shape[1])
        msg.features = array.array("f", mat.tobytes())
    logits = [d.logits for d in result.detections]
    if logits and all(z is not None for z in logits):
        mat = np.stack([np.asarray(z, dtype=np.float32).ravel() for z in logits])
        msg.num_classes = int(mat.shape[1])
        msg.logits = array.array("f", mat.tobytes())
    geometry = [d.geometry for d in result.detections]
    if geometry and all(g is not None for g in geometry):
        mat = np.stack([np.asarray(g, dtype=np.float32).ravel() for g in geometry])
        msg.geometry_dim = int(mat.shape[1])
        msg.geometry = array.array("f", mat.tobytes())
    if result.frame_embedding is not None:
        msg.frame_embedding = array.array("f", np.asarray(result.frame_embedding, dtype=np.float32).ravel().tobytes())
    return msg


def features_from_msg(msg: DetectionFeatures,
                      topic: str = "features") -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(features (N, dim), frame_embedding (D,), logits (N, num_classes) or None, geometry (N, geometry_dim)
    or None)`` from a ``DetectionFeatures``; checks the sizes agree."""
    feats = np.frombuffer(msg.features, dtype=np.float32)
    if feats.size != msg.num_detections * msg.dim:
        raise DataError(f"{feats.size} values, expected num_detections {msg.num_detections} * dim {msg.dim}",
                        f"{topic}:features")
    if len(msg.labels) != msg.num_detections:
        raise DataError(f"{len(msg.labels)} labels for {msg.num_detections} detections", f"{topic}:labels")
    z = np.frombuffer(msg.logits, dtype=np.float32)
    if z.size != msg.num_detections * msg.num_classes:
        raise DataError(f"{z.size} values, expected num_detections {msg.num_detections} * num_classes "
                        f"{msg.num_classes}", f"{topic}:logits")
    logits = z.reshape(msg.num_detections, msg.num_classes).copy() if msg.num_classes else None
    g = np.frombuffer(msg.geometry, dtype=np.float32)
    if g.size != msg.num_detections * msg.geometry_dim:
        raise DataError(f"{g.size} values, expected num_detections {msg.num_detections} * geometry_dim "
                        f"{msg.geometry_dim}", f"{topic}:geometry")
    geometry = g.reshape(msg.num_detections, msg.geometry_dim).copy() if msg.geometry_dim else None
    emb = np.frombuffer(msg.frame_embedding, np.float32).copy()
    return feats.reshape(msg.num_detections, msg.dim).copy(), emb, logits, geometry
