"""``perception info``: summarise (and validate) a KITTI folder or a rosbag2 bag."""

from __future__ import annotations

import argparse
import json

from perception.io.summary import summarize


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception info``."""
    p = subparsers.add_parser("info", help="summarise and validate a KITTI folder or a bag",
                              description="Read every frame of a KITTI folder or rosbag2 bag (validating it) and "
                                          "print frames, points per frame, topics with counts and rates, and "
                                          "ground-truth objects per class.")
    p.add_argument("path", help="KITTI folder (or its parent with training/) or rosbag2 folder")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.path``."""
    summary = summarize(args.path, progress=not args.json)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format_text())
    return 0
