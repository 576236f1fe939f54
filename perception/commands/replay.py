"""``perception replay [--bag B] [--rate R] [--report DIR] [--record OUT_BAG] [--force]``: play a bag through
the whole node graph (replay.launch.yaml); with ``--report`` / ``--record`` as an evaluation run: the graph's
outputs are recorded into a new bag (``bag_recorder``), the run ends when every cloud is answered (or the
player is done and the graph has gone quiet), and an HTML evaluation report is written from the recording.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception replay``."""
    p = subparsers.add_parser(
        "replay", help="replay a bag through the detector and monitors (launch/replay.launch.yaml)",
        description="Runs launch/replay.launch.yaml: bag_player + fusion_detector + sensor_health + ood_monitor + "
                    "crowd_counter. Without --report/--record: watch /perception/* (RViz config: "
                    "launch/perception.rviz), Ctrl-C stops. With --report DIR: record the outputs, stop when every "
                    "cloud is answered, and write DIR/index.html (AP vs the bag's ground truth, D-ECE, DDS latency, "
                    "drops, OOD / health / crowd timelines, XAI snapshots).")
    p.add_argument("--bag", help="rosbag2 folder (default: the bundled drive data/default_drive)")
    p.add_argument("--rate", type=float, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play the bag again and again")
    p.add_argument("--report", type=Path, default=None, help="write an evaluation report into this folder")
    p.add_argument("--record", type=Path, default=None,
                   help="record the graph's outputs into this new bag (default with --report: DIR/recording)")
    p.add_argument("--force", action="store_true", help="replace an existing recording")
    p.add_argument("--model", default="models/fusion_default", help="model folder (its config gives the classes)")
    p.add_argument("arguments", nargs="*", metavar="NAME:=VALUE",
                   help="more launch arguments (perception launch replay.launch.yaml --show-args lists them)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the replay launch file with the options as launch arguments (an evaluation run with --report)."""
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
    if args.report is None and args.record is None:
        return run_launch(find_launch_file("replay.launch.yaml"), arguments)
    if args.loop:
        raise ConfigError("an evaluation replay plays the bag once", "--loop")
    return evaluate_replay(Path(arguments["bag"]), arguments, args.report, args.record, args.force,
                           float(arguments.get("rate", 1.0)), args.model)


def evaluate_replay(bag: Path, arguments: dict[str, str], report: Path | None, record: Path | None, force: bool,
                    rate: float, model: str) -> int:
    """Check the bag, replay it with the recorder, wait for every answer, then write the report."""
    import time

    from perception.eval.replay import check_recording_path, check_replay_bag

    check = check_replay_bag(bag)
    print(check.describe())
    record = record if record is not None else report / "recording"
    check_recording_path(record, bag, force)
    arguments.update(record="true", record_bag=str(record.resolve()), record_force="true" if force else "false")
    if "calibration_file" not in arguments and check.rig is not None:
        # The detector takes the LiDAR mounting and LiDAR->camera extrinsics from a rig file: the bag's own.
        rig_file = record.with_name(record.name + ".rig.yaml")
        rig_file.parent.mkdir(parents=True, exist_ok=True)
        check.rig.to_yaml(rig_file)
        arguments["calibration_file"] = str(rig_file.resolve())
    t0 = time.monotonic()
    from ros_nodes.replay_run import run_evaluation_graph

    answered, why = run_evaluation_graph(arguments, check.clouds, check.duration_s / rate)
    wall = time.monotonic() - t0
    print(f"replay ended ({why}): {answered} of {check.clouds} clouds answered, {wall:.1f} s wall")
    if report is None:
        print(f"recording: {record}")
        return 0
    from perception.commands import find_resource
    from perception.eval.replay import write_replay_report

    metrics = write_replay_report(record, report, classes=_classes(find_resource(model)), bag_check=check,
                                  wall_s=wall)
    print(format_replay_metrics(metrics))
    return 0


def _classes(model_dir: Path) -> list[str]:
    from perception.detector.checkpoint import CONFIG_FILE
    from perception.detector.config import DetectorConfig

    return list(DetectorConfig.from_yaml(model_dir / CONFIG_FILE).model.classes)


def format_replay_metrics(m: dict) -> str:
    """Human-readable summary of a replay report."""
    f = m["frames"]
    lines = [f"replay of {m['bag']}: {f['clouds']} clouds, {f['answered']} answered, {f['dropped']} dropped, "
             f"{f['degraded']} degraded"]
    if m.get("ap3d"):
        lines.append("  ap3d  " + "  ".join(f"{c} {'n/a' if v is None else f'{v:.2f}'}" for c, v in m["ap3d"].items()))
        lines.append("  apbev " + "  ".join(f"{c} {'n/a' if v is None else f'{v:.2f}'}" for c, v in m["apbev"].items()))
    else:
        lines.append("  no ground truth in the bag: AP not computed")
    for key in ("dece_before", "dece_after"):
        if key in m:
            lines.append(f"  {key:12s} {m[key]}")
    lat = m.get("latency_ms") or {}
    if lat:
        lines.append(f"  DDS latency (cloud arrival -> detections arrival) p50 {lat['p50']} ms, p99 {lat['p99']} ms")
    lines.append(f"  OOD frames flagged {m['ood']['frames_flagged']}, health warnings {m['health']['warnings']}, "
                 f"crowd counts {m['crowd']['messages']}")
    if m.get("wall_s") is not None:
        lines.append(f"  replay {m['replay_s']} s (first cloud -> last answer), wall {m['wall_s']:.1f} s with start-up "
                     f"(bag {m['bag_duration_s']:.1f} s)")
    lines.append(f"  report: {m['report']}")
    return "\n".join(lines)
