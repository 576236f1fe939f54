"""``perception bench``: latency, throughput, memory and AP of every backend, each in its own process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``perception bench``."""
    p = subparsers.add_parser("bench", help="benchmark the detector's backends (latency, fps, RSS, AP)",
                              description="Per backend (one fresh process each): pre-process / network / "
                                          "post-process latency p50/p99, frames/s, peak RSS and 3D AP over the "
                                          "first N frames; writes the fastest backend that passes parity to "
                                          "<model>/export/engines.json as default_backend.")
    p.add_argument("--model", type=Path, default=Path("models/fusion_default"), help="model directory")
    p.add_argument("--frames", type=int, default=100, help="frames to run per backend (first one is warm-up)")
    p.add_argument("--backends", default=None,
                   help="comma-separated backends (default: every backend available for this model here)")
    p.add_argument("--data", default="sim:test", help="sim:test | KITTI folder | rosbag2 folder")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per backend")
    p.add_argument("--rounds", type=int, default=1, help="run every backend this many times, interleaved; latency "
                   "figures are medians over the rounds (robust to a CPU whose speed drifts)")
    p.add_argument("--no-ap", action="store_true", help="skip 3D AP")
    p.add_argument("--no-write", action="store_true", help="do not write export/engines.json")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Benchmark and print the table (and optionally write the JSON)."""
    from perception.engines.benchmark import format_table, run_benchmarks
    from perception.engines.registry import available_backends

    backends = args.backends.split(",") if args.backends else available_backends(args.model)
    doc = run_benchmarks(args.model, backends, data=args.data, frames=args.frames, num_threads=args.threads,
                         rounds=args.rounds, with_ap=not args.no_ap, write=not args.no_write)
    print(format_table(doc))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
