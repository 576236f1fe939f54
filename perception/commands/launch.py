"""``perception launch FILE [name:=value ...]``: run a ROS 2 YAML launch file without ``ros2 launch``."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception launch``."""
    p = subparsers.add_parser(
        "launch", help="run a ROS 2 YAML launch file (nodes as local processes, DDS kept on this machine)",
        description="Start the nodes of a ROS 2 YAML launch file (e.g. perception.launch.yaml, replay.launch.yaml "
                    "from launch/) as processes; Ctrl-C stops them all.")
    p.add_argument("file", help="launch file: a path, or a file name in the package's launch/ folder")
    p.add_argument("arguments", nargs="*", metavar="NAME:=VALUE", help="launch arguments")
    p.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the node commands and exit")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Plan the launch file, then print it or run it until its nodes exit or Ctrl-C."""
    import shlex

    from ros_nodes.launch_runner import find_launch_file, parse_cli_arguments, plan_launch, run_launch

    path = find_launch_file(args.file)
    arguments = parse_cli_arguments(args.arguments)
    if args.show_args or args.print_only:
        plan = plan_launch(path, arguments)
        if args.show_args:
            for a in plan.args:
                default = "(required)" if a.default is None else f"(default: {a.default})"
                print(f"{a.name:20s} {default}\n{'':20s} {a.description}")
        else:
            for node in plan.nodes:
                print(shlex.join(node.command()))
        return 0
    return run_launch(path, arguments)
