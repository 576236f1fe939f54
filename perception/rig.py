"""Sensor rig: LiDAR and camera calibration loaded from YAML, validated, projected, KITTI-converted.

Frames (REP-103/105): ``base_link`` (x forward, y left, z up) on the ground below the
vehicle's reference point; the LiDAR frame has the same axes, mounted at
``lidar.extrinsics``; the camera frame is an *optical* frame (z forward, x right, y down).
``lidar_to_camera`` maps LiDAR-frame points into that optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from perception.errors import CalibrationError

_ORTHO_TOL = 1e-3


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation matrix from roll, pitch, yaw (radians; R = Rz(yaw) Ry(pitch) Rx(roll))."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a 3-vector."""
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return t


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    inv = np.eye(4)
    inv[:3, :3] = t[:3, :3].T
    inv[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return inv


def transform_points(t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3+) points; returns (N, 3)."""
    p = np.asarray(points, dtype=np.float64)[:, :3]
    return p @ t[:3, :3].T + t[:3, 3]


def _check_rotation(r: np.ndarray, where: str) -> None:
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise CalibrationError("rotation must be a finite 3x3 matrix", where)
    if np.abs(r @ r.T - np.eye(3)).max() > _ORTHO_TOL or abs(np.linalg.det(r) - 1.0) > _ORTHO_TOL:
        raise CalibrationError("rotation is not orthonormal with determinant +1", where)


@dataclass
class Rig:
    """A LiDAR + camera rig. All matrices are float64 numpy arrays."""

    name: str
    base_to_lidar: np.ndarray  # 4x4, pose of the LiDAR in base_link
    lidar_to_camera: np.ndarray  # 4x4, maps LiDAR points into the camera optical frame
    K: np.ndarray  # 3x3 intrinsics
    width: int
    height: int
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))  # k1 k2 p1 p2 k3
    base_frame: str = "base_link"
    lidar_frame: str = "lidar"
    camera_frame: str = "camera_optical"
    lidar_model: dict[str, Any] = field(default_factory=dict)  # beam pattern etc., used by the simulator
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`CalibrationError` naming the file and key when anything is inconsistent."""
        src = self.source
        _check_rotation(self.base_to_lidar[:3, :3], f"{src}:lidar.extrinsics")
        _check_rotation(self.lidar_to_camera[:3, :3], f"{src}:camera.lidar_to_camera")
        k = self.K
        if k.shape != (3, 3) or not np.all(np.isfinite(k)):
            raise CalibrationError("K must be a finite 3x3 matrix", f"{src}:camera.K")
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CalibrationError(f"focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}",
                                   f"{src}:camera.K")
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"image size must be positive, got {self.width}x{self.height}",
                                   f"{src}:camera.width")
        if not (0 < k[0, 2] < self.width and 0 < k[1, 2] < self.height):
            raise CalibrationError(
                f"principal point ({k[0, 2]:.1f}, {k[1, 2]:.1f}) lies outside the {self.width}x{self.height} image "
                "(image size mismatch)", f"{src}:camera.K")
        if self.distortion.shape != (5,) or not np.all(np.isfinite(self.distortion)):
            raise CalibrationError("distortion must be 5 finite numbers (k1 k2 p1 p2 k3)", f"{src}:camera.distortion")

    def check_image(self, image: np.ndarray, where: str = "image") -> None:
        """Raise when an image does not match the rig's camera (size, channels, dtype)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise CalibrationError(f"expected HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}", where)
        if image.shape[:2] != (self.height, self.width):
            raise CalibrationError(
                f"image size {image.shape[1]}x{image.shape[0]} does not match the calibration "
                f"{self.width}x{self.height} of rig '{self.name}' ({self.source})", where)

    # ------------------------------------------------------------------ geometry
    @property
    def camera_to_lidar(self) -> np.ndarray:
        """4x4 transform from the camera optical frame to the LiDAR frame."""
        return invert_transform(self.lidar_to_camera)

    @property
    def lidar_height(self) -> float:
        """Mounting height of the LiDAR above base_link (metres)."""
        return float(self.base_to_lidar[2, 3])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project LiDAR-frame points into the image.

        Returns ``(uv, depth, visible)``: (N, 2) pixel coordinates, (N,) depth along the
        optical axis, and (N,) bool for points in front of the camera and inside the image.
        """
        cam = transform_points(self.lidar_to_camera, points)
        depth = cam[:, 2]
        z = np.where(np.abs(depth) < 1e-6, 1e-6, depth)
        x, y = cam[:, 0] / z, cam[:, 1] / z
        if np.any(self.distortion):
            k1, k2, p1, p2, k3 = self.distortion
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
            x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                    y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
        u = self.K[0, 0] * x + self.K[0, 1] * y + self.K[0, 2]
        v = self.K[1, 1] * y + self.K[1, 2]
        uv = np.stack([u, v], axis=1)
        visible = (depth > 0.1) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return uv, depth, visible

    def camera_rays(self, step: int = 1) -> np.ndarray:
        """Unit ray directions in the LiDAR frame for every ``step``-th pixel centre, (H', W', 3).

        Distortion is ignored (the simulator renders an ideal pinhole image).
        """
        us = np.arange(0, self.width, step) + 0.5
        vs = np.arange(0, self.height, step) + 0.5
        uu, vv = np.meshgrid(us, vs)
        kinv = np.linalg.inv(self.K)
        pix = np.stack([uu, vv, np.ones_like(uu)], axis=-1) @ kinv.T
        d = pix @ self.camera_to_lidar[:3, :3].T
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    # ------------------------------------------------------------------ YAML
    @classmethod
    def from_yaml(cls, path: str | Path) -> Rig:
        """Load and validate a rig YAML file (see ``calibration/sim_default.yaml``)."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError("calibration file not found", str(path))
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise CalibrationError(f"not valid YAML: {exc}", str(path)) from exc
        if not isinstance(doc, dict):
            raise CalibrationError("expected a mapping at the top level", str(path))
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<dict>") -> Rig:
        """Build a rig from the parsed YAML structure; errors name ``source`` and the key."""

        def get(d: Any, key: str, prefix: str) -> Any:
            if not isinstance(d, dict) or key not in d:
                raise CalibrationError("missing key", f"{source}:{prefix}{key}")
            return d[key]

        def matrix(value: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
            try:
                m = np.asarray(value, dtype=np.float64).reshape(shape)
            except (ValueError, TypeError) as exc:
                raise CalibrationError(f"expected {shape} numbers", f"{source}:{where}") from exc
            if not np.all(np.isfinite(m)):
                raise CalibrationError("values must be finite", f"{source}:{where}")
            return m

        def transform(d: Any, where: str) -> np.ndarray:
            if not isinstance(d, dict):
                raise CalibrationError("expected a mapping", f"{source}:{where}")
            if "matrix" in d:
                return matrix(d["matrix"], (4, 4), f"{where}.matrix")
            t = matrix(get(d, "translation", f"{where}."), (3,), f"{where}.translation")
            if "rotation" in d:
                r = matrix(d["rotation"], (3, 3), f"{where}.rotation")
            else:
                r = rpy_to_matrix(*matrix(get(d, "rpy", f"{where}."), (3,), f"{where}.rpy"))
            return make_transform(r, t)

        lidar = get(doc, "lidar", "")
        cam = get(doc, "camera", "")
        rig_meta = doc.get("rig", {}) or {}
        rig = cls(
            name=str(rig_meta.get("name", Path(source).stem)),
            base_frame=str(rig_meta.get("base_frame", "base_link")),
            base_to_lidar=transform(get(lidar, "extrinsics", "lidar."), "lidar.extrinsics"),
            lidar_frame=str(lidar.get("frame_id", "lidar")),
            lidar_model=dict(lidar.get("model", {}) or {}),
            camera_frame=str(cam.get("frame_id", "camera_optical")),
            K=matrix(get(cam, "K", "camera."), (3, 3), "camera.K"),
            distortion=matrix(cam.get("distortion", [0, 0, 0, 0, 0]), (5,), "camera.distortion"),
            width=int(get(cam, "width", "camera.")),
            height=int(get(cam, "height", "camera.")),
            lidar_to_camera=transform(get(cam, "lidar_to_camera", "camera."), "camera.lidar_to_camera"),
            source=source,
        )
        return rig

    def to_dict(self) -> dict[str, Any]:
        """The YAML structure of this rig (inverse of :meth:`from_dict`)."""
        return {
            "rig": {"name": self.name, "base_frame": self.base_frame},
            "lidar": {
                "frame_id": self.lidar_frame,
                "extrinsics": {"matrix": self.base_to_lidar.tolist()},
                **({"model": self.lidar_model} if self.lidar_model else {}),
            },
            "camera": {
                "frame_id": self.camera_frame,
                "width": self.width,
                "height": self.height,
                "K": self.K.tolist(),
                "distortion": self.distortion.tolist(),
                "lidar_to_camera": {"matrix": self.lidar_to_camera.tolist()},
            },
        }

    def to_yaml(self, path: str | Path) -> None:
        """Write this rig as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------- KITTI calib files
KITTI_CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam")


@dataclass
class KittiCalib:
    """The raw matrices of a KITTI ``calib/*.txt`` file (camera 2 = left colour camera)."""

    P2: np.ndarray  # 3x4
    R0_rect: np.ndarray  # 3x3
    Tr_velo_to_cam: np.ndarray  # 3x4
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # P0, P1, P3, Tr_imu_to_velo, ...

    @property
    def velo_to_rect(self) -> np.ndarray:
        """4x4 transform from the Velodyne frame into the rectified camera-0 frame (labels' frame)."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3, :] = self.Tr_velo_to_cam
        return r0 @ tr

    def to_rig(self, width: int = 1242, height: int = 375, name: str = "kitti", source: str = "<kitti>",
               lidar_height: float = 1.73) -> Rig:
        """The equivalent :class:`Rig` for camera 2 (projection-identical to ``P2 @ R0 @ Tr``)."""
        k = self.P2[:, :3]
        offset = np.linalg.solve(k, self.P2[:, 3])  # camera-2 centre offset in the rectified frame
        lidar_to_cam2 = make_transform(np.eye(3), offset) @ self.velo_to_rect
        # Re-orthonormalise: KITTI's published matrices are rounded to ~1e-6.
        u, _, vt = np.linalg.svd(lidar_to_cam2[:3, :3])
        lidar_to_cam2[:3, :3] = u @ vt
        return Rig(name=name, base_to_lidar=make_transform(np.eye(3), [0.0, 0.0, lidar_height]),
                   lidar_to_camera=lidar_to_cam2, K=k.copy(), width=width, height=height,
                   lidar_frame="velodyne", camera_frame="camera2_optical", source=source)

    @classmethod
    def from_rig(cls, rig: Rig) -> KittiCalib:
        """KITTI matrices for a rig: P2 = [K | 0], R0_rect = I, Tr_velo_to_cam = lidar_to_camera."""
        p2 = np.zeros((3, 4))
        p2[:, :3] = rig.K
        return cls(P2=p2, R0_rect=np.eye(3), Tr_velo_to_cam=rig.lidar_to_camera[:3, :].copy())

    @classmethod
    def read(cls, path: str | Path) -> KittiCalib:
        """Parse a KITTI calib file; errors name the file and the key or line."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CalibrationError(f"cannot read: {exc}", str(path)) from exc
        values: dict[str, np.ndarray] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            key, sep, rest = line.partition(":")
            if not sep:
                raise CalibrationError(f"expected 'KEY: numbers', got {line[:40]!r}", f"{path}:{lineno}")
            try:
                values[key.strip()] = np.array([float(v) for v in rest.split()])
            except ValueError as exc:
                raise CalibrationError(f"non-numeric value for {key.strip()}", f"{path}:{lineno}") from exc
        shapes = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}
        mats = {}
        for key, shape in shapes.items():
            if key not in values:
                raise CalibrationError("missing key", f"{path}:{key}")
            if values[key].size != shape[0] * shape[1]:
                raise CalibrationError(f"expected {shape[0] * shape[1]} numbers, got {values[key].size}",
                                       f"{path}:{key}")
            mats[key] = values[key].reshape(shape)
        extra = {k: v for k, v in values.items() if k not in shapes}
        calib = cls(P2=mats["P2"], R0_rect=mats["R0_rect"], Tr_velo_to_cam=mats["Tr_velo_to_cam"], extra=extra)
        if calib.P2[0, 0] <= 0 or calib.P2[1, 1] <= 0:
            raise CalibrationError("focal lengths must be positive", f"{path}:P2")
        _check_rotation(calib.R0_rect, f"{path}:R0_rect")
        r = calib.Tr_velo_to_cam[:, :3]
        if np.abs(r @ r.T - np.eye(3)).max() > 1e-2:
            raise CalibrationError("rotation is not orthonormal", f"{path}:Tr_velo_to_cam")
        return calib

    def write(self, path: str | Path) -> None:
        """Write a KITTI calib file (P0..P3 = P2 when not known, Tr_imu_to_velo = identity)."""
        rows = {
            "P0": self.extra.get("P0", self.P2.ravel()), "P1": self.extra.get("P1", self.P2.ravel()),
            "P2": self.P2.ravel(), "P3": self.extra.get("P3", self.P2.ravel()),
            "R0_rect": self.R0_rect.ravel(), "Tr_velo_to_cam": self.Tr_velo_to_cam.ravel(),
            "Tr_imu_to_velo": self.extra.get("Tr_imu_to_velo", np.eye(4)[:3].ravel()),
        }
        lines = [f"{k}: " + " ".join(f"{v:.12e}" for v in np.ravel(vals)) for k, vals in rows.items()]
        Path(path).write_text("\n".join(lines) + "\n")
