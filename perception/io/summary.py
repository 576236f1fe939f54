"""Dataset summary (``perception info``): reads and validates every frame of a KITTI folder or a bag."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from perception.io import dataset_format
from perception.io.bag import CAMERA_INFO_TOPIC, GT_TOPIC, IMAGE_TOPIC, LIDAR_TOPIC, BagReader
from perception.io.kitti import FRAME_PERIOD_NS, KittiDataset


@dataclass
class DatasetSummary:
    """Counts and statistics of one dataset; ``to_dict`` is the ``perception info --json`` document."""

    path: str
    format: str  # "kitti" | "bag"
    frames: int = 0
    frames_with_image: int = 0
    points_per_frame: dict[str, float] = field(default_factory=dict)  # mean, min, max
    topics: dict[str, int] = field(default_factory=dict)  # topic (KITTI: equivalent sensor topic) → messages
    rates_hz: dict[str, float | None] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)  # ground-truth objects per class
    duration_s: float = 0.0
    rig: str = ""
    storage: str = ""

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)

    def format_text(self) -> str:
        """A human-readable multi-line summary."""
        p = self.points_per_frame
        lines = [
            f"{self.path}  ({self.format}{', ' + self.storage if self.storage else ''}, rig {self.rig or '?'})",
            f"  frames: {self.frames} ({self.frames_with_image} with image), {self.duration_s:.1f} s",
            f"  points/frame: mean {p.get('mean', 0):.0f}, min {p.get('min', 0):.0f}, max {p.get('max', 0):.0f}",
            "  topics:",
        ]
        for name, count in self.topics.items():
            rate = self.rates_hz.get(name)
            lines.append(f"    {name:<34} {count:>6}  {f'{rate:.1f} Hz' if rate else '-'}")
        lines.append("  objects: " + (", ".join(f"{k} {v}" for k, v in self.classes.items()) or "none"))
        return "\n".join(lines)


def _finish(summary: DatasetSummary, points: list[int], classes: Counter) -> DatasetSummary:
    arr = np.asarray(points or [0])
    summary.points_per_frame = {"mean": float(arr.mean()), "min": int(arr.min()), "max": int(arr.max())}
    summary.classes = dict(sorted(classes.items()))
    return summary


def summarize(path: str | Path, progress: bool = True) -> DatasetSummary:
    """Read every frame of ``path`` (KITTI folder or bag), validating it, and summarise the dataset."""
    fmt = dataset_format(path)
    summary = DatasetSummary(path=str(path), format=fmt)
    points: list[int] = []
    classes: Counter = Counter()
    if fmt == "kitti":
        ds = KittiDataset(path)
        for frame in tqdm(ds, total=len(ds), desc="check", unit="frame", disable=not progress):
            points.append(len(frame.points))
            summary.frames_with_image += frame.image is not None
            classes.update(b.label for b in frame.boxes)
            classes["DontCare"] += len(frame.meta["dontcare"])
            summary.rig = summary.rig or frame.rig.name
        summary.frames = len(ds)
        counts = {LIDAR_TOPIC: len(ds), IMAGE_TOPIC: summary.frames_with_image, CAMERA_INFO_TOPIC: len(ds),
                  GT_TOPIC: len(ds) if ds.has_labels else 0}
        summary.topics = counts
        summary.rates_hz = {k: (1e9 / FRAME_PERIOD_NS if v > 1 else None) for k, v in counts.items()}
        summary.duration_s = max(0, len(ds) - 1) * FRAME_PERIOD_NS / 1e9
        if not classes["DontCare"]:
            del classes["DontCare"]
        return _finish(summary, points, classes)
    with BagReader(path) as reader:
        info = reader.info(rates=True)
        summary.storage = info.storage
        summary.topics = {k: v.count for k, v in info.topics.items()}
        summary.rates_hz = {k: v.rate_hz for k, v in info.topics.items()}
        summary.duration_s = info.duration_s
        total = info.topics[LIDAR_TOPIC].count
        for frame in tqdm(reader.frames(), total=total, desc="check", unit="frame", disable=not progress):
            points.append(len(frame.points))
            summary.frames += 1
            summary.frames_with_image += frame.image is not None
            classes.update(b.label for b in frame.boxes)
            summary.rig = summary.rig or frame.rig.name
        if summary.frames:
            reader.check_camera_info()
    return _finish(summary, points, classes)
