"""The currency of the stack: :class:`Frame` in, :class:`Detection` out.

Conventions (REP-103): boxes live in the LiDAR frame, x forward, y left, z up, metres.
A box is its geometric centre ``(x, y, z)``, size ``(l, w, h)`` along its own x, y, z
axes, and ``yaw`` about +z (0 = heading along +x), radians in [-pi, pi).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from perception.rig import Rig

#: Every object class the data layer knows (KITTI's names, plus simulated out-of-distribution types).
KNOWN_CLASSES: tuple[str, ...] = (
    "Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare",
)
#: Simulated out-of-distribution object types (never in training data; labelled with these names).
OOD_CLASSES: tuple[str, ...] = ("Animal", "Debris", "Stroller", "ConstructionMachine")
#: The classes the detector is trained and evaluated on.
DETECTION_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")

#: Column layout of a point cloud array.
POINT_FIELDS: tuple[str, ...] = ("x", "y", "z", "intensity")


@dataclass
class Box3D:
    """A labelled 3D box in the LiDAR frame (ground truth, or the geometry of a detection)."""

    label: str
    center: np.ndarray  # (3,) float64, metres
    size: np.ndarray  # (3,) l, w, h, metres
    yaw: float  # radians about +z
    num_points: int = -1  # LiDAR points inside; -1 when unknown
    occlusion: int = 0  # KITTI level: 0 visible, 1 partly, 2 largely occluded, 3 unknown
    truncation: float = 0.0  # share of the box outside the image, 0..1
    track_id: int = -1  # stable id across a drive; -1 when unknown
    bbox2d: np.ndarray | None = None  # (4,) left, top, right, bottom in image pixels
    velocity: np.ndarray | None = None  # (2,) m/s in the LiDAR frame when known

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, dtype=np.float64).reshape(3)
        self.size = np.asarray(self.size, dtype=np.float64).reshape(3)
        self.yaw = float(self.yaw)

    def as_array(self) -> np.ndarray:
        """``[x, y, z, l, w, h, yaw]`` as a (7,) float64 array."""
        return np.concatenate([self.center, self.size, [self.yaw]])

    def corners(self) -> np.ndarray:
        """The 8 corners, (8, 3): bottom face first (counter-clockwise from front-left), then top."""
        return box_corners(self.as_array()[None])[0]


def boxes_to_array(boxes: list[Box3D]) -> np.ndarray:
    """Stack boxes into an (N, 7) ``[x, y, z, l, w, h, yaw]`` array."""
    if not boxes:
        return np.zeros((0, 7), dtype=np.float64)
    return np.stack([b.as_array() for b in boxes])


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners of (N, 7) boxes as (N, 8, 3); bottom face first, then the top face."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    l, w, h = boxes[:, 3:4] / 2, boxes[:, 4:5] / 2, boxes[:, 5:6] / 2
    x = np.concatenate([l, -l, -l, l, l, -l, -l, l], axis=1)
    y = np.concatenate([w, w, -w, -w, w, w, -w, -w], axis=1)
    z = np.concatenate([-h, -h, -h, -h, h, h, h, h], axis=1)
    c, s = np.cos(boxes[:, 6:7]), np.sin(boxes[:, 6:7])
    cx = c * x - s * y + boxes[:, 0:1]
    cy = s * x + c * y + boxes[:, 1:2]
    cz = z + boxes[:, 2:3]
    return np.stack([cx, cy, cz], axis=-1)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Boolean mask (N_boxes, N_points): which points lie inside which (N, 7) box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    if len(boxes) == 0 or len(pts) == 0:
        return np.zeros((len(boxes), len(pts)), dtype=bool)
    d = pts[None, :, :] - boxes[:, None, :3]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    local_x = c * d[..., 0] + s * d[..., 1]
    local_y = -s * d[..., 0] + c * d[..., 1]
    return (
        (np.abs(local_x) <= boxes[:, 3:4] / 2)
        & (np.abs(local_y) <= boxes[:, 4:5] / 2)
        & (np.abs(d[..., 2]) <= boxes[:, 5:6] / 2)
    )


@dataclass
class Frame:
    """One synchronised sensor snapshot: the unit that flows through the stack.

    ``points`` is (N, 4) float32 ``x, y, z, intensity`` in the LiDAR frame; ``image`` is
    (H, W, 3) uint8 RGB or ``None`` when the camera is missing; ``stamp_ns`` is the LiDAR
    stamp in nanoseconds; ``boxes`` is the ground truth when known.
    """

    points: np.ndarray
    image: np.ndarray | None = None
    rig: Rig | None = None
    stamp_ns: int = 0
    boxes: list[Box3D] = field(default_factory=list)
    frame_id: str = ""  # e.g. KITTI index "000123" or "<drive>/<seq>"
    image_stamp_ns: int | None = None  # camera stamp when it differs from the LiDAR's
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float32).reshape(-1, 4)

    @property
    def has_camera(self) -> bool:
        """True when an image is present."""
        return self.image is not None


@dataclass
class Detection:
    """One detected object: what, where, how sure, and what the model looked at."""

    box: Box3D  # label, centre, size, yaw in the LiDAR frame
    score: float  # raw classifier score (sigmoid of the logit)
    probability: float  # calibrated existence probability
    covariance: np.ndarray  # (7, 7) covariance of [x, y, z, l, w, h, yaw] (diagonal when heteroscedastic)
    modality_share: dict[str, float] = field(default_factory=dict)  # {"lidar": a, "camera": 1 - a}
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # "bev": (L, H, cells), "image": (L, H, pixels)
    feature: np.ndarray | None = None  # query embedding, for OOD scoring
    logits: np.ndarray | None = None  # raw class logits (C,), for energy-based OOD scoring
    geometry: np.ndarray | None = None  # point-geometry descriptor of the box (perception.ood.geometry), for OOD
    ood_score: float | None = None

    @property
    def label(self) -> str:
        """The class name."""
        return self.box.label

    @property
    def sigma(self) -> np.ndarray:
        """Per-parameter standard deviation, (7,)."""
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))
