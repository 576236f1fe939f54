"""Detections -> RViz ``MarkerArray``: class-coloured boxes (opacity = calibrated probability),
1-sigma uncertainty shells and "class probability modality-share" labels."""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from perception.frame import Detection

#: RGB per class; anything else is grey.
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "Car": (0.15, 0.55, 1.0), "Van": (0.1, 0.8, 0.9), "Truck": (0.4, 0.3, 1.0),
    "Pedestrian": (1.0, 0.25, 0.2), "Person_sitting": (1.0, 0.5, 0.6), "Cyclist": (1.0, 0.75, 0.1),
}
_GREY = (0.7, 0.7, 0.7)


def shell_size(det: Detection) -> np.ndarray:
    """(3,) extent of the 1-sigma shell: the box grown by its size sigma and twice its centre sigma
    (the centre covariance rotated into the box's own axes)."""
    sigma = det.sigma
    c, s = math.cos(det.box.yaw), math.sin(det.box.yaw)
    rot = np.array([[c, -s], [s, c]])
    cov_xy = np.asarray(det.covariance, dtype=np.float64)[:2, :2]
    local = rot.T @ cov_xy @ rot
    centre_sigma = np.sqrt(np.clip([local[0, 0], local[1, 1], det.covariance[2][2]], 0.0, None))
    return det.box.size + sigma[3:6] + 2.0 * centre_sigma


def label_text(det: Detection, camera_used: bool = True) -> str:
    """``Car 0.87 L92% C8%``: class, calibrated probability, modality share (``LiDAR-only`` without camera)."""
    p = float(np.clip(det.probability, 0.0, 1.0))
    if not camera_used:
        return f"{det.label} {p:.2f} LiDAR-only"
    cam = det.modality_share.get("camera")
    if cam is None or not math.isfinite(cam):
        return f"{det.label} {p:.2f}"
    return f"{det.label} {p:.2f} L{100 * (1 - cam):.0f}% C{100 * cam:.0f}%"


def detections_to_markers(detections: list[Detection], header: Header, min_probability: float = 0.0,
                          lifetime_s: float = 0.5, camera_used: bool = True) -> MarkerArray:
    """Markers for one frame: a DELETEALL first, then per detection a box, a shell and a label
    (class, probability, modality share; ``camera_used=False``: LiDAR-only)."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    for i, det in enumerate(d for d in detections if d.probability >= min_probability):
        r, g, b = CLASS_COLORS.get(det.label, _GREY)
        p = float(np.clip(det.probability, 0.0, 1.0))
        box = det.box
        pose = Pose(position=Point(x=float(box.center[0]), y=float(box.center[1]), z=float(box.center[2])),
                    orientation=Quaternion(z=math.sin(box.yaw / 2), w=math.cos(box.yaw / 2)))
        common = {"header": header, "id": i, "action": Marker.ADD, "lifetime": lifetime, "frame_locked": False}
        out.markers.append(Marker(ns="boxes", type=Marker.CUBE, pose=pose,
                                  scale=Vector3(x=float(box.size[0]), y=float(box.size[1]), z=float(box.size[2])),
                                  color=ColorRGBA(r=r, g=g, b=b, a=0.15 + 0.7 * p), **common))
        sx, sy, sz = (float(v) for v in shell_size(det))
        out.markers.append(Marker(ns="uncertainty", type=Marker.CUBE, pose=pose, scale=Vector3(x=sx, y=sy, z=sz),
                                  color=ColorRGBA(r=r, g=g, b=b, a=0.12), **common))
        text_pose = Pose(position=Point(x=pose.position.x, y=pose.position.y,
                                        z=pose.position.z + float(box.size[2]) / 2 + 0.6))
        out.markers.append(Marker(ns="labels", type=Marker.TEXT_VIEW_FACING, pose=text_pose,
                                  scale=Vector3(z=0.6), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                                  text=label_text(det, camera_used), **common))
    return out
