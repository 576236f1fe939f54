"""``perception sim``: simulate a data split and write it as a rosbag2 bag or a KITTI folder."""

from __future__ import annotations

import argparse
import logging

from perception.commands import find_resource
from perception.errors import ConfigError
from perception.io import write_frames
from perception.io.outputs import check_output
from perception.rig import Rig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "calib", "test", "ood")  # the simulator's SPLIT_SEEDS (kept here: --help stays light)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception sim``."""
    p = subparsers.add_parser("sim", help="simulate a split of drives into a bag or KITTI folder",
                              description="Ray-cast simulated drives (LiDAR + camera + ground truth) and write "
                                          "them. Never overwrites an existing output without --force.")
    p.add_argument("--split", choices=SPLITS, required=True, help="data split (each has its own seed range)")
    p.add_argument("--frames", type=int, required=True, help="number of frames")
    p.add_argument("--seed", type=int, default=0, help="seed within the split (default 0)")
    p.add_argument("--rig", default="calibration/sim_default.yaml", help="rig YAML (default %(default)s)")
    p.add_argument("--format", choices=("bag", "kitti"), default="bag", help="output format (default bag)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    p.add_argument("--out", required=True, help="output bag folder or KITTI folder")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--workers", type=int, default=2, help="simulation processes (default 2)")
    p.add_argument("--frames-per-drive", type=int, default=10, help="frames per simulated drive (default 10)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Simulate ``args.frames`` frames of ``args.split`` and write them to ``args.out``."""
    if args.frames <= 0:
        raise ConfigError(f"must be positive, got {args.frames}", "--frames")
    check_output(args.out, args.force)  # before any simulation work
    from perception.sim import iter_split

    rig = Rig.from_yaml(find_resource(args.rig))
    frames = iter_split(rig, args.split, args.frames, seed=args.seed, frames_per_drive=args.frames_per_drive,
                        workers=args.workers)
    n = write_frames(frames, args.out, args.format, rig, storage=args.storage, force=args.force, total=args.frames,
                     custom_data={"trustworthy_perception.sim": f"split={args.split} seed={args.seed} "
                                                                f"frames={args.frames} rig={rig.name}"})
    print(f"wrote {n} {args.split} frames to {args.out} ({args.format})")
    return 0
