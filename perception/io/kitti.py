"""KITTI object-detection layout: one loader for real KITTI and for our simulated drives, and a writer.

Layout: ``velodyne/<id>.bin`` (float32 x y z reflectance), ``image_2/<id>.png``, ``calib/<id>.txt``,
``label_2/<id>.txt`` (optional). Labels live in the rectified camera-0 frame (bottom centre, h w l,
rotation_y about the camera's down axis); :class:`~perception.frame.Box3D` lives in the LiDAR frame
(geometric centre, l w h, yaw about +z). Conversion (as OpenPCDet): bottom centre → LiDAR through
``inv(R0_rect @ Tr_velo_to_cam)``, centre = bottom + h/2 along z, ``yaw = -ry - pi/2``.

Our writer also stores ``rig.yaml`` (the full rig, used by the loader when present) and, when some
frames have no image, ``camera_missing.txt`` listing their ids (the only case a missing image is allowed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from perception.errors import CalibrationError, DataError
from perception.frame import KNOWN_CLASSES, OOD_CLASSES, Box3D, Frame, box_corners, boxes_to_array, points_in_boxes
from perception.io.outputs import StagedOutput
from perception.rig import KittiCalib, Rig, invert_transform, transform_points

log = logging.getLogger(__name__)

SUBDIRS = {"velodyne": ".bin", "image_2": ".png", "calib": ".txt", "label_2": ".txt"}
RIG_FILE = "rig.yaml"
CAMERA_MISSING_FILE = "camera_missing.txt"
#: KITTI frames are 10 Hz; a frame's stamp is its index times this period.
FRAME_PERIOD_NS = 100_000_000
_LABEL_FIELDS = 15  # a 16th field (score, in result files) is kept in KittiLabel.score
#: Class names a label may carry: KITTI's plus the simulator's out-of-distribution types.
VALID_CLASSES: tuple[str, ...] = KNOWN_CLASSES + OOD_CLASSES


def wrap_angle(a: float | np.ndarray) -> float | np.ndarray:
    """Wrap radians to [-pi, pi) (a float for a scalar, an array for an array)."""
    r = (np.asarray(a, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi
    return float(r) if r.ndim == 0 else r


# ---------------------------------------------------------------------------------------------- labels
@dataclass
class KittiLabel:
    """One line of a KITTI label file, in KITTI's own (rectified camera-0) conventions."""

    type: str
    truncation: float
    occlusion: int
    alpha: float
    bbox: np.ndarray  # (4,) left top right bottom
    hwl: np.ndarray  # (3,) height, width, length
    location: np.ndarray  # (3,) bottom centre in the rectified camera frame
    rotation_y: float
    score: float | None = None  # the 16th field of a KITTI result file (detections), else None

    def to_line(self) -> str:
        """The label as a text line (6 decimals so a round trip keeps 1e-6 precision)."""
        nums = [self.truncation, self.occlusion, self.alpha, *self.bbox, *self.hwl, *self.location, self.rotation_y]
        out = [self.type, f"{self.truncation:.6f}", str(int(self.occlusion))]
        out += [f"{v:.6f}" for v in nums[2:]]
        if self.score is not None:
            out.append(f"{self.score:.8f}")
        return " ".join(out)


def _check_object_values(vals: np.ndarray, where: str) -> None:
    """Ranges of an object line's numbers (``vals`` = fields 2..15): truncation in [0, 1], occlusion one of
    0 1 2 3, a 2D box with left <= right and top <= bottom (or ``-1 -1 -1 -1``), positive h w l."""
    truncation, occlusion, bbox, hwl = vals[0], vals[1], vals[3:7], vals[7:10]
    if not 0.0 <= truncation <= 1.0:
        raise DataError(f"truncated must lie in [0, 1], got {truncation:g}", where)
    if occlusion not in (0, 1, 2, 3):
        raise DataError(f"occluded must be 0, 1, 2 or 3, got {occlusion:g}", where)
    if not np.all(bbox == -1) and (bbox[0] > bbox[2] or bbox[1] > bbox[3]):
        raise DataError(f"2D box must have left <= right and top <= bottom, got {bbox.tolist()}", where)
    if np.any(hwl <= 0):
        raise DataError(f"dimensions h w l must be positive, got {hwl.tolist()}", where)


def parse_label_line(line: str, where: str) -> KittiLabel:
    """Parse one label line; ``where`` (``file:line``) is named in any error."""
    parts = line.split()
    if len(parts) not in (_LABEL_FIELDS, _LABEL_FIELDS + 1):
        raise DataError(f"expected {_LABEL_FIELDS} fields (type, truncated, occluded, alpha, bbox x4, h w l, "
                        f"x y z, rotation_y), got {len(parts)}", where)
    name = parts[0]
    if name not in VALID_CLASSES:
        raise DataError(f"unknown class {name!r} (known: {', '.join(VALID_CLASSES)})", where)
    try:
        vals = np.array([float(v) for v in parts[1:_LABEL_FIELDS]])
    except ValueError as exc:
        raise DataError(f"non-numeric value: {exc}", where) from exc
    if not np.all(np.isfinite(vals)):
        raise DataError("values must be finite", where)
    if name != "DontCare":
        _check_object_values(vals, where)
    score = None
    if len(parts) > _LABEL_FIELDS:
        try:
            score = float(parts[_LABEL_FIELDS])
        except ValueError as exc:
            raise DataError(f"non-numeric score: {exc}", where) from exc
    return KittiLabel(type=name, truncation=float(vals[0]), occlusion=int(vals[1]), alpha=float(vals[2]),
                      bbox=vals[3:7].copy(), hwl=vals[7:10].copy(), location=vals[10:13].copy(),
                      rotation_y=float(vals[13]), score=score)


def read_labels(path: Path) -> list[KittiLabel]:
    """Read a label file; errors name ``file:line``."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read label file: {exc}", str(path)) from exc
    return [parse_label_line(line, f"{path}:{n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def label_to_box(label: KittiLabel, calib: KittiCalib) -> Box3D:
    """A KITTI label as a LiDAR-frame :class:`Box3D` (``num_points`` left at -1)."""
    h, w, l = label.hwl
    bottom = transform_points(invert_transform(calib.velo_to_rect), label.location[None])[0]
    bbox = None if np.all(label.bbox == -1) else label.bbox.copy()
    return Box3D(label=label.type, center=bottom + np.array([0.0, 0.0, h / 2]), size=[l, w, h],
                 yaw=wrap_angle(-label.rotation_y - np.pi / 2), occlusion=label.occlusion,
                 truncation=label.truncation, bbox2d=bbox)


def project_box_2d(rig: Rig, box_array: np.ndarray) -> np.ndarray | None:
    """Image bounding box (left, top, right, bottom) of a (7,) box's corners in front of the camera.

    Corners behind the camera are ignored; returns ``None`` when the box is not in the image.
    """
    corners = box_corners(np.asarray(box_array)[None])[0]
    uv, depth, _ = rig.project(corners)
    front = depth > 0.1
    if not front.any():
        return None
    uv = uv[front]
    left, top = np.clip(uv.min(0), 0, [rig.width - 1, rig.height - 1])
    right, bottom = np.clip(uv.max(0), 0, [rig.width - 1, rig.height - 1])
    if right - left < 1 or bottom - top < 1:
        return None
    return np.array([left, top, right, bottom])


def box_to_label(box: Box3D, calib: KittiCalib, rig: Rig | None = None) -> KittiLabel:
    """A LiDAR-frame box as a KITTI label; the 2D box comes from ``bbox2d`` or the rig's projection
    (``-1 -1 -1 -1`` when neither is available)."""
    l, w, h = box.size
    bottom = box.center - np.array([0.0, 0.0, h / 2])
    loc = transform_points(calib.velo_to_rect, bottom[None])[0]
    ry = wrap_angle(-box.yaw - np.pi / 2)
    bbox = box.bbox2d
    if bbox is None and rig is not None:
        bbox = project_box_2d(rig, box.as_array())
    bbox = np.full(4, -1.0) if bbox is None else np.asarray(bbox, dtype=np.float64)
    alpha = wrap_angle(ry - np.arctan2(loc[0], loc[2]))
    return KittiLabel(type=box.label, truncation=float(box.truncation), occlusion=int(box.occlusion), alpha=alpha,
                      bbox=bbox, hwl=np.array([h, w, l]), location=loc, rotation_y=ry)


def count_points_in_boxes(points: np.ndarray, boxes: list[Box3D]) -> np.ndarray:
    """Number of points inside each box, (N_boxes,) int; pre-filters by a bounding circle to stay cheap."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    xyz = np.asarray(points)[:, :3]
    for i, arr in enumerate(boxes_to_array(boxes)):
        radius = 0.5 * float(np.hypot(arr[3], arr[4])) + 1e-3
        near = (np.abs(xyz[:, 0] - arr[0]) <= radius) & (np.abs(xyz[:, 1] - arr[1]) <= radius)
        counts[i] = int(points_in_boxes(xyz[near], arr[None]).sum())
    return counts


# ---------------------------------------------------------------------------------------------- files
def read_velodyne(path: Path) -> np.ndarray:
    """A KITTI ``.bin`` scan as (N, 4) float32; the size must be a multiple of 16 bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read point cloud: {exc}", str(path)) from exc
    if len(raw) % 16:
        raise DataError(f"size {len(raw)} bytes is not a multiple of 16 (x y z intensity float32): truncated?",
                        str(path))
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 4).copy()


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; unreadable or corrupt files raise :class:`DataError`."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image: {exc}", str(path)) from exc


def resolve_root(root: str | Path) -> Path:
    """The folder holding ``velodyne/ image_2/ calib/``: ``root`` itself or ``root/training``."""
    root = Path(root)
    for cand in (root, root / "training"):
        if (cand / "velodyne").is_dir():
            return cand
    raise DataError("not a KITTI folder: expected velodyne/, image_2/, calib/ (or training/ holding them)",
                    str(root))


def is_kitti_dir(path: str | Path) -> bool:
    """True when ``path`` is (or holds a ``training/``) KITTI object folder."""
    path = Path(path)
    return (path / "velodyne").is_dir() or (path / "training" / "velodyne").is_dir()


# ---------------------------------------------------------------------------------------------- dataset
class KittiDataset:
    """Frames of a KITTI object folder, indexed by sorted frame id; files are read on access."""

    def __init__(self, root: str | Path) -> None:
        self.root = resolve_root(root)
        self.ids: list[str] = self._scan_ids()
        rig_path = self.root / RIG_FILE
        self.rig: Rig | None = Rig.from_yaml(rig_path) if rig_path.is_file() else None
        missing_path = self.root / CAMERA_MISSING_FILE
        self.camera_missing: set[str] = set(missing_path.read_text().split()) if missing_path.is_file() else set()
        self.has_labels = (self.root / "label_2").is_dir()

    def _scan_ids(self) -> list[str]:
        ids = sorted(p.stem for p in (self.root / "velodyne").glob("*.bin"))
        known = set(ids)
        for sub, ext in SUBDIRS.items():
            folder = self.root / sub
            if sub == "velodyne" or not folder.is_dir():
                continue
            extra = sorted(p.stem for p in folder.glob(f"*{ext}") if p.stem not in known)
            if extra:
                raise DataError(f"frame {extra[0]} has no point cloud velodyne/{extra[0]}.bin",
                                str(folder / f"{extra[0]}{ext}"))
        if not (self.root / "calib").is_dir():
            raise DataError("missing calib/ folder", str(self.root / "calib"))
        return ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def path(self, sub: str, frame_id: str) -> Path:
        """Path of a frame's file in one sub-folder (``velodyne``, ``image_2``, ``calib``, ``label_2``)."""
        return self.root / sub / f"{frame_id}{SUBDIRS[sub]}"

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames in {self.root}")
        index %= len(self)
        fid = self.ids[index]
        points = read_velodyne(self.path("velodyne", fid))
        calib = KittiCalib.read(self.path("calib", fid))
        image_path = self.path("image_2", fid)
        image = None
        if image_path.is_file():
            image = read_image(image_path)
        elif fid not in self.camera_missing:
            raise DataError(f"frame {fid} has no image", str(image_path))
        rig = self._rig(calib, image, fid)
        if image is not None:
            rig.check_image(image, str(image_path))
        boxes: list[Box3D] = []
        dontcare = np.zeros((0, 4))
        if self.has_labels:
            label_path = self.path("label_2", fid)
            if not label_path.is_file():
                raise DataError(f"frame {fid} has no label file", str(label_path))
            labels = read_labels(label_path)
            boxes = [label_to_box(lb, calib) for lb in labels if lb.type != "DontCare"]
            dc = [lb.bbox for lb in labels if lb.type == "DontCare"]
            dontcare = np.stack(dc) if dc else dontcare
            for box, n in zip(boxes, count_points_in_boxes(points, boxes)):
                box.num_points = int(n)
        return Frame(points=points, image=image, rig=rig, stamp_ns=index * FRAME_PERIOD_NS, boxes=boxes,
                     frame_id=fid, meta={"source": str(self.root), "dontcare": dontcare,
                                         "has_labels": self.has_labels})

    def _rig(self, calib: KittiCalib, image: np.ndarray | None, fid: str) -> Rig:
        if self.rig is not None:
            return self.rig
        if image is None:
            raise CalibrationError(f"frame {fid} has no image to size the camera and no {RIG_FILE}",
                                   str(self.root / RIG_FILE))
        return calib.to_rig(width=image.shape[1], height=image.shape[0],
                            source=str(self.path("calib", fid)))


# ---------------------------------------------------------------------------------------------- writer
def same_rig(a: Rig, b: Rig) -> bool:
    """True when two rigs describe the same sensors (size, intrinsics, distortion, extrinsics)."""
    return a is b or (a.width == b.width and a.height == b.height and np.allclose(a.K, b.K)
                      and np.allclose(a.lidar_to_camera, b.lidar_to_camera)
                      and np.allclose(a.base_to_lidar, b.base_to_lidar) and np.allclose(a.distortion, b.distortion))


class KittiWriter:
    """Write frames as a KITTI object folder (ids 000000, 000001, ... in write order).

    Use as a context manager: files go to a staging folder that replaces ``root`` on a clean exit.
    An existing non-empty ``root`` is only replaced with ``force=True`` (and only if it is a dataset).
    """

    def __init__(self, root: str | Path, force: bool = False, png_compress_level: int = 3) -> None:
        self._stage = StagedOutput(root, force)
        self.root = self._stage.target
        self.count = 0
        self._rig: Rig | None = None
        self._mixed_rigs = False
        self._camera_missing: list[str] = []
        self._png_level = png_compress_level
        for sub in SUBDIRS:
            (self._stage.path / sub).mkdir(parents=True)

    def __enter__(self) -> KittiWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: Frame) -> str:
        """Write one frame; returns its KITTI id."""
        if frame.rig is None:
            raise DataError("frame has no rig: cannot write calib", f"frame {frame.frame_id or self.count}")
        fid = f"{self.count:06d}"
        out = self._stage.path
        frame.points.astype("<f4").tofile(out / "velodyne" / f"{fid}.bin")
        if frame.image is not None:
            frame.rig.check_image(frame.image, f"frame {frame.frame_id or fid}")
            Image.fromarray(frame.image).save(out / "image_2" / f"{fid}.png", compress_level=self._png_level)
        else:
            self._camera_missing.append(fid)
        calib = KittiCalib.from_rig(frame.rig)
        calib.write(out / "calib" / f"{fid}.txt")
        lines = [box_to_label(b, calib, frame.rig).to_line() for b in frame.boxes]
        for bbox in np.asarray(frame.meta.get("dontcare", np.zeros((0, 4)))).reshape(-1, 4):
            lines.append(KittiLabel("DontCare", -1, -1, -10, bbox, np.full(3, -1.0), np.full(3, -1000.0), -10)
                         .to_line())
        (out / "label_2" / f"{fid}.txt").write_text("".join(f"{ln}\n" for ln in lines))
        if self._rig is None:
            self._rig = frame.rig
        elif not same_rig(self._rig, frame.rig):
            self._mixed_rigs = True
        self.count += 1
        return fid

    def close(self) -> Path:
        """Finish: write ``rig.yaml`` (when every frame shared one rig) and swap the folder in."""
        if self._rig is not None and not self._mixed_rigs:
            self._rig.to_yaml(self._stage.path / RIG_FILE)
        if self._camera_missing:
            (self._stage.path / CAMERA_MISSING_FILE).write_text("\n".join(self._camera_missing) + "\n")
        log.info("KITTI folder: %d frames", self.count)
        return self._stage.commit()

    def abort(self) -> None:
        """Discard everything written so far."""
        self._stage.abort()
