"""``perception explain``: faithfulness test of the attention explanations (deletion / insertion curves)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception explain``."""
    p = subparsers.add_parser(
        "explain", help="faithfulness test of the attention maps (deletion / insertion)",
        description="For every detection with p >= --min-probability: remove (deletion) or keep (insertion) the "
                    "top-k %% of its evidence ranked by attention, random and gradient x input (LiDAR: points of "
                    "BEV cells; camera: image cells painted neutral), re-run the detector and follow the matched "
                    "detection's score. Prints AUCs and ratios to random; --json / --report write them.")
    p.add_argument("--model", default="models/fusion_default", help="model directory")
    p.add_argument("--data", default="sim:test", help="sim:test | sim:val | KITTI folder | rosbag2 folder")
    p.add_argument("--limit", type=int, default=None, help="at most N frames")
    p.add_argument("--min-probability", type=float, default=0.3, help="test detections at least this probable")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.add_argument("--report", type=Path, default=None, help="write curves, XAI PNGs and index.html here")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file or --report folder")
    p.set_defaults(func=run)
    return p


def format_summary(s: dict) -> str:
    """Human-readable headline numbers."""
    lines = [f"{s['model']} on {s['data']}: {s['frames']} frames, {s['detections']} detections "
             f"(aggregation {s['aggregation']})"]
    for kind in ("deletion", "insertion"):
        for m, b in s[kind].items():
            lines.append(f"  {kind:9s} {m:6s} n={b['detections']:3d}  AUC attention {b['attention_auc']}  random "
                         f"{b['random_auc']}  gradient {b['gradient_auc']}  ratio to random {b['ratio_to_random']}")
    lines.append(f"  modality share (camera): {s['modality_share']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the test, print the summary, write JSON / report."""
    from perception.errors import ConfigError
    from perception.trust.faithfulness import run_faithfulness

    for target in (args.json, args.report):
        if target is not None and target.exists() and not args.force:
            raise ConfigError("exists; pass --force to overwrite", str(target))
    summary, curves, frames = run_faithfulness(args.model, args.data, args.limit, args.min_probability,
                                               keep_frames=3 if args.report else 0)
    if args.report:
        from perception.trust.faithfulness_report import write_report

        summary["report"] = str(write_report(args.report, summary, curves, frames, args.model))
    print(format_summary(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
