"""``perception convert SRC --out DST [--format bag|kitti] [--ids ...] [--force]``: a KITTI folder → rosbag2
(our topics, /tf_static from its calibration, ground truth when labelled), or a bag → KITTI folder.

One way: :func:`perception.io.open_frames` reads either format, :func:`perception.io.write_frames` writes
either (``BagWriter`` / ``KittiWriter``). A bag carries one calibration, so a KITTI folder whose frames have
different calibrations is refused, naming the frames; ``--ids`` picks frames that share one.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception convert``."""
    p = subparsers.add_parser(
        "convert", help="KITTI folder -> rosbag2 (or a bag -> KITTI folder)",
        description="Convert a KITTI object/raw folder (velodyne/, image_2/ or camera_missing.txt + rig.yaml, "
                    "calib/, optional label_2/) into a rosbag2 with the stack's topics (/sensing/lidar/points, "
                    "camera image + camera_info, /tf_static, ground truth when labelled), 10 Hz stamps; or a bag "
                    "back into a KITTI folder (--format kitti). Never overwrites without --force.")
    p.add_argument("src", help="KITTI folder (or its training/ parent) or rosbag2 folder")
    p.add_argument("--out", required=True, help="output bag folder (or KITTI folder with --format kitti)")
    p.add_argument("--format", choices=("bag", "kitti"), default=None,
                   help="output format (default: bag for a KITTI source, kitti for a bag source)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    p.add_argument("--ids", default=None, help="comma-separated KITTI frame ids to convert (default: all)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Convert and print what was written."""
    from perception.io import dataset_format, open_frames, write_frames

    src_format = dataset_format(args.src)
    fmt = args.format or ("kitti" if src_format == "bag" else "bag")
    if Path(args.out).resolve() == Path(args.src).resolve():
        from perception.errors import ConfigError

        raise ConfigError("output and source are the same folder", args.out)
    if src_format == "kitti":
        frames, total, rig = _kitti_frames(args.src, args.ids)
    else:
        from perception.io.bag import BagReader

        with BagReader(args.src) as reader:
            first = next(reader.frames(), None)
        if first is None:
            from perception.errors import DataError

            raise DataError("bag has no frames", args.src)
        frames, total, rig = open_frames(args.src), None, first.rig
    n = write_frames(frames, args.out, fmt, rig, storage=args.storage, force=args.force, total=total,
                     custom_data={"trustworthy_perception.source": str(Path(args.src).resolve())}
                     if fmt == "bag" else None)
    print(f"wrote {n} frames from {args.src} to {args.out} ({fmt})")
    return 0


def _kitti_frames(src: str, ids: str | None):
    """The selected frames of a KITTI folder, their count and their one shared rig (DataError otherwise)."""
    from perception.errors import DataError
    from perception.io import KittiDataset
    from perception.io.kitti import same_rig

    ds = KittiDataset(src)
    indices = list(range(len(ds)))
    if ids:
        wanted = [i.strip() for i in ids.split(",") if i.strip()]
        missing = [i for i in wanted if i not in ds.ids]
        if missing:
            raise DataError(f"no such frame id(s) {missing}", f"{ds.root}:--ids")
        indices = [ds.ids.index(i) for i in wanted]
    if not indices:
        raise DataError("no frames to convert", str(ds.root))
    # Calibrations are read up front (small text files) so a mixed folder is refused before writing.
    first = ds.rig or ds[indices[0]].rig
    differing = [ds.ids[i] for i in indices if not same_rig(ds.rig or _calib_rig(ds, i, first), first)]
    if differing:
        raise DataError(f"a bag holds one calibration, but {len(differing)} of {len(indices)} frames differ from frame "
                        f"{ds.ids[indices[0]]}'s (e.g. {', '.join(differing[:5])}); pick frames sharing one with --ids",
                        str(ds.root / "calib"))
    return (ds[i] for i in indices), len(indices), first


def _calib_rig(ds, index: int, like):
    """The rig of frame ``index`` from its calib file, sized like ``like`` (no image decoding)."""
    from perception.rig import KittiCalib

    calib = KittiCalib.read(ds.path("calib", ds.ids[index]))
    return calib.to_rig(width=like.width, height=like.height, source=str(ds.path("calib", ds.ids[index])))
