"""Readers and writers of Frames: KITTI object folders and rosbag2 bags (mcap / sqlite3).

``open_frames(path)`` is the one entry point for reading: it recognises the format from the path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from perception.errors import DataError
from perception.frame import Frame
from perception.io.bag import BagReader, BagWriter, is_bag, read_bag
from perception.io.kitti import KittiDataset, KittiWriter, is_kitti_dir
from perception.rig import Rig

__all__ = ["BagReader", "BagWriter", "KittiDataset", "KittiWriter", "dataset_format", "open_frames", "read_bag",
           "write_frames"]


def dataset_format(path: str | Path) -> str:
    """``"bag"`` for a rosbag2 folder (or its .mcap/.db3 file), ``"kitti"`` for a KITTI folder; else DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", str(path))
    if is_bag(path) or (path.is_file() and path.suffix in (".mcap", ".db3") and is_bag(path.parent)):
        return "bag"
    if is_kitti_dir(path):
        return "kitti"
    raise DataError("neither a rosbag2 folder (metadata.yaml) nor a KITTI folder (velodyne/, image_2/, calib/)",
                    str(path))


def open_frames(path: str | Path) -> Iterator[Frame]:
    """Iterate the Frames of a KITTI folder or a rosbag2 bag, whichever ``path`` is."""
    if dataset_format(path) == "bag":
        return read_bag(path)
    return iter(KittiDataset(path))


def write_frames(frames: Iterable[Frame], path: str | Path, fmt: str, rig: Rig, storage: str = "mcap",
                 force: bool = False, total: int | None = None, custom_data: dict[str, str] | None = None,
                 progress: bool = True) -> int:
    """Write ``frames`` as a bag (``fmt="bag"``, mcap/sqlite3) or a KITTI folder (``fmt="kitti"``).

    The output is checked before the first frame is pulled, so a refused overwrite costs nothing.
    Returns the number of frames written.
    """
    if fmt == "bag":
        writer: BagWriter | KittiWriter = BagWriter(path, rig, storage=storage, force=force, custom_data=custom_data)
    elif fmt == "kitti":
        writer = KittiWriter(path, force=force)
    else:
        raise DataError(f"unknown format {fmt!r} (bag, kitti)", "format")
    with writer:
        for frame in tqdm(frames, total=total, desc=f"write {Path(path).name}", unit="frame", disable=not progress):
            writer.write(frame)
        return writer.count
