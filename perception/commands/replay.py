"""``perception replay [--bag X] [--rate R]``: play a bag through the whole node graph (replay.launch.yaml)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception replay``."""
    p = subparsers.add_parser(
        "replay", help="replay a bag through the detector and monitors (launch/replay.launch.yaml)",
        description="Runs launch/replay.launch.yaml: bag_player + fusion_detector + sensor_health. "
                    "Watch /perception/* (RViz config: launch/perception.rviz). Ctrl-C stops.")
    p.add_argument("--bag", help="rosbag2 folder (default: the bundled drive data/default_drive)")
    p.add_argument("--rate", type=float, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play the bag again and again")
    p.add_argument("arguments", nargs="*", metavar="NAME:=VALUE",
                   help="more launch arguments (perception launch replay.launch.yaml --show-args lists them)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the replay launch file with the options as launch arguments."""
    from pathlib import Path

    from perception.errors import ConfigError
    from ros_nodes.launch_runner import find_launch_file, parse_cli_arguments, run_launch

    arguments = parse_cli_arguments(args.arguments)
    if args.bag is not None:
        if not Path(args.bag).exists():
            raise ConfigError("bag not found", args.bag)
        arguments["bag"] = str(Path(args.bag).resolve())
    elif "bag" not in arguments:  # the bundled drive, generated on first use as `perception demo` does
        from perception.commands.demo import DriveDefinition, ensure_drive

        arguments["bag"] = str(ensure_drive(DriveDefinition.load()))
    if args.rate is not None:
        if not args.rate > 0:
            raise ConfigError(f"must be positive, got {args.rate}", "--rate")
        arguments["rate"] = str(args.rate)
    if args.loop:
        arguments["loop"] = "true"
    return run_launch(find_launch_file("replay.launch.yaml"), arguments)
